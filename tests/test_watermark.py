"""The invisible watermark on toy videos: detection rate, false positives, and robustness to
re-encoding at default quality and to a 10% resize (the issue's targets: >= 99%, <= 1%, >= 95%)."""
import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image

from vdit.toy import world as toy_world
from vdit.toy import spec as toy_spec
from tests.helpers import REPO, cli_env
from vdit.media import video_io
from vdit.media import video_reader
from vdit.media import watermark

_CLIPS = 100


def _toy_clips(n, seed=0):
  rng = np.random.default_rng(seed)
  combos = toy_spec.all_combinations()
  for _ in range(n):
    colour, shape, direction = combos[rng.integers(len(combos))]
    start, speed, radius = toy_world.sample_motion(rng, direction, num_frames=8, height=32, width=32)
    clip = toy_world.render_clip(colour, shape, direction, start=start, speed=speed, radius=radius,
                                 num_frames=8, height=32, width=32)
    yield clip.repeat(4, axis=1).repeat(4, axis=2)  # as vdit.sample writes toy videos (scale 4)


def _reencode_default(frames, path):
  """H.264 at libx264's default quality (crf 23), not vdit's near-lossless setting."""
  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())
  return video_reader.read_video(path)


def _resize(frames, factor):
  size = (round(frames.shape[2] * factor), round(frames.shape[1] * factor))
  return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in frames])


@pytest.fixture(scope="module")
def rates(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("wm")
  hits = {"marked": 0, "clean": 0, "reencoded": 0, "resized": 0, "image": 0}
  for i, clip in enumerate(_toy_clips(_CLIPS)):
    marked = watermark.embed(clip)
    hits["marked"] += watermark.detect(marked)[0]
    hits["clean"] += watermark.detect(_reencode_default(clip, str(tmp / f"c{i}.mp4")))[0]
    reencoded = _reencode_default(marked, str(tmp / f"m{i}.mp4"))
    hits["reencoded"] += watermark.detect(reencoded)[0]
    hits["resized"] += watermark.detect(_resize(marked, 0.9))[0]
    hits["image"] += watermark.detect(marked[:1])[0]
  return {k: v / _CLIPS for k, v in hits.items()}


def test_detection_and_false_positive_rates(rates):
  assert rates["marked"] >= 0.99 and rates["image"] >= 0.99
  assert rates["clean"] <= 0.01


def test_survives_reencoding_and_resizing(rates):
  assert rates["reencoded"] >= 0.95 and rates["resized"] >= 0.95


def test_invisible():
  clip = next(_toy_clips(1))
  mse = np.mean((watermark.embed(clip).astype(np.float64) - clip) ** 2)
  assert 10 * np.log10(255 ** 2 / mse) > 38  # dB


def test_wrong_key_does_not_detect():
  clip = watermark.embed(next(_toy_clips(1)), key=1)
  assert watermark.detect(clip, key=1)[0] and not watermark.detect(clip, key=2)[0]


def test_detect_cli(tmp_path):
  clips = list(_toy_clips(2, seed=3))
  video_io.write_mp4(str(tmp_path / "marked.mp4"), watermark.embed(clips[0]), fps=8)
  video_io.write_mp4(str(tmp_path / "clean.mp4"), clips[1], fps=8)
  (tmp_path / "junk.mp4").write_bytes(b"junk")
  result = subprocess.run([sys.executable, "-m", "vdit.provenance", "detect", *(str(tmp_path / n) for n in
                           ("marked.mp4", "clean.mp4", "junk.mp4"))], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
  lines = result.stdout.splitlines()
  assert "\twatermarked\tscore=" in lines[0] and "\tclean\tscore=" in lines[1] and "\terror\t" in lines[2]
  assert result.returncode == 2  # one file could not be read: a user error, named in one line
  assert result.stderr.strip().splitlines()[-1].startswith("error: 1 of 3 files could not be read (")
