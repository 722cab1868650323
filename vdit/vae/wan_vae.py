"""Wan 2.1's causal 3D video VAE (diffusers `AutoencoderKLWan`) in Flax NNX, channels-last.

Videos are [B, T, H, W, C] in [-1, 1] with T = 1 + 4k (Wan: temporal x4, spatial x8); latents are
[B, 1 + k, H/8, W/8, z_dim]. The first frame is encoded on its own, so an image is a 1-frame video
in the same latent space. Every temporal convolution is causal: a frame's latent depends only on
earlier frames, so clips are encoded in chunks (the first frame, then 4 frames at a time) and
decoded one latent frame at a time, carrying a cache of each layer's last input frames.

The cache is functional: every layer's `__call__(x, cache)` returns `(y, new_cache)`; `cache=None`
means "start of the clip" (zero history; the resampling layers treat the first frame specially, as
diffusers does). After the first call the cache is a fixed-shape pytree, so each chunk shape
compiles once. `encode`/`decode` loop over chunks with a jitted step (vdit.vae.tiling); the chunk
size only changes memory and speed, not the result (tests/test_wan_vae.py). With `tile=(h, w)` they
also cut the frame into overlapping spatial tiles, each run through the whole chunk loop with its own
cache and blended linearly over the overlap, as diffusers' tiled_encode/tiled_decode: memory is then
bounded by tile x chunk. Tiling changes the result (the mid block's attention and the convolutions'
padding see one tile, not the frame), except with a tile as large as the frame.

Parameter names follow diffusers' (`encoder.down_blocks.0.conv1.kernel` is
`encoder.down_blocks.0.conv1.weight`); `vdit.interop.wan.vae_weights` maps a diffusers file to them.
Not built: Wan 2.2's residual up/down blocks (`is_residual`) and `patch_size`.
"""
import dataclasses
import functools
import json
import math

import jax
import jax.numpy as jnp
from flax import nnx

from vdit.core import weights
from vdit.model import layers
from vdit.vae import cpu_conv
from vdit.vae import tiling

FORMAT = "vdit.wan_vae.v1"
CACHE_T = 2  # frames of history a causal 3x3x3 convolution needs
LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamp
# Wan 2.1's per-channel latent statistics (diffusers config `latents_mean`/`latents_std`).
WAN21_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


@dataclasses.dataclass(frozen=True)
class WanVAEConfig:
  """Architecture of the VAE; the defaults are Wan 2.1's (names as in diffusers' config.json)."""
  base_dim: int = 96
  decoder_base_dim: int | None = None  # None: base_dim
  z_dim: int = 16
  dim_mult: tuple = (1, 2, 4, 4)
  num_res_blocks: int = 2
  attn_scales: tuple = ()  # encoder resolutions (1.0, 0.5, ...) with attention after each res block
  temperal_downsample: tuple = (False, True, True)  # per downsampling level (diffusers' spelling)
  in_channels: int = 3
  out_channels: int = 3
  latents_mean: tuple = WAN21_LATENTS_MEAN
  latents_std: tuple = WAN21_LATENTS_STD

  def __post_init__(self):
    for name in ("dim_mult", "attn_scales", "temperal_downsample", "latents_mean", "latents_std"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    if len(self.temperal_downsample) != len(self.dim_mult) - 1:
      raise ValueError(f"temperal_downsample {self.temperal_downsample} needs one entry per downsampling "
                       f"level: len(dim_mult) - 1 = {len(self.dim_mult) - 1}.")
    for name in ("latents_mean", "latents_std"):
      if len(getattr(self, name)) not in (0, self.z_dim):
        raise ValueError(f"{name} has {len(getattr(self, name))} entries; z_dim is {self.z_dim}.")

  @property
  def temporal_factor(self) -> int:
    return 2 ** sum(bool(t) for t in self.temperal_downsample)

  @property
  def spatial_factor(self) -> int:
    return 2 ** (len(self.dim_mult) - 1)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> "WanVAEConfig":
    return cls(**json.loads(text))


# ---------------------------------------------------------------------------------------- layers


def _kernel(rngs, shape, param_dtype, axes):
  fan_in_axes = tuple(range(len(shape) - 1))
  init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=fan_in_axes, out_axis=-1)
  return nnx.Param(layers.initial_value(init, rngs, shape, param_dtype), logical_axes=axes)


class CausalConv3d(nnx.Module):
  """diffusers' WanCausalConv3d: kernel [T, H, W, I, O]; `padding` (t, h, w) pads space on both
  sides and time 2t frames in front only, with the cached frames of the previous chunk first."""

  def __init__(self, cin, cout, kernel, *, stride=(1, 1, 1), padding=(0, 0, 0), rngs, dtype, param_dtype):
    kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
    padding = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
    self.kernel = _kernel(rngs, (*kernel, cin, cout), param_dtype, ("conv_t", "conv_h", "conv_w", "conv_in", "conv_out"))
    self.bias = nnx.Param(jnp.zeros((cout,), param_dtype), logical_axes=("conv_out",))
    self.stride, self.pad_t, self.pad_hw, self.dtype = tuple(stride), 2 * padding[0], padding[1:], dtype
    if self.pad_t not in (0, CACHE_T):
      raise ValueError(f"Causal time padding {self.pad_t} is not supported (0 or {CACHE_T}).")

  def __call__(self, x, cache=None):
    """x [B, T, H, W, C]; cache: the last CACHE_T input frames before x (None: zeros).
    Returns (y, the last CACHE_T frames of cache + x), or (y, None) for convolutions without time padding."""
    new_cache = None
    if self.pad_t:
      if cache is None:
        cache = jnp.zeros((x.shape[0], self.pad_t, *x.shape[2:]), x.dtype)
      x = jnp.concatenate([cache.astype(x.dtype), x], axis=1)
      new_cache = x[:, -CACHE_T:]
    x, kernel = x.astype(self.dtype), self.kernel[...].astype(self.dtype)
    if jax.default_backend() == "cpu":
      y = cpu_conv.conv3d_as_2d(x, kernel, self.stride, self.pad_hw)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, self.stride, [(0, 0)] + [(p, p) for p in self.pad_hw],
                                       dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return y + self.bias[...].astype(self.dtype), new_cache



class Conv2d(nnx.Module):
  """Per-frame 2D convolution, kernel [H, W, I, O]; `padding` is ((top, bottom), (left, right))."""

  def __init__(self, cin, cout, kernel, *, stride=1, padding=((0, 0), (0, 0)), rngs, dtype, param_dtype):
    self.kernel = _kernel(rngs, (kernel, kernel, cin, cout), param_dtype, ("conv_h", "conv_w", "conv_in", "conv_out"))
    self.bias = nnx.Param(jnp.zeros((cout,), param_dtype), logical_axes=("conv_out",))
    self.stride, self.padding, self.dtype = (stride, stride), tuple(map(tuple, padding)), dtype

  def __call__(self, x):
    b, t = x.shape[:2]
    y = jax.lax.conv_general_dilated(
        x.reshape(b * t, *x.shape[2:]).astype(self.dtype), self.kernel[...].astype(self.dtype), self.stride,
        self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y + self.bias[...].astype(self.dtype)
    return y.reshape(b, t, *y.shape[1:])


class RMSNorm(nnx.Module):
  """diffusers' WanRMS_norm: x / max(||x||, 1e-12) * sqrt(C) * scale over channels, in float32."""

  def __init__(self, dim, *, dtype, param_dtype):
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",))
    self.dtype = dtype

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True))
    y = x32 / jnp.maximum(norm, 1e-12) * math.sqrt(x.shape[-1]) * self.scale[...].astype(jnp.float32)
    return y.astype(self.dtype)


class ResidualBlock(nnx.Module):
  """RMSNorm, SiLU, causal 3x3x3 conv, twice, plus a (1x1x1 conv) shortcut. Cache: (conv1, conv2)."""

  def __init__(self, cin, cout, **kw):
    nkw = dict(dtype=kw["dtype"], param_dtype=kw["param_dtype"])
    self.norm1 = RMSNorm(cin, **nkw)
    self.conv1 = CausalConv3d(cin, cout, 3, padding=1, **kw)
    self.norm2 = RMSNorm(cout, **nkw)
    self.conv2 = CausalConv3d(cout, cout, 3, padding=1, **kw)
    self.conv_shortcut = CausalConv3d(cin, cout, 1, **kw) if cin != cout else None

  def __call__(self, x, cache=None):
    c1, c2 = cache if cache is not None else (None, None)
    h = x if self.conv_shortcut is None else self.conv_shortcut(x)[0]
    x, c1 = self.conv1(jax.nn.silu(self.norm1(x)), c1)
    x, c2 = self.conv2(jax.nn.silu(self.norm2(x)), c2)  # dropout: training only, Wan's is 0
    return x + h, (c1, c2)


class AttentionBlock(nnx.Module):
  """Single-head self-attention over the pixels of each frame (no cache: frames are independent)."""

  def __init__(self, dim, **kw):
    self.norm = RMSNorm(dim, dtype=kw["dtype"], param_dtype=kw["param_dtype"])
    self.to_qkv = Conv2d(dim, 3 * dim, 1, **kw)
    self.proj = Conv2d(dim, dim, 1, **kw)

  def __call__(self, x):
    b, t, h, w, c = x.shape
    q, k, v = jnp.split(self.to_qkv(self.norm(x)).reshape(b * t, h * w, 1, 3 * c), 3, axis=-1)
    y = jax.nn.dot_product_attention(q, k, v).reshape(b, t, h, w, c)
    return x + self.proj(y)


class Resample(nnx.Module):
  """diffusers' WanResample: 'downsample2d'/'downsample3d' halve H, W (and T: a stride-2 causal time
  conv), 'upsample2d'/'upsample3d' double them (and T: a time conv to 2C channels, interleaved).
  The first frame of a clip is never resampled in time, so T = 1 + 2n <-> 1 + n."""

  def __init__(self, dim, mode, **kw):
    self.mode = mode
    if mode.startswith("up"):
      self.conv = Conv2d(dim, dim // 2, 3, padding=((1, 1), (1, 1)), **kw)
      self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), padding=(1, 0, 0), **kw) if mode == "upsample3d" else None
    elif mode.startswith("down"):
      self.conv = Conv2d(dim, dim, 3, stride=2, padding=((0, 1), (0, 1)), **kw)
      self.time_conv = (CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), **kw) if mode == "downsample3d"
                        else None)
    else:
      raise ValueError(f"Unknown resample mode {mode!r}.")

  def _time_up(self, x, cache):
    y, cache = self.time_conv(x, cache)  # [B, T, H, W, 2C]: (frame 2t, frame 2t+1) channel halves
    b, t, h, w, c2 = y.shape
    y = y.reshape(b, t, h, w, 2, c2 // 2).transpose(0, 1, 4, 2, 3, 5)
    return y.reshape(b, 2 * t, h, w, c2 // 2), cache

  def __call__(self, x, cache=None):
    """Cache: upsample3d: the time conv's last CACHE_T input frames; downsample3d: the last input frame."""
    if self.mode == "upsample3d":
      if cache is None:  # clip start: frame 0 passes as is; later frames follow a zero history
        rest, cache = (self._time_up(x[:, 1:], None) if x.shape[1] > 1 else
                       (x[:, :0], jnp.zeros((x.shape[0], CACHE_T, *x.shape[2:]), x.dtype)))
        x = jnp.concatenate([x[:, :1], rest], axis=1)
      else:
        x, cache = self._time_up(x, cache)
    if self.mode.startswith("up"):
      x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)  # nearest(-exact) x2
    x = self.conv(x)
    if self.mode == "downsample3d":
      first = cache is None  # clip start: frame 0 passes as is and is the history of frame 1
      history, rest = (x[:, :1], x[:, 1:]) if first else (cache, x)
      if rest.shape[1] % 2:
        raise ValueError(f"downsample3d got {x.shape[1]} frames; it needs an even number"
                         f"{' after the first frame' if first else ''}.")
      out = self.time_conv(jnp.concatenate([history, rest], axis=1))[0] if rest.shape[1] else rest
      x, cache = (jnp.concatenate([x[:, :1], out], axis=1) if first else out), x[:, -1:]
    return x, cache


class MidBlock(nnx.Module):
  def __init__(self, dim, **kw):
    self.resnets = nnx.List([ResidualBlock(dim, dim, **kw), ResidualBlock(dim, dim, **kw)])
    self.attentions = nnx.List([AttentionBlock(dim, **kw)])

  def __call__(self, x, cache=None):
    c0, c1 = cache if cache is not None else (None, None)
    x, c0 = self.resnets[0](x, c0)
    x, c1 = self.resnets[1](self.attentions[0](x), c1)
    return x, (c0, c1)


def _run(layers, x, cache):
  """Applies a list of layers, threading per-layer caches (None for attention blocks)."""
  cache = cache if cache is not None else [None] * len(layers)
  new = []
  for layer, c in zip(layers, cache):
    if isinstance(layer, AttentionBlock):
      x, c = layer(x), None
    else:
      x, c = layer(x, c)
    new.append(c)
  return x, new


class Encoder(nnx.Module):
  """diffusers' WanEncoder3d (Wan 2.1: non-residual down blocks)."""

  def __init__(self, cfg: WanVAEConfig, **kw):
    dims = [cfg.base_dim * u for u in (1, *cfg.dim_mult)]
    self.conv_in = CausalConv3d(cfg.in_channels, dims[0], 3, padding=1, **kw)
    blocks, scale = [], 1.0
    for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
      for _ in range(cfg.num_res_blocks):
        blocks.append(ResidualBlock(cin, cout, **kw))
        if scale in cfg.attn_scales:
          blocks.append(AttentionBlock(cout, **kw))
        cin = cout
      if i != len(cfg.dim_mult) - 1:
        blocks.append(Resample(cout, "downsample3d" if cfg.temperal_downsample[i] else "downsample2d", **kw))
        scale /= 2.0
    self.down_blocks = nnx.List(blocks)
    self.mid_block = MidBlock(dims[-1], **kw)
    self.norm_out = RMSNorm(dims[-1], dtype=kw["dtype"], param_dtype=kw["param_dtype"])
    self.conv_out = CausalConv3d(dims[-1], 2 * cfg.z_dim, 3, padding=1, **kw)

  def __call__(self, x, cache=None):
    cache = cache if cache is not None else {"conv_in": None, "down": None, "mid": None, "conv_out": None}
    new = {}
    x, new["conv_in"] = self.conv_in(x, cache["conv_in"])
    x, new["down"] = _run(self.down_blocks, x, cache["down"])
    x, new["mid"] = self.mid_block(x, cache["mid"])
    x, new["conv_out"] = self.conv_out(jax.nn.silu(self.norm_out(x)), cache["conv_out"])
    return x, new


class UpBlock(nnx.Module):
  def __init__(self, cin, cout, num_res_blocks, upsample_mode, **kw):
    self.resnets = nnx.List([ResidualBlock(cin if i == 0 else cout, cout, **kw) for i in range(num_res_blocks + 1)])
    self.upsampler = Resample(cout, upsample_mode, **kw) if upsample_mode else None

  def __call__(self, x, cache=None):
    layers = list(self.resnets) + ([self.upsampler] if self.upsampler is not None else [])
    return _run(layers, x, cache)


class Decoder(nnx.Module):
  """diffusers' WanDecoder3d (Wan 2.1: each upsampler halves the channels)."""

  def __init__(self, cfg: WanVAEConfig, **kw):
    base = cfg.decoder_base_dim or cfg.base_dim
    dims = [base * u for u in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
    temperal_upsample = cfg.temperal_downsample[::-1]
    self.conv_in = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1, **kw)
    self.mid_block = MidBlock(dims[0], **kw)
    blocks = []
    for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
      mode = None if i == len(cfg.dim_mult) - 1 else "upsample3d" if temperal_upsample[i] else "upsample2d"
      blocks.append(UpBlock(cin // 2 if i > 0 else cin, cout, cfg.num_res_blocks, mode, **kw))
    self.up_blocks = nnx.List(blocks)
    self.norm_out = RMSNorm(dims[-1], dtype=kw["dtype"], param_dtype=kw["param_dtype"])
    self.conv_out = CausalConv3d(dims[-1], cfg.out_channels, 3, padding=1, **kw)

  def __call__(self, x, cache=None):
    cache = cache if cache is not None else {"conv_in": None, "mid": None, "up": None, "conv_out": None}
    new = {}
    x, new["conv_in"] = self.conv_in(x, cache["conv_in"])
    x, new["mid"] = self.mid_block(x, cache["mid"])
    x, new["up"] = _run(self.up_blocks, x, cache["up"])
    x, new["conv_out"] = self.conv_out(jax.nn.silu(self.norm_out(x)), cache["conv_out"])
    return x, new


# ------------------------------------------------------------------------------------------- VAE


class WanVAE(nnx.Module):
  """The VAE; `encode_chunk`/`decode_chunk` are one causal step, `encode`/`decode` below loop them."""

  def __init__(self, config: WanVAEConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.config = config
    self.encoder = Encoder(config, **kw)
    self.quant_conv = CausalConv3d(2 * config.z_dim, 2 * config.z_dim, 1, **kw)
    self.post_quant_conv = CausalConv3d(config.z_dim, config.z_dim, 1, **kw)
    self.decoder = Decoder(config, **kw)

  def encode_chunk(self, video, cache=None):
    """video [B, t, H, W, C] -> (moments [B, t', H/8, W/8, 2 z_dim] = (mean, logvar), cache).
    The clip's first chunk (cache=None) has 1 + 4n frames (t' = 1 + n), later ones 4n (t' = n)."""
    h, cache = self.encoder(video, cache)
    return self.quant_conv(h)[0], cache

  def decode_chunk(self, latents, cache=None):
    """latents [B, t, h, w, z_dim] -> (unclipped video [B, t'', 8h, 8w, C], cache); the first chunk's
    first latent frame gives 1 frame, every other latent frame 4."""
    x, cache = self.decoder(self.post_quant_conv(latents)[0], cache)
    return x, cache


def encode(vae: WanVAE, video, *, chunk_frames: int | None = 4, tile=None, tile_overlap=None):
  """video [B, T, H, W, C] in [-1, 1], T = 1 + 4k -> (mean, logvar), each [B, 1 + k, H/8, W/8, z_dim].

  The first frame is encoded alone, then `chunk_frames` frames at a time (a multiple of the temporal
  factor; None: all at once), carrying the causal cache: memory is bounded by the chunk, not the clip.
  `tile=(height, width)` in pixels (multiples of 8; diffusers uses 256) also cuts the frame into
  tiles overlapping by `tile_overlap` pixels (default: a quarter of the tile), blended in latent
  space: memory is bounded by tile x chunk. Tiled results differ from untiled (vdit.vae.tiling).
  """
  cfg, (t, h, w, c) = vae.config, video.shape[1:] if video.ndim == 5 else (0, 0, 0, 0)
  tf, sf = cfg.temporal_factor, cfg.spatial_factor
  if video.ndim != 5 or (t - 1) % tf or h % sf or w % sf or c != cfg.in_channels:
    raise ValueError(f"Video shape {video.shape}: expected [B, 1 + {tf}k, H, W, {cfg.in_channels}] with H and W "
                     f"multiples of {sf}.")
  if chunk_frames is not None and (chunk_frames <= 0 or chunk_frames % tf):
    raise ValueError(f"chunk_frames={chunk_frames} must be a positive multiple of {tf} (or None).")
  tiles = tiling.check_tile(tile, tile_overlap, sf)
  graphdef, state = nnx.split(vae)
  run = functools.partial(tiling.encode_frames, graphdef, state, chunk_frames=chunk_frames)
  moments = run(video) if tiles is None else tiling.tiled(run, video, *tiles, in_scale=sf, out_scale=1)
  mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
  return mean, jnp.clip(logvar, *LOGVAR_RANGE)


def decode(vae: WanVAE, latents, *, chunk_frames: int | None = 1, clip: bool = True, tile=None,
           tile_overlap=None):
  """latents [B, 1 + k, h, w, z_dim] -> video [B, 1 + 4k, 8h, 8w, C], clipped to [-1, 1] (as diffusers)
  unless clip=False; decoded `chunk_frames` latent frames at a time (None: all at once). `tile` and
  `tile_overlap` are in output pixels, as for `encode`; tiles are blended in pixel space."""
  if latents.ndim != 5 or latents.shape[-1] != vae.config.z_dim:
    raise ValueError(f"Latents shape {latents.shape}: expected [B, T, h, w, {vae.config.z_dim}].")
  if chunk_frames is not None and chunk_frames <= 0:
    raise ValueError(f"chunk_frames={chunk_frames} must be positive (or None).")
  sf = vae.config.spatial_factor
  tiles = tiling.check_tile(tile, tile_overlap, sf)
  graphdef, state = nnx.split(vae)
  run = functools.partial(tiling.decode_frames, graphdef, state, chunk_frames=chunk_frames)
  video = run(latents) if tiles is None else tiling.tiled(run, latents, *tiles, in_scale=1, out_scale=sf)
  return jnp.clip(video, -1.0, 1.0) if clip else video


def sample(mean, logvar, key):
  """A draw from the posterior N(mean, exp(logvar))."""
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)


def normalize_latents(config: WanVAEConfig, z):
  """VAE latents -> the DiT's unit-scale latents: (z - latents_mean) / latents_std per channel."""
  return (z - jnp.asarray(config.latents_mean, z.dtype)) / jnp.asarray(config.latents_std, z.dtype)


def denormalize_latents(config: WanVAEConfig, z):
  return z * jnp.asarray(config.latents_std, z.dtype) + jnp.asarray(config.latents_mean, z.dtype)


# ----------------------------------------------------------------------------------- weight files


def abstract(config: WanVAEConfig) -> WanVAE:
  """The VAE with shape-only parameters, to be filled by weights.load_into."""
  with layers.shapes_only():
    return nnx.eval_shape(lambda: WanVAE(config, rngs=nnx.Rngs(0)))


def tensor_shapes(config: WanVAEConfig) -> dict:
  """{vdit tensor name: shape} of the VAE, as a weight file must hold them (float32)."""
  return {k: tuple(v.shape) for k, v in _abstract_tensors(abstract(config)).items()}


def _abstract_tensors(model) -> dict:
  state = nnx.state(model, nnx.Param)
  return {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(state)}


def load(path: str) -> WanVAE:
  """Builds the VAE from a vdit-layout file (written by `python -m vdit.interop.wan.vae_weights`)."""
  tensors, metadata = weights.load(path)
  if metadata.get("format") != FORMAT:
    raise weights.WeightsError(f"Weights file {path!r} has format {metadata.get('format')!r}, expected {FORMAT!r}; "
                               "convert the diffusers VAE with python -m vdit.interop.wan.vae_weights.")
  try:
    config = WanVAEConfig.from_json(metadata["config"])
  except (KeyError, TypeError, ValueError) as e:
    raise weights.WeightsError(f"Weights file {path!r}: metadata 'config' is not a WanVAEConfig ({e}).") from None
  model = abstract(config)
  weights.load_into(model, tensors, f"Weights file {path!r}")
  return model
