"""Experiment configs at the boundary: validation, the copy kept in the workdir, model signatures.

The workdir's `config.json` is what `vdit.sample` and evals rebuild the model from, so a workdir is
self-describing and never depends on the config file still existing.
"""
import json
import os

import math

import ml_collections

from vdit.config import experiment, schema, upgrade
from vdit.core.errors import ConfigError
from vdit.core.workdir_files import CONFIG_FILE

from vdit.parallel import sharding
from vdit.diffusion import conditioning
from vdit.diffusion.flow import TIMESTEP_SAMPLERS
from vdit.diffusion.caching import MODES as CACHE_MODES, mode_error
from vdit.diffusion.samplers import SAMPLERS
from vdit.model.attention import backend_error, shape_error
from vdit.model.context_parallel import MODES as CONTEXT_PARALLEL_MODES
from vdit.model import lora as lora_lib
from vdit.model.dit import VARIANTS, remat_error
from vdit.model.factory import DTYPES, PREDICTIONS
from vdit.model.text_encoder import MAX_POSITIONS

# Settings that change how a model runs but not its parameters; a checkpoint stays compatible.
_RUNTIME_ONLY = {"lora.dropout", "model.remat", "model.dtype", "model.scan_layers", "model.attention",
                 "model.context_parallel",
                 "text.caption_dropout", "text.max_length", "text.t5_path", "text.tokenizer_path"}
# Settings added after checkpoints existed: left out of the signature at their old behaviour, so
# those checkpoints still match.
_OMITTED_AT = {"model.frame_conditioning": False, "model.variant": "vdit", "text.encoder": "trainable",
               "model.interval_conditioning": False, "text.positions": False}




def _require(ok: bool, message: str):
  if not ok:
    raise ConfigError(message)


def validate(config, platform: str | None = None) -> None:
  """Checks values a typo-proof (locked) config can still get wrong; one clear message each.
  `platform`: where the model will run (default: this machine; compile_check passes its target's)."""
  m, t, tr = config.model, config.text, config.train
  for error in (remat_error(m.remat), backend_error(m.attention, platform)):
    _require(error is None, f"config.{error}")
  _require(m.context_parallel in CONTEXT_PARALLEL_MODES,
           f"config.model.context_parallel={m.context_parallel!r}; choose one of {CONTEXT_PARALLEL_MODES}.")
  _require(m.variant in VARIANTS, f"config.model.variant={m.variant!r}; choose one of {sorted(VARIANTS)}.")
  _require(isinstance(m.scan_layers, bool), f"config.model.scan_layers={m.scan_layers!r} must be True or False.")
  _require(m.prediction in PREDICTIONS, f"config.model.prediction={m.prediction!r}; choose one of {PREDICTIONS}.")
  for key in ("dtype", "param_dtype"):
    _require(m[key] in DTYPES, f"config.model.{key}={m[key]!r}; choose one of {sorted(DTYPES)}.")
  _require(len(m.patch_size) == 3 and all(int(p) > 0 for p in m.patch_size),
           f"config.model.patch_size={tuple(m.patch_size)} must be three positive ints (t, h, w).")
  _require(m.dim % m.num_heads == 0, f"config.model.dim={m.dim} must be divisible by num_heads={m.num_heads}.")
  error = shape_error(m.attention, m.dim // m.num_heads)
  _require(error is None, f"config.{error}")
  _require((m.dim // m.num_heads) % 2 == 0, "config.model head dim (dim / num_heads) must be even for RoPE.")
  _require(t.dim % t.num_heads == 0, f"config.text.dim={t.dim} must be divisible by num_heads={t.num_heads}.")
  _require(not t.positions or (t.encoder == "trainable" and t.max_length <= MAX_POSITIONS),
           f"config.text.positions=True needs text.encoder='trainable' and text.max_length <= {MAX_POSITIONS} "
           f"(got {t.encoder!r}, {t.max_length}); set text.positions=False.")
  _require(0.0 <= t.caption_dropout < 1.0, f"config.text.caption_dropout={t.caption_dropout} must be in [0, 1).")
  _require(config.diffusion.timestep_sampling in TIMESTEP_SAMPLERS,
           f"config.diffusion.timestep_sampling={config.diffusion.timestep_sampling!r}; "
           f"choose one of {TIMESTEP_SAMPLERS}.")
  _require(config.sample.cache in CACHE_MODES,
           f"config.sample.cache={config.sample.cache!r}; choose one of {CACHE_MODES}.")
  _require(config.sample.sampler in SAMPLERS, f"config.sample.sampler={config.sample.sampler!r}; choose one of {SAMPLERS}.")
  _require(config.sample.frame_cfg >= 0, f"config.sample.frame_cfg={config.sample.frame_cfg} must be >= 0 (0: off).")
  error = mode_error(config.sample.cache, frame_cfg=config.sample.frame_cfg or None)
  _require(error is None, f"config.sample.{error}")
  try:
    conditioning.strategy_probabilities(config.train.conditioning)
  except ValueError as e:
    raise ConfigError(f"config.train.conditioning: {e}") from None
  interval = tuple(config.sample.guidance_interval)
  _require(len(interval) == 2 and 0.0 <= interval[0] <= interval[1] <= 1.0,
           f"config.sample.guidance_interval={interval} must be (low, high) with 0 <= low <= high <= 1.")
  _require(tr.num_steps > 0 and tr.global_batch_size > 0, "config.train.num_steps and global_batch_size must be > 0.")
  _require(tr.log_every > 0 and tr.checkpoint_every > 0, "config.train.log_every and checkpoint_every must be > 0.")
  _require(config.data.num_frames % m.patch_size[0] == 0,
           f"config.data.num_frames={config.data.num_frames} must be a multiple of the temporal patch "
           f"size {m.patch_size[0]} (or 0: each bucket's full length).")
  _require(config.data.tokens_per_batch >= 0 and config.data.image_ratio <= 1,
           "config.data.tokens_per_batch must be >= 0 and image_ratio <= 1 (negative: by clip count).")
  _validate_lora(config.lora)
  _validate_parallelism(config)


def _validate_lora(lora) -> None:
  _require(lora.rank >= 0 and lora.alpha >= 0 and 0.0 <= lora.dropout < 1.0,
           f"config.lora: rank={lora.rank} and alpha={lora.alpha} must be >= 0 and dropout={lora.dropout} in [0, 1).")
  try:
    layers = lora_lib.resolve_targets(lora.targets)
  except ValueError as e:
    raise ConfigError(f"config.{e}") from None
  _require(not lora.rank or layers, "config.lora.targets is empty; name the layers to adapt (e.g. self_attn,mlp).")


def _axis_size(config, axis: str) -> int | None:
  """An axis's size across slices (mesh x dcn_mesh); None where -1 leaves it to the device count."""
  ici = dict(config.mesh).get(axis, 1)
  return None if ici == -1 else ici * dict(config.dcn_mesh).get(axis, 1)


def _validate_parallelism(config) -> None:
  """Mesh axes against the model: what the device count does not decide (make_mesh checks that)."""
  m, mesh = config.model, dict(config.mesh)
  try:
    sharding.dcn_sizes(dict(config.dcn_mesh))
    # Names, signs and -1s only (against a device count the sizes fit); make_mesh checks the count.
    sharding.mesh_sizes(mesh, math.prod(s for s in mesh.values() if s > 0))
  except sharding.MeshConfigError as e:
    raise ConfigError(f"config.mesh / config.dcn_mesh: {e}") from None
  tensor, context = _axis_size(config, "tensor"), _axis_size(config, "context")
  if tensor:
    for section in ("model", "text"):
      heads = config[section].num_heads
      _require(heads % tensor == 0, f"config.{section}.num_heads={heads} is not divisible by the tensor axis "
               f"({tensor}); choose num_heads a multiple of it, or a smaller mesh.tensor.")
  if m.context_parallel == "ulysses" and tensor and context:
    heads = m.num_heads // tensor
    _require(heads % context == 0,
             f"config.model.context_parallel='ulysses' splits the {heads} heads per tensor shard (num_heads "
             f"{m.num_heads} / tensor {tensor}) over the context axis ({context}), which does not divide them; "
             "use context_parallel='ring', or change num_heads, mesh.tensor or mesh.context.")
  s = config.sample
  if s.num_frames and s.height and s.width:
    check_video_size(config, s.num_frames, s.height, s.width, "config.sample size")


def check_video_size(config, num_frames: int, height: int, width: int, what: str) -> None:
  """Raises ConfigError unless the model takes videos of this size on the configured mesh: sizes
  divisible by the patch, and with context parallelism a token count the context axis divides.
  `what` names the size in the message (e.g. "config.sample size", "bucket 64x64x16")."""
  patch = tuple(config.model.patch_size)
  size = f"{num_frames}x{height}x{width}"
  _require(num_frames % patch[0] == 0 and height % patch[1] == 0 and width % patch[2] == 0,
           f"{what} {size} is not divisible by the patch size {patch}.")
  tokens = (num_frames // patch[0]) * (height // patch[1]) * (width // patch[2])
  context, mode = _axis_size(config, "context"), config.model.context_parallel
  _require(mode == "none" or not context or tokens % context == 0,
           f"{what} {size} gives {tokens} tokens (patch {patch}), not divisible by the context axis ({context}) "
           f"that model.context_parallel={mode!r} splits them over; choose a size whose token count is a "
           f"multiple of {context}, or a smaller mesh.context.")


def model_signature(config) -> dict:
  """Flat {'model.dim': 128, ...} of every setting that determines the parameters' shapes."""
  flat, values = {}, experiment.to_dict(config) if experiment.is_frozen(config) else config
  # Adapters add parameters (lora.*); a config without them keeps the signature it always had.
  for section in ("model", "text") + (("lora",) if values["lora"]["rank"] else ()):
    for key, value in values[section].items():
      name = f"{section}.{key}"
      if name not in _RUNTIME_ONLY and not (name in _OMITTED_AT and value == _OMITTED_AT[name]):
        flat[name] = list(value) if isinstance(value, (tuple, list)) else value
  return flat


def save(config, workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  tmp = path + ".tmp"
  if experiment.is_frozen(config):
    config = experiment.thaw(config)
  with open(tmp, "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(tmp, path)


def load(workdir: str) -> ml_collections.ConfigDict:
  """A workdir's config.json, upgraded to today's schema (vdit.config.upgrade) and locked."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ConfigError(f"No {CONFIG_FILE} in workdir {workdir!r}: is this a vdit training workdir? "
                      "Train with `python -m vdit.main --config=... --workdir=DIR` first.")
  try:
    with open(path) as f:
      raw = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"Cannot read {path}: {e}. Restore the file, or retrain into a new --workdir.") from None
  if not isinstance(raw, dict) or "model" not in raw:
    raise ConfigError(f"{path} is not a DiT workdir's config (a VAE workdir's?); give the workdir of a "
                      "`python -m vdit.main --config=configs/toy.py`-style run.")
  return from_dict(upgrade.upgrade(raw, path), path)


def from_dict(values: dict, source: str) -> ml_collections.ConfigDict:
  """Today's schema with `values` (a config.json's, upgraded) laid over it; an unknown key is an error."""
  config = ml_collections.ConfigDict(_merged(schema.default_config().to_dict(), values, source, ""))
  config.lock()
  return config


_TABLES = ("mesh", "dcn_mesh", "train.conditioning")  # their keys are the file's, not the schema's


def _merged(defaults: dict, values: dict, source: str, prefix: str) -> dict:
  out = dict(defaults)
  for key, value in values.items():
    name = f"{prefix}{key}"
    if key not in defaults:
      raise ConfigError(f"{source}: unknown key {name!r} (written by another vdit version?); remove it or "
                        "upgrade vdit.")
    if isinstance(defaults[key], dict) and name not in _TABLES:
      out[key] = _merged(defaults[key], value, source, name + ".")
    else:
      out[key] = tuple(value) if isinstance(defaults[key], tuple) else value
  return out


def for_inference(config):
  """A workdir's config made runnable for sampling and evaluation on this machine: runtime-only
  model settings chosen for the training cluster (a fused attention kernel of another platform,
  context parallelism over a mesh axis the one-axis sampling mesh lacks) fall back to the
  reference implementation, which computes the same function."""
  from absl import logging
  from vdit.model import attention
  m = config.model
  with config.unlocked():
    if attention.backend_error(m.attention):
      logging.warning("model.attention=%r is unavailable here; sampling with 'blockwise' (the same function).",
                      m.attention)
      m.attention = "blockwise"
    if m.context_parallel != "none":
      m.context_parallel = "none"
  return config
