"""Writing videos and images (PyAV, Pillow); `video_reader` is the reading side.

Frames are uint8 arrays shaped [T, H, W, 3] (RGB). Every writer goes through a temporary file
in the destination directory and renames it into place, so a crash never leaves a half-written
file under the final name. A `seal` (e.g. vdit.media.c2pa_manifest.sealer: a signed manifest)
rewrites the finished temporary file before the rename.
"""
import contextlib
import fractions
import io
import json
import os
import uuid
from typing import Callable, Iterator, Optional, Sequence

import av
import numpy as np
from PIL import Image, PngImagePlugin

# H.264 needs even sizes in yuv420p; crf 18 is visually near-lossless for flat toy frames.
_MP4_CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
_MP4_OPTIONS = {"crf": "18", "preset": "medium"} if _MP4_CODEC == "libx264" else {"qscale": "2"}
_SHEET_PAD_VALUE = 128  # mid grey separates cells from both dark backgrounds and white shapes


def mp4_codec() -> str:
  """The encoder `write_mp4` uses: libx264, or mpeg4 where this PyAV build lacks libx264."""
  return _MP4_CODEC


def _check_frames(frames) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(
        f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}; "
        "convert with np.clip(x, 0, 255).astype(np.uint8)")
  if frames.shape[0] == 0:
    raise ValueError("frames is empty: a video needs at least one frame")
  return frames


def _upscale(frames: np.ndarray, scale: int) -> np.ndarray:
  if not isinstance(scale, (int, np.integer)) or scale < 1:
    raise ValueError(f"scale must be a positive integer, got {scale!r}")
  if scale == 1:
    return frames
  return frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


@contextlib.contextmanager
def _atomic_path(path: str, seal: Callable[[str], None] | None = None) -> Iterator[str]:
  """Yields a temporary path next to `path`, sealed and renamed onto `path` only if the body succeeds."""
  path = os.fspath(path)
  directory, name = os.path.split(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
  try:
    yield tmp
    if seal:
      seal(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_mp4(path: str, frames, fps: float, scale: int = 1, metadata: dict | None = None, seal=None) -> None:
  """Writes frames [T, H, W, 3] uint8 as an H.264 (yuv420p) mp4.

  Args:
    path: destination file.
    frames: uint8 [T, H, W, 3] RGB.
    fps: frames per second.
    scale: integer nearest-neighbour upscale, so tiny toy clips are viewable.
    metadata: container tags (str -> str), e.g. provenance; `read_tags` reads them back.
    seal: called with the finished temporary file before it is renamed into place (a signature).
  Odd sizes (after scaling) are padded to even by repeating the last row/column; the file then
  reads back at the padded size.
  """
  write_video(path, _upscale(_check_frames(frames), scale), fps, metadata=metadata, seal=seal)


def write_video(path: str, frames, fps: float, *, codec: str = _MP4_CODEC, container: str | None = None,
                rotation: int = 0, times=None, metadata: dict | None = None, seal=None) -> None:
  """Writes frames with any PyAV encoder and container (e.g. libvpx-vp9 in webm, mpeg4 in mkv).

  Args:
    rotation: display rotation in degrees (counter-clockwise) stored in the container; readers
      that honour it show the frames rotated.
    times: optional per-frame timestamps in seconds (variable frame rate); default i / fps.
    metadata: container tags (str -> str); mp4 keeps arbitrary keys (use_metadata_tags).
  Odd sizes are padded to even (yuv420p needs even sizes).
  """
  frames = _check_frames(frames)
  _, height, width, _ = frames.shape
  frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
  rate = fractions.Fraction(fps).limit_denominator(1001)
  if rate <= 0:
    raise ValueError(f"fps must be positive, got {fps!r}")
  options = _MP4_OPTIONS if codec == _MP4_CODEC else {}
  fmt = container or _container_format(path)
  with _atomic_path(path, seal) as tmp:
    with av.open(tmp, mode="w", format=fmt,
                 options={"movflags": "use_metadata_tags"} if fmt in ("mp4", "mov") else {}) as out:
      out.metadata.update({str(k): str(v) for k, v in (metadata or {}).items()})
      stream = out.add_stream(codec, rate=rate, options=options)
      stream.width, stream.height = frames.shape[2], frames.shape[1]
      stream.pix_fmt = "yuv420p"
      if times is not None:
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
      if rotation:
        stream.set_display_rotation(rotation)
      for i, frame in enumerate(frames):
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        if times is not None:
          video_frame.pts, video_frame.time_base = round(times[i] * 1000), fractions.Fraction(1, 1000)
        out.mux(stream.encode(video_frame))
      out.mux(stream.encode())  # flush the encoder's delayed frames


def _container_format(path: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  return {".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".avi": "avi"}.get(ext, "mp4")


def write_gif(path: str, frames, fps: float, scale: int = 1, metadata: dict | None = None, seal=None) -> None:
  """Writes frames [T, H, W, 3] uint8 as a GIF that loops forever.

  GIF stores delays in centiseconds, so the frame delay is rounded to 10 ms. Pillow merges
  identical consecutive frames into one longer frame; the delay is also written as a comment so
  `video_reader.read_video` can expand them back to the original frame count.
  """
  frames = _upscale(_check_frames(frames), scale)
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps!r}")
  duration_ms = 10 * max(1, round(100 / fps))
  images = [Image.fromarray(frame) for frame in frames]
  # GIF has one comment: the frame delay (see video_reader) then the tags as JSON.
  comment = f"vdit frame_ms={duration_ms}" + (f" {json.dumps(metadata)}" if metadata else "")
  with _atomic_path(path, seal) as tmp:
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                   duration=duration_ms, loop=0, comment=comment.encode())


def write_png(path: str, image, metadata: dict | None = None, seal=None) -> None:
  """Writes one uint8 image shaped [H, W], [H, W, 3] or [H, W, 4] as PNG (metadata: tEXt chunks)."""
  image = np.asarray(image)
  channels_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))
  if image.dtype != np.uint8 or not channels_ok:
    raise ValueError(
        f"image must be uint8 [H, W], [H, W, 3] or [H, W, 4], got {image.dtype} {image.shape}")
  info = PngImagePlugin.PngInfo()
  for key, value in (metadata or {}).items():
    info.add_text(str(key), str(value))
  with _atomic_path(path, seal) as tmp:
    Image.fromarray(image).save(tmp, format="PNG", pnginfo=info)


def contact_sheet(videos: Sequence, max_frames: Optional[int] = None, pad: int = 2) -> np.ndarray:
  """Tiles videos into one image: one row per video, one column per frame.

  Args:
    videos: sequence of uint8 [T, H, W, 3] arrays sharing H and W (T may differ).
    max_frames: at most this many columns; longer videos show evenly spaced frames.
    pad: grey border in pixels between and around cells.
  Returns:
    uint8 [rows*H + (rows+1)*pad, cols*W + (cols+1)*pad, 3].
  """
  videos = [_check_frames(v) for v in videos]
  if not videos:
    raise ValueError("contact_sheet needs at least one video")
  height, width = videos[0].shape[1:3]
  if any(v.shape[1:3] != (height, width) for v in videos):
    raise ValueError(f"all videos must share one frame size, got {[v.shape[1:3] for v in videos]}")
  if max_frames is not None and max_frames < 1:
    raise ValueError(f"max_frames must be positive or None, got {max_frames}")
  cols = max(v.shape[0] for v in videos)
  if max_frames is not None:
    cols = min(cols, max_frames)
  sheet = np.full((len(videos) * (height + pad) + pad, cols * (width + pad) + pad, 3),
                  _SHEET_PAD_VALUE, np.uint8)
  for row, video in enumerate(videos):
    picks = np.linspace(0, video.shape[0] - 1, min(cols, video.shape[0])).round().astype(int)
    for col, t in enumerate(picks):
      top, left = pad + row * (height + pad), pad + col * (width + pad)
      sheet[top:top + height, left:left + width] = video[t]
  return sheet


def encode_image_bytes(image, codec: str, quality: int) -> bytes:
  """uint8 [H, W, 3] -> compressed bytes; codec is "jpeg", "webp" or "png" (lossless)."""
  buffer = io.BytesIO()
  options = {"png": {}, "jpeg": {"quality": quality}, "webp": {"quality": quality, "method": 4}}
  if codec not in options:
    raise ValueError(f"Unknown image codec {codec!r}; choose one of {sorted(options)}.")
  Image.fromarray(np.asarray(image)).save(buffer, format=codec.upper(), **options[codec])
  return buffer.getvalue()
