"""Rotary position embeddings: 1D for text, 3D (time, height, width) for video tokens.

3D RoPE splits each head's channels into a time, a height and a width part (Wan's split: height and
width get 2*(d//6) channels each, time the rest), so relative offsets along each axis are encoded
and any frame count or resolution works without a learned table. Channels rotate in adjacent pairs.
"""
import jax.numpy as jnp


def axis_split(head_dim: int) -> tuple[int, int, int]:
  """Channels per axis (t, h, w) for a head of `head_dim` channels; each part is even."""
  if head_dim % 2:
    raise ValueError(f"RoPE needs an even head dim, got {head_dim}.")
  hw = 2 * (head_dim // 6)
  return head_dim - 2 * hw, hw, hw


def _angles(positions, channels: int, theta: float):
  """positions [...] -> angles [..., channels // 2]."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, channels, 2, dtype=jnp.float32) / channels))
  return positions.astype(jnp.float32)[..., None] * inv_freq


def video_angles(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0):
  """Angles [nt*nh*nw, head_dim // 2] for tokens laid out t-major on a (nt, nh, nw) grid."""
  nt, nh, nw = grid
  ct, ch, cw = axis_split(head_dim)
  t, h, w = jnp.meshgrid(jnp.arange(nt), jnp.arange(nh), jnp.arange(nw), indexing="ij")
  parts = [_angles(t.reshape(-1), ct, theta), _angles(h.reshape(-1), ch, theta), _angles(w.reshape(-1), cw, theta)]
  return jnp.concatenate(parts, axis=-1)


def sequence_angles(length: int, head_dim: int, theta: float = 10000.0):
  """Angles [length, head_dim // 2] for a 1D sequence."""
  return _angles(jnp.arange(length), head_dim, theta)


def apply(x, angles):
  """Rotates x [B, N, H, D] by angles [N, D // 2] (pairs of adjacent channels), in float32."""
  x32 = x.astype(jnp.float32)
  pairs = x32.reshape(x.shape[:-1] + (x.shape[-1] // 2, 2))
  cos = jnp.cos(angles)[None, :, None, :]
  sin = jnp.sin(angles)[None, :, None, :]
  real = pairs[..., 0] * cos - pairs[..., 1] * sin
  imag = pairs[..., 0] * sin + pairs[..., 1] * cos
  return jnp.stack([real, imag], axis=-1).reshape(x.shape).astype(x.dtype)
