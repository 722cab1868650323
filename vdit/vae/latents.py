"""The space the DiT works in: pixels, or a causal 3D VAE's normalised latents.

Everything outside the model (sample sizes, conditioning frames, written videos) is in pixels;
`ModelSpace` maps between the two. Pixel space is the identity. With a VAE (config.latent.vae) a
clip of T = 1 + 4k frames is k + 1 latent frames at 1/8 the size (Wan 2.1's factors), latents are
normalised per channel by the VAE file's latents_mean/latents_std, and decoding returns pixels.

Frame masks map to latent frames through the causal layout: latent frame 0 is pixel frame 0
alone, latent frame j >= 1 covers pixel frames 4j-3 .. 4j. A latent frame is a conditioning frame
when every pixel frame it covers is one.
"""
import hashlib
import os

import jax.numpy as jnp
import numpy as np

from vdit.core import weights
from vdit.core.errors import UserError


class LatentSpaceError(UserError):
  """A VAE file or latent cache that does not fit the config; the message says what to do."""


def vae_path(config) -> str:
  """config.latent.vae, or "" (pixel space)."""
  return config.latent.vae or ""


def file_digest(path: str) -> str:
  """sha256 of a file: names the exact VAE (or encoder) a latent cache was made with."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


class PixelSpace:
  """The identity: the DiT sees [-1, 1] pixels."""
  is_latent = False
  temporal_factor = spatial_factor = 1

  def __init__(self, channels: int = 3):
    self.channels = channels

  def model_shape(self, num_frames: int, height: int, width: int) -> tuple:
    return (num_frames, height, width, self.channels)

  def pixel_size(self, frames: int, height: int, width: int) -> tuple:
    return frames, height, width

  def encode(self, video):
    return jnp.asarray(video, jnp.float32)

  def decode(self, x):
    return x

  def frame_mask(self, mask):
    return mask


class VAESpace:
  """Normalised latents of a vdit.vae.wan_vae.WanVAE."""
  is_latent = True

  def __init__(self, vae, path: str = ""):
    from vdit.vae import wan_vae
    self._lib = wan_vae
    self.vae = vae
    self.path = path
    cfg = vae.config
    self.channels = cfg.z_dim
    self.temporal_factor, self.spatial_factor = cfg.temporal_factor, cfg.spatial_factor

  def model_shape(self, num_frames: int, height: int, width: int) -> tuple:
    tf, sf = self.temporal_factor, self.spatial_factor
    if (num_frames - 1) % tf or height % sf or width % sf:
      raise LatentSpaceError(
          f"A {num_frames}x{height}x{width} video does not fit the VAE {self.path or ''}: frames must be "
          f"1 + {tf}k and height/width multiples of {sf} (e.g. {1 + tf * max(1, (num_frames - 1) // tf)}x"
          f"{max(sf, height // sf * sf)}x{max(sf, width // sf * sf)}).")
    return (1 + (num_frames - 1) // tf, height // sf, width // sf, self.channels)

  def pixel_size(self, frames: int, height: int, width: int) -> tuple:
    """Pixel size of a latent clip of frames x height x width."""
    return 1 + self.temporal_factor * (frames - 1), height * self.spatial_factor, width * self.spatial_factor

  def posterior(self, video):
    """[N, T, H, W, 3] in [-1, 1] -> the VAE's (mean, std), unnormalised (what a latent cache keeps)."""
    mean, logvar = self._lib.encode(self.vae, jnp.asarray(video, jnp.float32))
    return mean, jnp.exp(0.5 * logvar)

  def encode(self, video):
    """[N, T, H, W, 3] in [-1, 1] -> normalised posterior means [N, t, h, w, z]."""
    return self._lib.normalize_latents(self.vae.config, self.posterior(video)[0])

  def decode(self, x):
    """Normalised latents -> [N, T, H, W, 3] in [-1, 1]."""
    return self._lib.decode(self.vae, self._lib.denormalize_latents(self.vae.config, jnp.asarray(x, jnp.float32)))

  def frame_mask(self, mask):
    """Pixel frame mask [N, T] -> latent frame mask [N, t] (see the module docstring)."""
    mask = np.asarray(mask, bool)
    tf = self.temporal_factor
    rest = mask[:, 1:].reshape(mask.shape[0], -1, tf).all(axis=-1)
    return np.concatenate([mask[:, :1], rest], axis=1)


def load_vae_space(path: str) -> VAESpace:
  """The VAE file named by config.latent.vae; a clear error when it is missing or not a VAE file."""
  from vdit.vae import wan_vae
  if not os.path.isfile(path):
    raise LatentSpaceError(f"config.latent.vae={path!r} does not exist; give the vae.safetensors of a trained "
                           "configs/vae_*.py workdir or of python -m vdit.interop.wan.vae_weights.")
  try:
    vae = wan_vae.load(path)
  except weights.WeightsError as e:
    raise LatentSpaceError(f"config.latent.vae: {e}") from None
  return VAESpace(vae, path)


def from_config(config):
  """The config's model space: VAESpace for config.latent.vae, else pixels."""
  path = vae_path(config)
  if not path:
    return PixelSpace(config.model.in_channels)
  space = load_vae_space(path)
  if config.model.in_channels != space.channels:
    raise LatentSpaceError(f"config.model.in_channels={config.model.in_channels} but the VAE {path} has "
                           f"z_dim={space.channels}; set model.in_channels={space.channels}.")
  return space


def check_cache(config, metadata: dict, data_dir: str) -> None:
  """Raises LatentSpaceError unless data.dir holds what the config trains on: pixel clips for a
  pixel model; latents made with the very VAE file config.latent.vae names for a latent one."""
  path, cached = vae_path(config), metadata.get("latents")
  if not path and cached:
    raise LatentSpaceError(f"data.dir={data_dir!r} holds VAE latents (made with {cached.get('vae')!r}); set "
                           f"config.latent.vae to that VAE file and model.in_channels={cached.get('channels')}.")
  if path and not cached:
    raise LatentSpaceError(f"config.latent.vae={path!r} but data.dir={data_dir!r} holds pixel clips; cache latents "
                           f"first: python -m data_prep.cache_latents --data={data_dir} --vae={path} --output=DIR, "
                           "then train with --config.data.dir=DIR.")
  if path and cached.get("vae_sha256") != file_digest(path):
    raise LatentSpaceError(f"data.dir={data_dir!r} holds latents cached with a different VAE ({cached.get('vae')!r}, "
                           f"sha256 {str(cached.get('vae_sha256'))[:12]}...) than config.latent.vae={path!r} "
                           f"(sha256 {file_digest(path)[:12]}...); re-cache with this VAE or name the one used.")
  text = (cached or {}).get("text")
  if config.text.encoder == "t5":
    if not text:
      raise LatentSpaceError(f"config.text.encoder='t5' trains on cached text embeddings, but data.dir={data_dir!r} "
                             "has none; cache them with data_prep.cache_latents --t5=DIR --tokenizer=FILE.")
    if text.get("dim") != config.text.dim or text.get("max_length") != config.text.max_length:
      raise LatentSpaceError(f"data.dir={data_dir!r} caches text embeddings of width {text.get('dim')} and length "
                             f"{text.get('max_length')}; the config has text.dim={config.text.dim}, "
                             f"text.max_length={config.text.max_length}: make them match.")

