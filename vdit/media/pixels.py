"""The one pixel codec: uint8 frames [0, 255] <-> model-space floats [-1, 1].

NumPy and JAX arrays alike (the result has the input's array type), so host code and jitted steps share it.
"""
import numpy as np


def to_model_space(video):
  """uint8 pixels -> float32 in [-1, 1]; float input is taken as already in model space (normalised
  latents from a cache, or pixels already converted), so a step never runs a VAE by accident."""
  if video.dtype == np.uint8:
    return video.astype(np.float32) / 127.5 - 1.0
  return video.astype(np.float32)


def to_uint8(x) -> np.ndarray:
  """Model-space [-1, 1] (any float dtype, NumPy or JAX) -> uint8 NumPy frames, rounded and clipped."""
  return np.clip(np.round((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
