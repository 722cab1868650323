"""The causal VAE's loops (vdit.vae.wan_vae): time in causal chunks, space in overlapping tiles.

Time: a clip runs chunk by chunk through the model's `encode_chunk`/`decode_chunk`, carrying the
causal cache, so memory is bounded by the chunk, not the clip.

Space: the frame is cut into overlapping tiles and each tile runs the whole temporal loop with its
own cache, so memory is bounded by tile x chunk (plus the full input and output). Tiles start every
`tile - overlap` from the top-left corner until one reaches the edge; that last one is clipped and
is always larger than the overlap. Tile outputs are joined separably: across each overlap the next
tile fades in linearly (weight i / overlap at its i-th row or column, diffusers' blend_v/blend_h
ramp), first along the width within each row of tiles, then the rows along the height, so a corner
blends its four tiles bilinearly. Encoding blends in latent space, decoding in pixel space.

Against diffusers' AutoencoderKLWan.tiled_encode/tiled_decode with the same tile and stride in
pixels, this is equal when the tiles split one axis only and diffusers starts no tile after one
that already reaches the edge (tests/test_wan_vae.py). Elsewhere diffusers differs on purpose: it
also runs that redundant edge tile (a sliver with little context, blended in over the overlap), and
it blends tiles in place, so its corner weights are not bilinear (a faint seam at tile corners).

Tiled is not untiled: convolutions see zero padding at interior tile edges and the mid block's
attention spans one tile's pixels, not the frame's. A tile as large as the frame is untiled exactly.
"""
import functools
import numbers

import jax
import jax.numpy as jnp
from flax import nnx


@functools.partial(jax.jit, static_argnums=0)
def encode_step(graphdef, state, video, cache):
  """One jitted causal chunk (compiled once per chunk and tile shape; benchmarks compile it ahead)."""
  return nnx.merge(graphdef, state).encode_chunk(video, cache)


@functools.partial(jax.jit, static_argnums=0)
def decode_step(graphdef, state, latents, cache):
  return nnx.merge(graphdef, state).decode_chunk(latents, cache)


def chunks(num: int, first: int, size: int | None):
  """[0, first), then chunks of `size` (None: everything after the first chunk at once)."""
  bounds = [0, first] + (list(range(first + size, num, size)) if size else []) + [num]
  return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def encode_frames(graphdef, state, video, chunk_frames: int | None):
  """A clip's moments from a fresh cache: its first frame alone, then `chunk_frames` at a time."""
  cache, outs = None, []
  for a, e in chunks(video.shape[1], 1, chunk_frames):
    out, cache = encode_step(graphdef, state, video[:, a:e], cache)
    outs.append(out)
  return jnp.concatenate(outs, axis=1)


def decode_frames(graphdef, state, latents, chunk_frames: int | None):
  """A clip's unclipped video from a fresh cache, `chunk_frames` latent frames at a time."""
  cache, outs = None, []
  for a, e in chunks(latents.shape[1], chunk_frames or latents.shape[1], chunk_frames):
    out, cache = decode_step(graphdef, state, latents[:, a:e], cache)
    outs.append(out)
  return jnp.concatenate(outs, axis=1)


# ----------------------------------------------------------------------------------------- space


def _pair(value):
  return (value, value) if isinstance(value, numbers.Integral) else tuple(value)


def check_tile(tile, overlap, factor: int):
  """Validates `tile` and `overlap` ((height, width) or one int, in pixels) and returns them as
  (tile, overlap) pairs in latent pixels (pixels / factor), or None for tile=None (untiled)."""
  if tile is None:
    if overlap is not None:
      raise ValueError(f"tile_overlap={overlap!r} needs a tile size: pass tile=(height, width) in pixels too.")
    return None
  try:
    tile = _pair(tile)
    ok = len(tile) == 2 and all(isinstance(t, numbers.Integral) and t > 0 and t % factor == 0 for t in tile)
  except TypeError:
    ok = False
  if not ok:
    raise ValueError(f"tile={tile!r} must be (height, width) in pixels, positive multiples of {factor} "
                     f"(the VAE's spatial factor), e.g. (256, 256).")
  if overlap is None:  # a quarter of the tile (diffusers' 64 of 256), on the latent grid
    overlap = tuple(t // 4 // factor * factor for t in tile)
  try:
    overlap = _pair(overlap)
    ok = len(overlap) == 2 and all(isinstance(o, numbers.Integral) and o >= 0 and o % factor == 0 and 2 * o <= t
                                   for o, t in zip(overlap, tile))
  except TypeError:
    ok = False
  if not ok:
    raise ValueError(f"tile_overlap={overlap!r} must be (height, width) in pixels, multiples of {factor} "
                     f"from 0 to half the tile {tile} (so at most two tiles overlap); default: a quarter.")
  return tuple(int(t) // factor for t in tile), tuple(int(o) // factor for o in overlap)


def spans(size: int, tile: int, overlap: int) -> list:
  """[(start, end)] of the tiles along an axis: every tile - overlap until one reaches `size`."""
  starts = [0]
  while starts[-1] + tile < size:
    starts.append(starts[-1] + tile - overlap)
  return [(s, min(s + tile, size)) for s in starts]


def _join(parts, bounds, overlap: int, axis: int):
  """Concatenates tile outputs along `axis` (`bounds`: their spans); each tile keeps the part
  before the next one starts, its first `overlap` rows faded in over the previous tile's last."""
  pieces = []
  for k, (part, (start, end)) in enumerate(zip(parts, bounds)):
    keep = (bounds[k + 1][0] if k + 1 < len(bounds) else end) - start
    piece = jax.lax.slice_in_dim(part, 0, keep, axis=axis)
    if k and overlap:
      prev = parts[k - 1]
      prev = jax.lax.slice_in_dim(prev, prev.shape[axis] - overlap, prev.shape[axis], axis=axis)
      head = jax.lax.slice_in_dim(piece, 0, overlap, axis=axis)
      ramp = (jnp.arange(overlap, dtype=jnp.float32) / overlap).reshape(
          [overlap if i == axis else 1 for i in range(part.ndim)])
      head = (prev.astype(jnp.float32) * (1 - ramp) + head.astype(jnp.float32) * ramp).astype(part.dtype)
      piece = jnp.concatenate([head, jax.lax.slice_in_dim(piece, overlap, keep, axis=axis)], axis=axis)
    pieces.append(piece)
  return jnp.concatenate(pieces, axis=axis)


def tiled(fn, x, tile, overlap, *, in_scale: int, out_scale: int):
  """fn over overlapping spatial tiles of x [B, T, H, W, C], outputs joined (see the module doc).

  `tile`, `overlap`: (h, w) on the latent grid; x has `in_scale` pixels per latent pixel, fn's
  output `out_scale` (encode: factor and 1; decode: 1 and factor)."""
  grid = (x.shape[2] // in_scale, x.shape[3] // in_scale)
  hs, ws = (spans(n, t, o) for n, t, o in zip(grid, tile, overlap))
  scaled = lambda bounds: [(a * out_scale, b * out_scale) for a, b in bounds]  # noqa: E731
  rows = []
  for ha, hb in hs:
    row = [fn(x[:, :, ha * in_scale:hb * in_scale, wa * in_scale:wb * in_scale]) for wa, wb in ws]
    rows.append(_join(row, scaled(ws), overlap[1] * out_scale, axis=3))
  return _join(rows, scaled(hs), overlap[0] * out_scale, axis=2)
