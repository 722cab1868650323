"""data_prep.ingest on real media made at test time (PyAV, Pillow): good files of several codecs
and containers, and every kind of bad input the report must account for."""
import json
import os

from array_record.python import array_record_module
import av
import numpy as np
import pytest

from configs import videos
from data_prep import clip_extract, ingest, sample_media
from tests.helpers import cli
from vdit.media import video_io
from vdit.data import dataset_files, records
from vdit.data.errors import DataError

# Input file -> (status, reason) the report must give.
_EXPECTED = {
    "street_h264.mp4": ("ok", ""), "square_vp9.webm": ("ok", ""), "wide_vp8.webm": ("ok", ""),
    "clip_mpeg4.mkv": ("ok", ""), "phone_rotated.mov": ("ok", ""), "variable_rate.mp4": ("ok", ""),
    "scene_cut.mp4": ("ok", ""), "animated.gif": ("ok", ""), "still.jpg": ("ok", ""),
    "still.png": ("ok", ""), "still.webp": ("ok", ""),
    "odd_33x47.png": ("ok", ""), "one_frame.mp4": ("ok", ""), "café_视频.mp4": ("ok", ""),
    "empty.mp4": ("dropped", "empty_file"), "random_bytes.webm": ("dropped", "unreadable"),
    "text_file.mp4": ("dropped", "unreadable"), "truncated.mp4": ("dropped", "unreadable"),
    "audio_only.mp4": ("dropped", "no_video_stream"), "tiny_1x1.png": ("dropped", "too_small"),
    "strip_32x640.mp4": ("dropped", "extreme_aspect_ratio"), "short.mp4": ("dropped", "too_short"),
    "static.mp4": ("dropped", "static"), "uncaptioned.mp4": ("dropped", "missing_caption"),
    "notes.doc": ("dropped", "unsupported_extension"),
    "unknown_codec.mkv": ("dropped", "unsupported_codec"),
    "lonely.txt": ("dropped", "orphan_caption"),
}


def _ingest_config(**overrides):
  config = videos.get_config()
  with config.unlocked():
    config.ingest.files_per_shard = 6  # several jobs, so the worker pool and markers are exercised
    for key, value in overrides.items():
      config.ingest[key] = value
  return config.ingest


def _caption(path, text):
  with open(os.path.splitext(path)[0] + ".txt", "w", encoding="utf-8") as f:
    f.write(text)


def _moving(num_frames, height, width, seed=0):
  frames, _ = sample_media.scene(np.random.default_rng(seed), num_frames=num_frames,
                                 height=height, width=width)
  return frames


def make_media_folder(folder):
  sample_media.write_folder(str(folder), seed=1)
  join = lambda name: os.path.join(folder, name)
  write_still = lambda name, image: open(join(name), "wb").write(
      video_io.encode_image_bytes(image, "png", 100))
  write_still("odd_33x47.png", _moving(1, 33, 47)[0])
  write_still("tiny_1x1.png", np.zeros((1, 1, 3), np.uint8))
  video_io.write_video(join("one_frame.mp4"), _moving(1, 64, 64), 8)
  video_io.write_video(join("café_视频.mp4"), _moving(24, 64, 64, seed=3), 8)
  video_io.write_video(join("strip_32x640.mp4"), _moving(24, 32, 640), 8)
  video_io.write_video(join("short.mp4"), _moving(3, 64, 64), 8)
  video_io.write_video(join("static.mp4"), np.repeat(_moving(1, 64, 64), 24, axis=0), 8)
  video_io.write_video(join("uncaptioned.mp4"), _moving(24, 64, 64), 8)
  video_io.write_video(join("truncated.mp4"), _moving(24, 64, 64), 8)
  with open(join("truncated.mp4"), "r+b") as f:
    f.truncate(os.path.getsize(join("truncated.mp4")) // 2)  # loses the moov atom at the end
  video_io.write_video(join("unknown_codec.mkv"), _moving(24, 64, 64), 8, codec="mpeg4")
  with open(join("unknown_codec.mkv"), "rb") as f:  # a Matroska codec ID no decoder knows
    data = f.read().replace(b"V_MPEG4/ISO/ASP", b"V_VDIT/NOCODEC!")
  open(join("unknown_codec.mkv"), "wb").write(data)
  open(join("empty.mp4"), "wb").close()
  open(join("random_bytes.webm"), "wb").write(np.random.default_rng(0).bytes(4096))
  open(join("text_file.mp4"), "w").write("this is not a video\n" * 20)
  open(join("notes.doc"), "w").write("notes")
  open(join("lonely.txt"), "w").write("a caption for a file that does not exist")
  with av.open(join("audio_only.mp4"), "w") as container:
    stream = container.add_stream("aac", rate=44100)
    for i in range(4):
      frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
      frame.sample_rate, frame.pts = 44100, i * 1024
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
  for name in _EXPECTED:
    if name not in ("uncaptioned.mp4", "notes.doc", "lonely.txt") and not os.path.exists(
        os.path.splitext(join(name))[0] + ".txt"):
      _caption(join(name), "un café à Paris, a red circle moving left" if "café" in name
               else "a blue square moving up")
  return str(folder)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
  return make_media_folder(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def ingested(media, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("data"))
  report = ingest.ingest(media, out, _ingest_config(), workers=2)
  return out, report


def _clips(out):
  """{bucket name: [decoded clips]} read back through metadata.json."""
  result = {}
  for bucket in dataset_files.read_metadata(out)["buckets"]:
    result[bucket["name"]] = []
    for shard in bucket["shard_paths"]:
      reader = array_record_module.ArrayRecordReader(shard)
      result[bucket["name"]] += [records.decode_clip(r) for r in reader.read_all()]
      reader.close()
  return result


def test_report_accounts_for_every_input(ingested):
  out, report = ingested
  on_disk = json.loads(open(os.path.join(out, "report.json"), encoding="utf-8").read())
  assert on_disk == report
  got = {f["path"]: (f["status"], f["reason"]) for f in report["files"]}
  assert got == _EXPECTED
  assert report["inputs"] == len(_EXPECTED) == report["ok"] + report["dropped"]
  assert report["clips_written"] == sum(f["clips"] for f in report["files"])
  assert sum(report["clips_by_bucket"].values()) == report["clips_written"]
  reasons = [r for s, r in _EXPECTED.values() if s == "dropped"]
  assert report["dropped_by_reason"] == {r: reasons.count(r) for r in set(reasons)}
  assert all(f["detail"] for f in report["files"] if f["status"] == "dropped")


def test_every_clip_matches_its_bucket_and_caption(ingested, media):
  out, report = ingested
  clips = _clips(out)
  assert {name: len(c) for name, c in clips.items()} == report["clips_by_bucket"]
  for name, bucket_clips in clips.items():
    shape = tuple(int(x) for x in name.split("x"))
    for clip in bucket_clips:
      assert clip["frames"].shape == shape + (3,) and clip["bucket"] == name
      sidecar = os.path.splitext(os.path.join(media, clip["source"]))[0] + ".txt"
      assert clip["caption"] == open(sidecar, encoding="utf-8").read().strip()
      assert clip["kind"] == ("image" if shape[0] == 1 else "video")
  sources = {c["source"]: c for cs in clips.values() for c in cs}
  assert sources["café_视频.mp4"]["caption"].startswith("un café à Paris")
  assert sources["one_frame.mp4"]["kind"] == "image" and sources["animated.gif"]["kind"] == "video"
  assert sources["odd_33x47.png"]["source_height"] == 33


def test_rotation_metadata_is_applied(ingested):
  clips = [c for cs in _clips(ingested[0]).values() for c in cs if c["source"] == "phone_rotated.mov"]
  # Stored 72x128 landscape with a 90 degree display rotation: a portrait video.
  assert clips and all(c["frames"].shape[1] > c["frames"].shape[2] for c in clips)
  assert (clips[0]["source_height"], clips[0]["source_width"]) == (128, 72)


def test_scene_cut_splits_clips(ingested):
  clips = [c for cs in _clips(ingested[0]).values() for c in cs if c["source"] == "scene_cut.mp4"]
  # Two 2-second scenes on different backgrounds at 8 fps: one 16-frame clip each, none spanning
  # the cut, so each clip keeps one background colour (corner pixel, JPEG tolerance).
  assert sorted(c["start_time"] for c in clips) == [0.0, 2.0]
  for clip in clips:
    corners = clip["frames"][:, 0, 0].astype(int)
    assert np.abs(corners - corners[0]).max() < 24
  assert np.abs(clips[0]["frames"][0, 0, 0].astype(int) - clips[1]["frames"][0, 0, 0]).max() > 24


def test_variable_frame_rate_is_resampled_evenly():
  times = [0.0, 0.05, 0.3, 0.35, 0.4, 0.9, 1.0]
  source = [(t, np.full((2, 2, 3), i, np.uint8)) for i, t in enumerate(times)]
  out = [(round(t, 3), index) for t, index, _ in clip_extract.resample(source, fps=10)]
  # At t = 0.0, 0.1, ... the frame shown is the last one with timestamp <= t; the last frame is
  # held for the median interval (0.05 s).
  assert out == [(0.0, 0), (0.1, 1), (0.2, 1), (0.3, 2), (0.4, 4), (0.5, 4), (0.6, 4), (0.7, 4),
                 (0.8, 4), (0.9, 5), (1.0, 6)]


def test_rerun_skips_finished_jobs_and_gives_the_same_result(ingested, media):
  out, report = ingested
  shards = dataset_files.read_metadata(out)["buckets"]
  mtimes = {p: os.path.getmtime(p) for b in shards for p in b["shard_paths"]}
  assert ingest.ingest(media, out, _ingest_config(), workers=2) == report
  assert {p: os.path.getmtime(p) for p in mtimes} == mtimes


def test_interrupted_run_leaves_no_dataset_and_a_rerun_finishes(media, tmp_path, monkeypatch):
  out = str(tmp_path / "data")
  real_extract, calls = clip_extract.extract, []

  def dying_extract(path, *args, **kwargs):
    calls.append(path)
    if len(calls) == 14:  # in the third job
      raise KeyboardInterrupt
    return real_extract(path, *args, **kwargs)

  monkeypatch.setattr(clip_extract, "extract", dying_extract)
  with pytest.raises(KeyboardInterrupt):
    ingest.ingest(media, out, _ingest_config(), workers=1)
  with pytest.raises(DataError, match="metadata.json is missing"):
    dataset_files.read_metadata(out)
  assert len(os.listdir(os.path.join(out, "jobs"))) == 2
  monkeypatch.setattr(clip_extract, "extract", real_extract)
  finished = {p: os.path.getmtime(os.path.join(out, p)) for b in os.listdir(out)
              if os.path.isdir(os.path.join(out, b)) and b != "jobs"
              for p in [f"{b}/{n}" for n in os.listdir(os.path.join(out, b))]}
  report = ingest.ingest(media, out, _ingest_config(), workers=1)
  assert report["inputs"] == len(_EXPECTED)
  assert all(os.path.getmtime(os.path.join(out, p)) == t for p, t in finished.items())
  assert sum(b["num_clips"] for b in dataset_files.read_metadata(out)["buckets"]) == report["clips_written"]


def test_manifest_jsonl_and_csv(media, tmp_path):
  rows = [{"file": os.path.join(media, "street_h264.mp4"), "caption": "a street"},
          {"file": "missing.mp4", "caption": "ghost"},
          {"file": os.path.join(media, "square_vp9.webm")},
          {"caption": "no file field"}]
  manifest = tmp_path / "list.jsonl"
  manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n", encoding="utf-8")
  report = ingest.ingest(str(manifest), str(tmp_path / "a"), _ingest_config(), workers=1)
  assert [(f["path"], f["status"], f["reason"]) for f in report["files"]] == [
      (rows[0]["file"], "ok", ""), ("missing.mp4", "dropped", "file_not_found"),
      (rows[2]["file"], "dropped", "missing_caption"),
      ("list.jsonl:line 4", "dropped", "bad_manifest_row"),
      ("list.jsonl:line 5", "dropped", "bad_manifest_row")]
  csv_path = tmp_path / "list.csv"
  csv_path.write_text(f'file,caption\n"{rows[0]["file"]}","a street, at night"\nmissing.mp4,x\n',
                      encoding="utf-8")
  report = ingest.ingest(str(csv_path), str(tmp_path / "b"), _ingest_config(), workers=1)
  assert [f["reason"] for f in report["files"]] == ["", "file_not_found"]
  clip = next(c for cs in _clips(str(tmp_path / "b")).values() for c in cs)
  assert clip["caption"] == "a street, at night"


def test_allow_missing_captions_keeps_uncaptioned_files(media, tmp_path):
  report = ingest.ingest(media, str(tmp_path), _ingest_config(allow_missing_captions=True),
                         workers=1)
  entry = next(f for f in report["files"] if f["path"] == "uncaptioned.mp4")
  assert entry["status"] == "ok"


def test_cli_reports_and_fails_clearly(tmp_path):
  folder = tmp_path / "in"
  folder.mkdir()
  video_io.write_video(str(folder / "a.mp4"), _moving(24, 48, 80), 8)
  _caption(str(folder / "a.mp4"), "a red circle moving left")
  result = cli("data_prep.ingest", f"--input={folder}", f"--output={tmp_path / 'out'}",
               "--config.ingest.codec=png")
  assert result.returncode == 0, result.stderr
  assert "1 inputs: 1 ok" in result.stdout
  assert dataset_files.read_metadata(str(tmp_path / "out"))["codec"] == "png"
  bad = cli("data_prep.ingest", f"--input={tmp_path / 'nope'}", f"--output={tmp_path / 'o2'}")
  assert bad.returncode == 2 and "does not exist" in bad.stderr
  sizes = cli("data_prep.ingest", f"--input={folder}", f"--output={tmp_path / 'o3'}",
              "--config.ingest.sizes=('64by64',)")
  assert sizes.returncode == 2 and "'64by64' is not 'HEIGHTxWIDTH'" in sizes.stderr
  toy = tmp_path / "toy"
  toy.mkdir()
  (toy / "metadata.json").write_text('{"generator": "data_prep.toy_world"}')
  other = cli("data_prep.ingest", f"--input={folder}", f"--output={toy}")
  assert other.returncode == 2 and "choose a new or empty folder" in other.stderr
  assert (toy / "metadata.json").exists()
  (folder / "a.mp4").write_bytes(b"junk")
  none = cli("data_prep.ingest", f"--input={folder}", f"--output={tmp_path / 'o4'}")
  assert none.returncode == 1 and "no clips were written" in none.stderr


@pytest.mark.slow
def test_trains_on_every_bucket_of_an_ingested_folder(tmp_path):
  """Ingest -> vdit.main: one compile per bucket, batch sizes from the token budget."""
  folder = str(tmp_path / "in")
  sample_media.write_folder(folder, seed=2)
  data = str(tmp_path / "data")
  report = ingest.ingest(folder, data, _ingest_config(sizes=("48x80",), frame_counts=(8,)), workers=1)
  assert set(report["clips_by_bucket"]) == {"8x48x80", "1x48x80"}
  workdir = tmp_path / "run"
  # tests/tiny.py: patch (2, 8, 8), 8 devices. 8x48x80 = 240 tokens -> batch 8 (the device
  # count, at least); 1x48x80 repeats its frame to 2 -> 60 tokens -> batch 16.
  result = cli("vdit.main", f"--config=tests/tiny.py:{data}", f"--workdir={workdir}",
               "--config.data.num_frames=0", "--config.data.tokens_per_batch=960",
               "--config.data.image_ratio=0.5", "--config.train.num_steps=6", "--config.sample.num_frames=0",
               "--alsologtostderr")
  assert result.returncode == 0, result.stderr[-3000:]
  compiled = [line for line in result.stderr.splitlines() if "compiled and ran the train step" in line]
  assert len(compiled) == 2, compiled
  assert any("(8, 8, 48, 80, 3)" in line for line in compiled)
  assert any("(16, 2, 48, 80, 3)" in line for line in compiled)
  saved = json.loads((workdir / "config.json").read_text())
  assert (saved["sample"]["num_frames"], saved["sample"]["height"], saved["sample"]["width"]) == (8, 48, 80)
  losses = [line for line in (workdir / "metrics.jsonl").read_text().splitlines() if "loss" in line]
  assert len(losses) == 6


def test_a_job_that_kills_its_worker_is_reported_and_the_rest_finish(tmp_path):
  from tests.crashing_job import crash_on_job_1
  pending = [(j, [{"path": f"f{j}.mp4"}], "fp") for j in range(4)]
  markers = ingest.run_pending(pending, {}, str(tmp_path), 2, lambda n: None, crash_on_job_1)
  assert sorted(markers) == [0, 1, 2, 3]
  assert markers[1]["files"][0]["reason"] == "worker_crashed"
  assert all(markers[j]["files"][0]["status"] == "ok" for j in (0, 2, 3))


def test_output_inside_the_input_folder_is_not_ingested(tmp_path):
  folder = tmp_path / "in"
  folder.mkdir()
  video_io.write_video(str(folder / "a.mp4"), _moving(24, 48, 80), 8)
  _caption(str(folder / "a.mp4"), "a red circle moving left")
  for _ in range(2):  # the second run finds the first run's shards inside the input folder
    report = ingest.ingest(str(folder), str(folder / "data"), _ingest_config(), workers=1)
    assert report["inputs"] == 1 and report["ok"] == 1
  stray = folder / "data" / "16x48x80" / ".part-00007.array_record.0a1b.tmp"
  stray.write_bytes(b"half")  # what a killed job leaves
  ingest.ingest(str(folder), str(folder / "data"), _ingest_config(), workers=1)
  assert not stray.exists()
