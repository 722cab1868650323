"""Writes a small folder of real media files to try data_prep.ingest on (and to test it with).

Toy-world scenes (a coloured shape moving in a named direction on a plain background) encoded
the ways real corpora come: H.264 mp4, VP8/VP9 webm, mkv, mov, animated GIF, JPEG/PNG/WebP
stills, at several sizes and aspect ratios, one with a scene cut, one phone-style rotated clip,
one at a variable frame rate. Captions are sidecar .txt files (the cut video's caption names
both scenes).

  python -m data_prep.sample_media --output=/tmp/my_videos
  python -m data_prep.ingest --input=/tmp/my_videos --output=/tmp/my_data
"""
import os

from absl import flags
import numpy as np

from vdit.core import command
from vdit.toy import world as toy_world
from vdit.toy import spec as toy_spec
from vdit.media import video_io


def scene(rng, *, num_frames, height, width, colour=None, shape=None, direction=None):
  """(uint8 [T, H, W, 3], caption): one toy scene on a random plain background."""
  colour = colour or rng.choice(list(toy_spec.COLOURS))
  shape = shape or rng.choice(toy_spec.SHAPES)
  direction = direction or rng.choice(list(toy_spec.DIRECTIONS))
  start, speed, radius = toy_world.sample_motion(rng, direction, num_frames=num_frames,
                                                  height=height, width=width)
  frames = toy_world.render_clip(colour, shape, direction, start=start, speed=speed,
                                 radius=radius, num_frames=num_frames, height=height, width=width)
  background = (frames == np.asarray(toy_spec.BACKGROUND, np.uint8)).all(-1)
  frames[background] = rng.integers(0, 256, 3, dtype=np.uint8)
  return frames, toy_spec.caption(colour, shape, direction)


def _caption(path, text):
  with open(os.path.splitext(path)[0] + ".txt", "w", encoding="utf-8") as f:
    f.write(text + "\n")


def write_folder(output: str, seed: int = 0) -> list[str]:
  """Writes the sample media into `output`; returns the media paths."""
  rng = np.random.default_rng(seed)
  os.makedirs(output, exist_ok=True)
  paths = []

  def video(name, fps, frames_hw, **kwargs):
    path = os.path.join(output, name)
    frames, text = scene(rng, num_frames=frames_hw[0], height=frames_hw[1], width=frames_hw[2])
    video_io.write_video(path, frames, fps, **kwargs)
    _caption(path, text)
    paths.append(path)

  video("street_h264.mp4", 16, (40, 72, 128))
  video("square_vp9.webm", 12, (30, 96, 96), codec="libvpx-vp9")
  video("wide_vp8.webm", 8, (24, 60, 100), codec="libvpx")
  video("clip_mpeg4.mkv", 10, (30, 80, 80), codec="mpeg4")
  video("phone_rotated.mov", 10, (30, 72, 128), codec="libx264", rotation=90)
  times = np.cumsum(rng.uniform(0.04, 0.16, 36)) - 0.04
  video("variable_rate.mp4", 12, (36, 64, 112), times=times)

  first, a = scene(rng, num_frames=24, height=72, width=128)
  second, b = scene(rng, num_frames=24, height=72, width=128)
  path = os.path.join(output, "scene_cut.mp4")
  video_io.write_video(path, np.concatenate([first, second]), 12)
  _caption(path, f"{a}, then {b}")
  paths.append(path)

  frames, text = scene(rng, num_frames=20, height=64, width=64)
  path = os.path.join(output, "animated.gif")
  video_io.write_gif(path, frames, fps=10)
  _caption(path, text)
  paths.append(path)

  for name, codec in (("still.jpg", "jpeg"), ("still.png", "png"), ("still.webp", "webp")):
    frames, text = scene(rng, num_frames=1, height=90, width=120)
    path = os.path.join(output, name)
    with open(path, "wb") as f:
      f.write(video_io.encode_image_bytes(frames[0], codec, quality=92))
    _caption(path, text)
    paths.append(path)
  return paths


def define_flags():
  flags.DEFINE_string("output", None, "Folder to write.", required=True)
  flags.DEFINE_integer("seed", 0, "Random seed.")


def main(f):
  paths = write_folder(f.output, f.seed)
  print(f"Wrote {len(paths)} media files with sidecar captions to {f.output}.")


if __name__ == "__main__":
  command.run(main, define_flags)
