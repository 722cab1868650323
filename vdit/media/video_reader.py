"""Reading videos and images (PyAV for containers, Pillow for stills and animated images).

Frames are uint8 RGB arrays shaped [H, W, 3] in display orientation: a container's rotation
(display matrix) and a still's EXIF orientation are applied. `iter_frames` streams
(time in seconds, frame) pairs, so a long file never has to fit in memory; `read_video` stacks
them for small files.
"""
import io
import json
import math
import os
import re
from typing import Iterator

import av
import numpy as np
from PIL import Image, ImageOps
from vdit.core.errors import UserError

CONTAINER_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
# Pillow formats; GIF and WebP may be animated (then they are videos).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
MEDIA_EXTENSIONS = CONTAINER_EXTENSIONS + IMAGE_EXTENSIONS
_DEFAULT_FRAME_MS = 100  # browsers' delay for a GIF frame that states none
# vdit's GIFs record their frame delay in a comment, so merged frames expand back exactly.
_GIF_COMMENT_RE = re.compile(rb"vdit frame_ms=(\d+)(?: (.*))?", re.DOTALL)


class VideoReadError(UserError):
  """A media file is missing, unreadable or holds no frames.

  `reason` is a short machine-readable cause (e.g. "unreadable", "no_video_stream",
  "unsupported_codec", "no_frames") for reports; the message names the file.
  """

  def __init__(self, message: str, reason: str = "unreadable"):
    super().__init__(message)
    self.reason = reason


def _rgb(image: Image.Image) -> np.ndarray:
  """Any Pillow mode -> uint8 [H, W, 3]; transparent pixels are composited onto white."""
  if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
  return np.asarray(image.convert("RGB"))


def _iter_pillow(path: str) -> Iterator[tuple[float, np.ndarray]]:
  """Stills (one frame at t=0) and animated GIF/WebP/PNG frames at their cumulative delays."""
  with Image.open(path) as image:
    num_frames = getattr(image, "n_frames", 1)
    if num_frames == 1:
      yield 0.0, _rgb(ImageOps.exif_transpose(image))
      return
    time_ms = 0
    for index in range(num_frames):
      image.seek(index)
      yield time_ms / 1000.0, _rgb(image)
      time_ms += int(image.info.get("duration") or _DEFAULT_FRAME_MS)


def _iter_container(path: str) -> Iterator[tuple[float, np.ndarray]]:
  """Decoded frames at their presentation times, rotated for display.

  A decode error after some frames ends the stream there (a truncated file keeps its good
  prefix); one before any frame raises.
  """
  with av.open(path) as container:
    if not container.streams.video:
      raise VideoReadError(f"{path}: no video stream", "no_video_stream")
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.codec_context.codec.is_decoder:
      codec = stream.codec_context.codec.name if stream.codec_context else "an unknown codec"
      raise VideoReadError(f"{path}: the video is {codec}, which this PyAV/FFmpeg build cannot "
                           "decode; re-encode it (e.g. to H.264)", "unsupported_codec")
    stream.thread_type = "AUTO"
    rate = float(stream.average_rate or stream.guessed_rate or 0) or None
    count = 0
    try:
      for frame in container.decode(stream):
        time = frame.time if frame.time is not None else (count / rate if rate else float(count))
        pixels = frame.to_ndarray(format="rgb24")
        turns = round(frame.rotation / 90) % 4 if frame.rotation else 0
        yield float(time), np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels
        count += 1
    except av.FFmpegError as e:
      if count == 0:
        raise VideoReadError(f"{path}: cannot decode ({e})", "unreadable") from e
    if count == 0:
      raise VideoReadError(f"{path}: the video stream holds no frames", "no_frames")


def iter_frames(path: str) -> Iterator[tuple[float, np.ndarray]]:
  """Streams (time_s, uint8 [H, W, 3]) from a video or image file in display orientation.

  Times are presentation timestamps (variable frame rate is kept as is); a still image yields
  one frame at 0.

  Raises:
    VideoReadError: missing, unreadable, no video stream, unsupported codec, or no frames.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise VideoReadError(f"{path}: no such file", "file_not_found")
  if os.path.getsize(path) == 0:
    raise VideoReadError(f"{path}: the file is empty", "empty_file")
  with open(path, "rb") as f:
    head = f.read(16)
  is_pillow = path.lower().endswith(IMAGE_EXTENSIONS) or head.startswith(b"GIF8")
  try:
    yield from (_iter_pillow(path) if is_pillow else _iter_container(path))
  except VideoReadError:
    raise
  except (av.FFmpegError, OSError, ValueError, EOFError, SyntaxError) as e:
    raise VideoReadError(f"{path}: cannot decode ({type(e).__name__}: {e})", "unreadable") from e


def _read_gif(path: str) -> np.ndarray:
  """Reads a GIF, repeating each frame by its delay over the base delay (undoes merging).

  The base delay is the one vdit's `write_gif` recorded, else the GCD of all delays.
  """
  with Image.open(path) as image:
    match = _GIF_COMMENT_RE.fullmatch(image.info.get("comment", b""))
    frames, durations = [], []
    for index in range(getattr(image, "n_frames", 1)):
      image.seek(index)
      frames.append(np.asarray(image.convert("RGB")))
      durations.append(int(image.info.get("duration") or 0))
  base = math.gcd(*durations) if all(durations) else 0
  if base and match and all(d % int(match.group(1)) == 0 for d in durations):
    base = int(match.group(1))
  repeats = [d // base for d in durations] if base else [1] * len(frames)
  return np.stack(frames).repeat(repeats, axis=0)


def read_video(path: str) -> np.ndarray:
  """Reads a whole video, GIF or image as uint8 [T, H, W, 3] RGB (small files only).

  GIFs written by `video_io.write_gif` come back with their original frame count.

  Raises:
    VideoReadError: the file is missing, corrupt or has no frames; the message names the file.
  """
  path = os.fspath(path)
  if os.path.isfile(path):
    with open(path, "rb") as f:
      if f.read(4) == b"GIF8":
        try:
          return _read_gif(path)
        except (OSError, ValueError, EOFError) as e:
          raise VideoReadError(f"{path}: cannot decode GIF ({e})") from e
  return np.stack([frame for _, frame in iter_frames(path)])


def read_tags(path: str) -> dict[str, str]:
  """Metadata tags of a media file: container tags (mp4/mov/mkv/webm), PNG text chunks, or the
  tags vdit's `write_gif` stores in the GIF comment."""
  path = os.fspath(path)
  with open(path, "rb") as f:
    head = f.read(8)
  try:
    if head.startswith(b"GIF8") or head.startswith(b"\x89PNG"):
      with Image.open(path) as image:
        if head.startswith(b"\x89PNG"):
          return {str(k): str(v) for k, v in image.text.items()}
        match = _GIF_COMMENT_RE.fullmatch(image.info.get("comment", b""))
        return json.loads(match.group(2)) if match and match.group(2) else {}
    with av.open(path) as container:
      return dict(container.metadata)
  except (av.FFmpegError, OSError, ValueError) as e:
    raise VideoReadError(f"{path}: cannot read its tags ({e})") from e


def resize_center_crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
  """Scales `frame` to cover height x width (aspect kept), then crops the centre.

  Only the source region that survives the crop is resampled (bicubic, antialiased when
  shrinking).
  """
  src_h, src_w = frame.shape[:2]
  scale = max(height / src_h, width / src_w)
  crop_h, crop_w = height / scale, width / scale
  top, left = (src_h - crop_h) / 2, (src_w - crop_w) / 2
  image = Image.fromarray(frame)
  resized = image.resize((width, height), Image.Resampling.BICUBIC,
                         box=(left, top, left + crop_w, top + crop_h), reducing_gap=3.0)
  return np.asarray(resized)


def decode_image_bytes(data: bytes) -> np.ndarray:
  """Encoded image bytes (JPEG, WebP, PNG) -> uint8 [H, W, 3]."""
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))
