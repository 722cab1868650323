"""Evaluation configs at the boundary: loading `path.py[:arg]` files and validating them."""
import importlib.util
import os

from vdit.core.errors import ConfigError
from vdit.diffusion.caching import MODES as CACHE_MODES

FEATURE_KINDS = ("toy", "i3d")
ALIGNMENT_KINDS = ("toy", "")


def load(spec: str):
  """Runs `get_config(arg)` of an eval config file named as 'configs/evals/NAME.py[:arg]'."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"Eval config {path!r} does not exist; pass e.g. --eval=configs/evals/toy.py.")
  module_spec = importlib.util.spec_from_file_location(f"_vdit_eval_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"Eval config {path!r} has no get_config(arg) function.")
  try:
    return module.get_config(arg or None)
  except ValueError as e:
    raise ConfigError(f"Eval config {spec!r}: {e}") from None


def apply_overrides(config, overrides: str):
  """Sets 'a.b=value,c=value' on a (locked) eval config; values parse as JSON where they can
  (numbers, true/false, lists), else stay strings. Unknown keys are a ConfigError."""
  import json
  for item in filter(None, (overrides or "").split(",")):
    key, sep, raw = item.partition("=")
    if not sep:
      raise ConfigError(f"Eval override {item!r} is not key=value.")
    try:
      value = json.loads(raw)
    except ValueError:
      value = raw
    node, *parents = config, *key.split(".")[:-1]
    try:
      for p in parents:
        node = node[p]
      if isinstance(node[key.split(".")[-1]], tuple) and isinstance(value, list):
        value = tuple(value)
      node[key.split(".")[-1]] = value
    except (KeyError, AttributeError, TypeError) as e:
      raise ConfigError(f"Eval override {item!r}: {e}") from None
  return config


def _require(ok: bool, message: str):
  if not ok:
    raise ConfigError(f"eval config: {message}")


def validate(c) -> None:
  """One clear message per bad value, before anything is loaded or sampled."""
  _require(bool(c.name) and "/" not in c.name, f"name={c.name!r} must be a non-empty folder name.")
  _require(c.features.kind in FEATURE_KINDS, f"features.kind={c.features.kind!r}; choose one of {FEATURE_KINDS}.")
  _require(c.alignment.kind in ALIGNMENT_KINDS,
           f"alignment.kind={c.alignment.kind!r}; choose one of {ALIGNMENT_KINDS} ('' turns it off).")
  needs_features = any(c.metrics[m] for m in ("fvd", "fid", "kid", "temporal"))
  _require(not needs_features or bool(c.features.path),
           "features.path is empty; give the feature network's weights file (e.g. "
           "runs/toy_features.safetensors from python -m vdit.eval.train_toy_features).")
  _require(not (c.metrics.fid or c.metrics.temporal) or c.features.kind == "toy",
           f"metrics.fid and metrics.temporal need per-frame features, which features.kind="
           f"{c.features.kind!r} does not give; use the toy network or set them to False.")
  _require(not c.metrics.alignment or c.alignment.kind,
           "metrics.alignment needs alignment encoders (alignment.kind='toy'); or set it to False.")
  needs_reference = any(c.metrics[m] for m in ("fvd", "fid", "kid", "val_loss")) or c.prompts in ("toy", "reference")
  _require(not needs_reference or bool(c.reference_dir),
           "reference_dir is empty; give a prepared data dir of real clips (data_prep.ingest or "
           "data_prep.toy_world --split=eval).")
  _require(c.prompts in ("toy", "reference") or os.path.isfile(c.prompts),
           f"prompts={c.prompts!r} is neither 'toy', 'reference' nor an existing prompts file.")
  _require(c.num_reference > 0 and c.num_prompts > 0, "num_reference and num_prompts must be > 0.")
  _require(c.kid.subset_size >= 2 and c.kid.num_subsets >= 1, "kid.subset_size >= 2 and kid.num_subsets >= 1.")
  _require(all(0.0 < t <= 1.0 for t in c.val.timesteps) and len(c.val.timesteps) > 0,
           f"val.timesteps={tuple(c.val.timesteps)} must be times in (0, 1].")
  _require(c.val.num_clips > 0 and c.val.batch_size > 0 and c.sample.batch_size > 0,
           "val.num_clips, val.batch_size and sample.batch_size must be > 0.")
  _require(c.sample.cache in ("",) + CACHE_MODES,
           f"sample.cache={c.sample.cache!r}; choose one of {('',) + CACHE_MODES} ('': the model's).")
  _require(c.gallery.max_videos >= 0 and c.gallery.scale >= 1 and c.gallery.fps > 0,
           "gallery.max_videos >= 0, gallery.scale >= 1 and gallery.fps > 0.")
  if c.safety.policy:
    from vdit.safety import policy
    policy.load(c.safety.policy)  # a missing or malformed policy: one line naming the file and line
