"""Experiment configs at the boundary: validation, the copy kept in the workdir, model signatures.

The workdir's `config.json` is what `vdit.sample` and evals rebuild the model from, so a workdir is
self-describing and never depends on the config file still existing.
"""
import json
import os

import ml_collections

from vdit.diffusion import conditioning
from vdit.diffusion.flow import TIMESTEP_SAMPLERS
from vdit.diffusion.samplers import SAMPLERS
from vdit.model.dit import REMAT_POLICIES
from vdit.model.factory import DTYPES, PREDICTIONS

CONFIG_FILE = "config.json"
# Settings that change how a model runs but not its parameters; a checkpoint stays compatible.
_RUNTIME_ONLY = {"model.remat", "model.dtype", "text.caption_dropout", "text.max_length"}
# Settings added after checkpoints existed: left out of the signature at their old behaviour, so
# those checkpoints still match.
_OMITTED_AT = {"model.frame_conditioning": False}


class ConfigError(ValueError):
  pass


def _require(ok: bool, message: str):
  if not ok:
    raise ConfigError(message)


def validate(config) -> None:
  """Checks values a typo-proof (locked) config can still get wrong; one clear message each."""
  m, t, tr = config.model, config.text, config.train
  _require(m.remat in REMAT_POLICIES, f"config.model.remat={m.remat!r}; choose one of {sorted(REMAT_POLICIES)}.")
  _require(m.prediction in PREDICTIONS, f"config.model.prediction={m.prediction!r}; choose one of {PREDICTIONS}.")
  for key in ("dtype", "param_dtype"):
    _require(m[key] in DTYPES, f"config.model.{key}={m[key]!r}; choose one of {sorted(DTYPES)}.")
  _require(len(m.patch_size) == 3 and all(int(p) > 0 for p in m.patch_size),
           f"config.model.patch_size={tuple(m.patch_size)} must be three positive ints (t, h, w).")
  _require(m.dim % m.num_heads == 0, f"config.model.dim={m.dim} must be divisible by num_heads={m.num_heads}.")
  _require((m.dim // m.num_heads) % 2 == 0, "config.model head dim (dim / num_heads) must be even for RoPE.")
  _require(t.dim % t.num_heads == 0, f"config.text.dim={t.dim} must be divisible by num_heads={t.num_heads}.")
  _require(0.0 <= t.caption_dropout < 1.0, f"config.text.caption_dropout={t.caption_dropout} must be in [0, 1).")
  _require(config.diffusion.timestep_sampling in TIMESTEP_SAMPLERS,
           f"config.diffusion.timestep_sampling={config.diffusion.timestep_sampling!r}; "
           f"choose one of {TIMESTEP_SAMPLERS}.")
  _require(config.sample.sampler in SAMPLERS, f"config.sample.sampler={config.sample.sampler!r}; choose one of {SAMPLERS}.")
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


def model_signature(config) -> dict:
  """Flat {'model.dim': 128, ...} of every setting that determines the parameters' shapes."""
  flat = {}
  for section in ("model", "text"):
    for key, value in config[section].items():
      name = f"{section}.{key}"
      if name not in _RUNTIME_ONLY and not (name in _OMITTED_AT and value == _OMITTED_AT[name]):
        flat[name] = list(value) if isinstance(value, (tuple, list)) else value
  return flat


def save(config, workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(tmp, path)


def load(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ConfigError(f"No {CONFIG_FILE} in workdir {workdir!r}: is this a vdit training workdir? "
                      "Train with `python -m vdit.main --config=... --workdir=DIR` first.")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  config.model.patch_size = tuple(config.model.patch_size)
  config.sample.prompts = tuple(config.sample.prompts)
  return config
