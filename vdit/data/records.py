"""The one clip record format: a msgpack map (never pickle, so reading data runs no code).

Layout (format_version 1):
  format_version: int
  codec: "raw"  -- frames: the raw uint8 bytes of a C-ordered [T, H, W, 3] array;
         "jpeg" | "webp" | "png" -- frames: a list of T encoded images.
  frames_shape: [T, H, W, 3]
  frames: bytes or [bytes]
  caption: str
  meta: {str: msgpack value} -- e.g. colour, shape, direction for the toy world.

`decode_clip` flattens meta into the returned dict next to `frames` and `caption`.
"""
from typing import Any

import msgpack
import numpy as np

from vdit.data.errors import DataError

FORMAT_VERSION = 1
CODECS = ("raw", "jpeg", "webp", "png")
# Keys of the decoded dict that meta may not shadow.
_RESERVED = frozenset({"frames", "caption"})


def _to_builtin(value):
  """msgpack hook: numpy scalars and arrays in meta become plain Python values."""
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"Clip meta value {value!r} of type {type(value).__name__} is not msgpack-able.")


def encode_clip(frames: np.ndarray, caption: str, *, codec: str = "raw", quality: int = 90,
                **meta: Any) -> bytes:
  """Serializes one clip.

  Args:
    frames: uint8 [T, H, W, 3].
    caption: the clip's text.
    codec: "raw", or per-frame "jpeg"/"webp" (lossy, at `quality`) or "png" (lossless).
    quality: 1-100 for jpeg/webp.
    **meta: extra msgpack-able fields returned by `decode_clip` (e.g. colour="red").

  Returns:
    The record bytes.
  """
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}.")
  if not isinstance(caption, str):
    raise TypeError(f"caption must be a str, got {type(caption).__name__}.")
  clash = _RESERVED.intersection(meta)
  if clash:
    raise ValueError(f"Clip meta keys {sorted(clash)} clash with the decoded clip; rename them.")
  if codec not in CODECS:
    raise ValueError(f"Unknown clip codec {codec!r}; choose one of {CODECS}.")
  if codec == "raw":
    payload = np.ascontiguousarray(frames).tobytes()
  else:
    from vdit.media import video_io  # Pillow, only when compressing
    payload = [video_io.encode_image_bytes(frame, codec, quality) for frame in frames]
  record = {
      "format_version": FORMAT_VERSION,
      "codec": codec,
      "frames_shape": list(frames.shape),
      "frames": payload,
      "caption": caption,
      "meta": meta,
  }
  return msgpack.packb(record, use_bin_type=True, default=_to_builtin)


def decode_clip(data: bytes) -> dict[str, Any]:
  """Parses one record into {"frames": uint8 [T, H, W, 3], "caption": str, **meta}.

  Raises:
    DataError: the bytes are not a clip record this version can read.
  """
  try:
    record = msgpack.unpackb(data, raw=False)
  except Exception as e:  # msgpack raises several unrelated types for bad bytes.
    raise DataError(
        f"Corrupt clip record ({len(data)} bytes): msgpack could not parse it: {e}") from e
  if not isinstance(record, dict) or "format_version" not in record:
    raise DataError("Not a vdit clip record: expected a msgpack map with a format_version field.")
  version = record["format_version"]
  if version != FORMAT_VERSION:
    raise DataError(
        f"Clip record format_version {version!r} is not supported (this code reads "
        f"{FORMAT_VERSION}); regenerate the dataset or update vdit.")
  codec = record.get("codec")
  if codec not in CODECS:
    raise DataError(f"Clip record codec {codec!r} is unknown; supported codecs: {CODECS}.")
  try:
    shape = tuple(int(d) for d in record["frames_shape"])
    payload = record["frames"]
    caption = record["caption"]
    meta = record.get("meta", {})
  except (KeyError, TypeError, ValueError) as e:
    raise DataError(f"Clip record is missing or has a malformed field: {e!r}") from e
  if len(shape) != 4 or shape[-1] != 3 or min(shape) < 1:
    raise DataError(f"Clip record shape {shape} is not [T, H, W, 3].")
  if not isinstance(caption, str) or not isinstance(meta, dict):
    raise DataError("Clip record caption must be a str and meta a map.")
  frames = _decode_raw(payload, shape) if codec == "raw" else _decode_images(payload, shape)
  return {**meta, "frames": frames, "caption": caption}


def _decode_raw(payload, shape) -> np.ndarray:
  if not isinstance(payload, bytes) or len(payload) != int(np.prod(shape)):
    raise DataError(
        f"Clip record frames hold {len(payload) if isinstance(payload, bytes) else type(payload)} "
        f"bytes but shape {shape} needs {int(np.prod(shape))}; the record is truncated or corrupt.")
  # Copy so callers get a writable array rather than a read-only view of the record.
  return np.frombuffer(payload, np.uint8).reshape(shape).copy()


def _decode_images(payload, shape) -> np.ndarray:
  from vdit.media import video_reader  # Pillow, only for compressed records
  if not isinstance(payload, list) or len(payload) != shape[0]:
    raise DataError(f"Clip record should hold {shape[0]} encoded frames; the record is corrupt.")
  try:
    frames = np.stack([video_reader.decode_image_bytes(f) for f in payload])
  except (OSError, ValueError, TypeError) as e:
    raise DataError(f"Clip record holds an undecodable frame ({e}); the record is corrupt.") from e
  if frames.shape != shape:
    raise DataError(f"Clip record frames decode to {frames.shape}, not {shape}; it is corrupt.")
  return frames
