"""The VAE trainer's config schema (`default_config()`), its validation, and what it builds.

Keys documented here are the whole schema: VAE configs (configs/vae_*.py) start from
`default_config()` and are locked, so a misspelt override is an error. Only the trainer reads the
config; the VAE, losses and discriminator take plain arguments built here.
"""
import dataclasses

import ml_collections

from vdit.core.errors import ConfigError
from vdit.vae import wan_vae
from vdit.training import vae_losses
from vdit.config import schema

# config.vae keys that are WanVAEConfig fields (the architecture).
ARCHITECTURE_KEYS = ("base_dim", "decoder_base_dim", "z_dim", "dim_mult", "num_res_blocks", "attn_scales",
                     "temperal_downsample")


def _optim(peak_lr, warmup_steps, b1=0.9, b2=0.99, weight_decay=0.01, ema_decay=0.999):
  return ml_collections.ConfigDict(dict(
      peak_lr=peak_lr, end_lr_fraction=0.1, warmup_steps=warmup_steps, weight_decay=weight_decay, b1=b1, b2=b2,
      clip_norm=1.0, ema_decay=ema_decay))


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Data parallelism only: the VAE's parameters are replicated, the batch split over `data`.
  c.mesh = ml_collections.ConfigDict({"data": -1})

  c.data = ml_collections.ConfigDict()
  c.data.dir = ""  # prepared shards (data_prep); required
  # Frames per training crop: 1 + temporal_factor * k (the VAE's causal clip length); 0: each
  # bucket's full length. Shorter buckets are cropped to their longest 1 + temporal_factor * k.
  c.data.num_frames = 9
  c.data.image_ratio = -1.0  # share of steps from 1-frame buckets; -1: by clip count like videos
  c.data.worker_count = 0  # Grain worker processes (0: in-process)
  c.data.prefetch = 2

  # Architecture (vdit/vae/wan_vae.py WanVAEConfig; defaults are Wan 2.1's): temporal x2 per True
  # in temperal_downsample, spatial x2 per dim_mult step.
  c.vae = ml_collections.ConfigDict()
  c.vae.base_dim = 96
  c.vae.decoder_base_dim = 0  # 0: base_dim
  c.vae.z_dim = 16
  c.vae.dim_mult = (1, 2, 4, 4)
  c.vae.num_res_blocks = 2
  c.vae.attn_scales = ()
  c.vae.temperal_downsample = (False, True, True)
  # A vdit VAE weight file (vdit.interop.wan.vae_weights output, or a previous run's vae.safetensors)
  # to fine-tune; the architecture keys above must then match the file's.
  c.vae.init_weights = ""
  # Training batches whose posterior means give the exported latents_mean / latents_std.
  c.vae.latent_stats_batches = 8

  # Loss weights (vdit/training/vae_losses.py); each term is a mean over elements.
  c.loss = ml_collections.ConfigDict()
  c.loss.l1_weight = 1.0
  c.loss.l2_weight = 0.0
  c.loss.kl_weight = 1e-6
  c.loss.perceptual_weight = 0.0  # > 0 needs perceptual_weights
  # Frozen frame network (python -m vdit.eval.train_toy_features output, safetensors).
  c.loss.perceptual_weights = ""
  c.loss.adversarial_weight = 0.0  # > 0 builds and trains the patch discriminator
  c.loss.adversarial_start_step = 0  # generator term and discriminator updates start at this step

  c.disc = ml_collections.ConfigDict()  # the patch discriminator (only with adversarial_weight > 0)
  c.disc.base_dim = 32
  c.disc.num_layers = 3
  c.disc.optim = _optim(1e-4, 0, b1=0.5, b2=0.9, weight_decay=0.0, ema_decay=0.0)  # ema_decay unused

  c.optim = _optim(1e-4, 1000)  # AdamW, warmup + cosine (vdit.training.train_state.make_optimizer)

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 100_000
  c.train.global_batch_size = 16
  schema.loop_settings(c.train)  # log/checkpoint cadence, non-finite policy, restore step
  # On CPU: compile without XLA's LLVM optimisation (compiles 2-4x faster, steps ~5% slower).
  c.train.cpu_fast_compile = True

  # Held-out reconstruction PSNR (posterior mean, EMA weights) at every checkpoint: a prepared
  # dataset (e.g. data_prep.toy_world --split=eval) and how many batches of it; "": off.
  c.eval = ml_collections.ConfigDict({"dir": "", "num_batches": 4})
  return c


def _require(ok: bool, message: str):
  if not ok:
    raise ConfigError(message)


def architecture(config) -> wan_vae.WanVAEConfig:
  """The WanVAEConfig of config.vae (without latent statistics: the trainer measures them)."""
  v = config.vae
  for key in ("base_dim", "z_dim", "num_res_blocks"):
    _require(getattr(v, key) >= 1, f"config.vae.{key}={getattr(v, key)} must be >= 1.")
  fields = {k: getattr(v, k) for k in ARCHITECTURE_KEYS}
  fields["decoder_base_dim"] = fields["decoder_base_dim"] or None
  try:
    return wan_vae.WanVAEConfig(**fields, latents_mean=(), latents_std=())
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.vae: {e}") from None


def check_matches_file(config, file_config: wan_vae.WanVAEConfig, path: str) -> None:
  """ConfigError listing every architecture key where config.vae differs from the init file."""
  want = architecture(config)
  diffs = [f"{k}={getattr(want, k)!r} (file: {getattr(file_config, k)!r})" for k in ARCHITECTURE_KEYS
           if getattr(want, k) != getattr(file_config, k)]
  _require(not diffs, f"config.vae does not match config.vae.init_weights {path!r}: {', '.join(diffs)}; set "
           "those config.vae keys to the file's values (its architecture is fixed by its weights).")


def loss_weights(config) -> vae_losses.LossWeights:
  s = config.loss
  return vae_losses.LossWeights(l1=s.l1_weight, l2=s.l2_weight, kl=s.kl_weight, perceptual=s.perceptual_weight,
                                adversarial=s.adversarial_weight, adversarial_start_step=s.adversarial_start_step)


def validate(config) -> wan_vae.WanVAEConfig:
  """Checks what a locked config can still get wrong; returns the architecture."""
  arch = architecture(config)
  tf, n = arch.temporal_factor, config.data.num_frames
  below = 1 + max(n - 1, 0) // tf * tf
  _require(n == 0 or (n >= 1 and (n - 1) % tf == 0),
           f"config.data.num_frames={n} is not 1 + {tf}k: the causal VAE encodes the first frame alone, then "
           f"{tf} frames per latent frame; use {below} or {below + tf} (or 0: each bucket's full length).")
  _require(config.data.dir != "", "config.data.dir is empty; set it to a prepared dataset "
           "(python -m data_prep.toy_world --output=DIR, or data_prep.ingest).")
  w = loss_weights(config)
  for name in ("l1", "l2", "kl", "perceptual", "adversarial"):
    _require(getattr(w, name) >= 0, f"config.loss.{name}_weight={getattr(w, name)} must be >= 0.")
  _require(w.l1 + w.l2 > 0, "config.loss.l1_weight and l2_weight are both 0; the VAE needs a reconstruction loss.")
  _require(w.perceptual == 0 or config.loss.perceptual_weights,
           f"config.loss.perceptual_weight={w.perceptual} needs config.loss.perceptual_weights (a toy feature "
           "network: python -m vdit.eval.train_toy_features); or set the weight to 0.")
  _require(w.adversarial_start_step >= 0, "config.loss.adversarial_start_step must be >= 0.")
  tr = config.train
  _require(tr.num_steps > 0 and tr.global_batch_size > 0, "config.train.num_steps and global_batch_size must be > 0.")
  _require(tr.log_every > 0 and tr.checkpoint_every > 0, "config.train.log_every and checkpoint_every must be > 0.")
  _require(config.vae.latent_stats_batches > 0, "config.vae.latent_stats_batches must be > 0.")
  _require(not config.eval.dir or config.eval.num_batches > 0, "config.eval.num_batches must be > 0.")
  return arch


def signature(config, arch: wan_vae.WanVAEConfig) -> dict:
  """What fixes the train state's structure: a checkpoint resumes only under the same signature."""
  sig = {f"vae.{k}": list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(arch).items()
         if k not in ("latents_mean", "latents_std")}
  if config.loss.adversarial_weight > 0:
    sig.update({"disc.base_dim": config.disc.base_dim, "disc.num_layers": config.disc.num_layers})
  else:
    sig["disc"] = None
  return sig
