"""Older workdirs' config.json -> today's schema, in one place keyed by the file's format version.

The only place with compatibility defaults: code below the config boundary reads every key as
present. Version 1 (no `config_version` key: every workdir written before the redesign) gains the
keys added since, at the values that reproduce how those runs behaved; version 2 lacks sample.cache
(sampling caches) and model.interval_conditioning (students); version 3 lacks the lora and finetune
sections (LoRA fine-tuning) and distill.dmd_weight; version 4 lacks sample.frame_cfg (separate
guidance for conditioning frames, off before); version 5 lacks text.positions (no position
embeddings before); version 6 is today's.
"""
import copy

from vdit.core.errors import ConfigError

VERSION = 6

# Keys added after version-1 workdirs existed, at the behaviour those workdirs had without them
# (written out here, not read from the schema's defaults, which may change).
_V1_ABSENT_MEANS = {
    "model.prediction": "velocity",
    "model.frame_conditioning": False,
    "model.variant": "vdit",
    "model.attention": "xla",
    "model.context_parallel": "none",
    "model.scan_layers": True,
    "text.encoder": "trainable",
    "text.tokenizer_path": "",
    "latent.vae": "",
    "dcn_mesh.data": 1, "dcn_mesh.fsdp": 1, "dcn_mesh.context": 1, "dcn_mesh.tensor": 1,
    "train.grad_accum_steps": 1,
    "train.peak_tflops_per_device": 0.0,
    "sample.guidance_interval": [0.0, 1.0],
}
_V1_REMOVED = ("data.height", "data.width")  # the sample size moved to sample.num_frames/height/width


def _get(tree: dict, dotted: str):
  node = tree
  for key in dotted.split("."):
    if not isinstance(node, dict) or key not in node:
      return None
    node = node[key]
  return node


def _set(tree: dict, dotted: str, value) -> None:
  *parents, leaf = dotted.split(".")
  for key in parents:
    tree = tree.setdefault(key, {})
  tree[leaf] = value


def _v1_to_v2(raw: dict, shipped_vocab_size: int) -> dict:
  for dotted, value in _V1_ABSENT_MEANS.items():
    if _get(raw, dotted) is None:
      _set(raw, dotted, value)
  sample, data = raw.setdefault("sample", {}), raw.get("data", {})
  for key, old in (("num_frames", "num_frames"), ("height", "height"), ("width", "width")):
    if not sample.get(key) and data.get(old):
      sample[key] = data[old]
  for dotted in _V1_REMOVED:
    parent, _, leaf = dotted.rpartition(".")
    (_get(raw, parent) or {}).pop(leaf, None)
  text = raw.setdefault("text", {})
  if text.get("encoder") == "trainable" and not text.get("vocab_size"):
    text["vocab_size"] = shipped_vocab_size  # 0 meant "the shipped tokenizer's size"
  raw["config_version"] = 2
  return raw


# Keys added after version-2 workdirs existed, at the behaviour those workdirs had without them.
_V2_ABSENT_MEANS = {"sample.cache": "none", "model.interval_conditioning": False, "distill.teacher": ""}


def _v2_to_v3(raw: dict) -> dict:
  for dotted, value in _V2_ABSENT_MEANS.items():
    if _get(raw, dotted) is None:
      _set(raw, dotted, value)
  raw["config_version"] = 3
  return raw


# Version 4 added LoRA fine-tuning; a workdir without the sections has no adapters and no base.
_V3_ABSENT_MEANS = {"lora": {"rank": 0, "alpha": 0.0, "targets": ["self_attn", "cross_attn", "mlp"], "dropout": 0.0},
                    "finetune": {"base": "", "base_step": 0}}


def _v3_to_v4(raw: dict) -> dict:
  for section, values in _V3_ABSENT_MEANS.items():
    raw[section] = {**copy.deepcopy(values), **raw.get(section, {})}
  raw.setdefault("distill", {}).setdefault("dmd_weight", 0.0)  # students before DMD had none
  raw["config_version"] = 4
  return raw


def _v4_to_v5(raw: dict) -> dict:
  raw.setdefault("sample", {}).setdefault("frame_cfg", 0.0)  # off: modes guided frames and text together
  raw["config_version"] = 5
  return raw


def _v5_to_v6(raw: dict) -> dict:
  raw.setdefault("text", {}).setdefault("positions", False)  # the encoder had no position embeddings
  raw["config_version"] = 6
  return raw


def upgrade(raw: dict, source: str = "config.json") -> dict:
  """A config.json's dict, any version -> a copy at VERSION; a newer version is an error."""
  from vdit.text.tokenizer import Tokenizer
  raw = copy.deepcopy(raw)
  version = raw.get("config_version", 1)
  if not isinstance(version, int) or version > VERSION:
    raise ConfigError(f"{source} has config_version={version!r}, newer than this vdit understands ({VERSION}); "
                      "upgrade vdit (pip install -U) to use this workdir.")
  if version == 1:
    raw = _v1_to_v2(raw, Tokenizer.shipped_vocab_size())
  if raw["config_version"] == 2:
    raw = _v2_to_v3(raw)
  if raw["config_version"] == 3:
    raw = _v3_to_v4(raw)
  if raw["config_version"] == 4:
    raw = _v4_to_v5(raw)
  if raw["config_version"] == 5:
    raw = _v5_to_v6(raw)
  return raw
