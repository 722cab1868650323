"""The cached-latent record: one clip's VAE posterior (and optionally its caption's text embedding).

A msgpack map (never pickle), written by data_prep.cache_latents into a dataset with the same
layout as pixel clips (vdit.data.dataset_files: buckets sized in latent frames x height x width):
  format: "vdit-latents", format_version: 1
  shape: [t, h, w, z]; mean, std: raw float32 bytes of C-ordered [t, h, w, z] (VAE units, not
         normalised: the normalisation lives in the cache metadata with the VAE it belongs to)
  caption: str; meta: {str: msgpack value}
  text_embedding (optional): raw float32 bytes of [n, D], the caption's n real tokens (padding
         rows are zero and not stored); text_dim: D
"""
from typing import Any

import msgpack
import numpy as np

from vdit.data.errors import DataError

FORMAT = "vdit-latents"
FORMAT_VERSION = 1


def is_latent_record(record: dict) -> bool:
  return record.get("format") == FORMAT


def encode(mean: np.ndarray, std: np.ndarray, caption: str, *, text_embedding: np.ndarray | None = None,
           **meta: Any) -> bytes:
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  if mean.ndim != 4 or mean.shape != std.shape:
    raise ValueError(f"mean and std must both be [t, h, w, z], got {mean.shape} and {std.shape}.")
  record = {"format": FORMAT, "format_version": FORMAT_VERSION, "shape": list(mean.shape),
            "mean": np.ascontiguousarray(mean).tobytes(), "std": np.ascontiguousarray(std).tobytes(),
            "caption": caption, "meta": meta}
  if text_embedding is not None:
    text = np.asarray(text_embedding, np.float32)
    if text.ndim != 2:
      raise ValueError(f"text_embedding must be [n, D], got {text.shape}.")
    record.update(text_embedding=np.ascontiguousarray(text).tobytes(), text_dim=int(text.shape[1]))
  return msgpack.packb(record, use_bin_type=True)


def decode(data: bytes) -> dict[str, Any]:
  """-> {"latent_mean", "latent_std": float32 [t, h, w, z], "caption", ["text_embedding": [n, D]], **meta}."""
  try:
    record = msgpack.unpackb(data, raw=False)
  except Exception as e:  # msgpack raises several unrelated types for bad bytes.
    raise DataError(f"Corrupt latent record ({len(data)} bytes): {e}") from e
  if not isinstance(record, dict) or not is_latent_record(record):
    raise DataError("Not a cached-latent record; data.dir should be the output of data_prep.cache_latents.")
  return decode_fields(record)


def decode_fields(record: dict) -> dict[str, Any]:
  """The arrays of an already unpacked latent record."""
  if record.get("format_version") != FORMAT_VERSION:
    raise DataError(f"Latent record format_version {record.get('format_version')!r}; this code reads "
                    f"{FORMAT_VERSION}: re-cache the latents.")
  try:
    shape = tuple(int(d) for d in record["shape"])
    out = {**record.get("meta", {}), "caption": record["caption"],
           "latent_mean": _array(record["mean"], shape), "latent_std": _array(record["std"], shape)}
    if "text_embedding" in record:
      dim = int(record["text_dim"])
      out["text_embedding"] = _array(record["text_embedding"], (-1, dim))
  except (KeyError, TypeError, ValueError) as e:
    raise DataError(f"Latent record is missing or has a malformed field ({e!r}); re-cache the latents.") from e
  return out


def _array(payload: bytes, shape) -> np.ndarray:
  return np.frombuffer(payload, np.float32).reshape(shape).copy()
