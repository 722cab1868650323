"""Converts released DiT weights to a vdit weights file. Today: Wan 2.1's transformer in diffusers
layout (`WanTransformer3DModel`, text-to-video: no image embedder) -> vdit's DiT with model.variant='wan'.

Launch (the files of e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers/transformer):
  python -m vdit.convert --from=wan2.1 --input=DIR_OR_FILE [--config=config.json] --output=dit.safetensors
or, for the whole pipeline folder -> a workdir vdit.sample uses (vdit/interop/wan/workdir.py):
  python -m vdit.convert --from=wan2.1 --input=Wan2.1-T2V-1.3B-Diffusers --workdir=runs/wan_1p3b

--input is one .safetensors file or a directory of them (sharded checkpoints); --config defaults to
the directory's config.json. The output holds the DiT's parameters under vdit names (float32, the
blocks stacked along a leading depth axis) and, as JSON metadata, the vdit config values that build
the matching DiT (`model_overrides`); load it with `vdit.core.weights.load` + `vdit.core.weights.load_into(dit, ...)`.
Only safetensors and JSON are read (no pickle).

Layout notes (diffusers -> vdit): Linear weights [out, in] are transposed to [in, out] and heads
split out of the projection dims; Conv3d patch embedding [D, C, pt, ph, pw] -> [pt*ph*pw*C, D] (vdit's
patchify order); QK norm scales [H*hd] -> [H, hd]; scale_shift_table [1, k, D] -> [k, D]; time_proj
[6D, D] -> [D, 6, D]. Wan's norm2 (affine, before cross-attention) is vdit's norm_cross.
"""
import glob
import json
import os

import numpy as np
from flax import nnx

from vdit.core import weights
from vdit.core.errors import ConfigError, UserError
from vdit.interop.wan import diffusers_config
from vdit.model.dit import VARIANTS, DiT

SOURCES = ("wan2.1",)
CLASS_NAME = "WanTransformer3DModel"
FORMAT = "vdit.dit"
# diffusers config key -> the one value vdit builds (Wan 2.1 T2V); None: absent or None.
_REQUIRED = {"cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "freq_dim": 256,
             "image_dim": None, "added_kv_proj_dim": None, "pos_embed_seq_len": None}
# Keys that do not change the parameters (rope_max_seq_len only caps diffusers' precomputed table).
_IGNORED = {"rope_max_seq_len"}
_KNOWN = {"patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "text_dim",
          "ffn_dim", "num_layers"} | set(_REQUIRED) | _IGNORED

# Per-block tensors: diffusers name under `blocks.{i}.` -> vdit name under `blocks.` and its kind.
_BLOCK = {
    "norm2.weight": ("norm_cross.scale", "copy"), "norm2.bias": ("norm_cross.bias", "copy"),
    "scale_shift_table": ("modulation", "table"),
    "ffn.net.0.proj.weight": ("mlp.up.kernel", "linear"), "ffn.net.0.proj.bias": ("mlp.up.bias", "copy"),
    "ffn.net.2.weight": ("mlp.down.kernel", "linear"), "ffn.net.2.bias": ("mlp.down.bias", "copy"),
}
for _wan, _vdit in (("attn1", "self_attn"), ("attn2", "cross_attn")):
  for _proj, _name in (("to_q", "query"), ("to_k", "key"), ("to_v", "value")):
    _BLOCK[f"{_wan}.{_proj}.weight"] = (f"{_vdit}.{_name}.kernel", "linear_to_heads")
    _BLOCK[f"{_wan}.{_proj}.bias"] = (f"{_vdit}.{_name}.bias", "heads")
  _BLOCK[f"{_wan}.to_out.0.weight"] = (f"{_vdit}.out.kernel", "linear_from_heads")
  _BLOCK[f"{_wan}.to_out.0.bias"] = (f"{_vdit}.out.bias", "copy")
  _BLOCK[f"{_wan}.norm_q.weight"] = (f"{_vdit}.norm_q.scale", "heads")
  _BLOCK[f"{_wan}.norm_k.weight"] = (f"{_vdit}.norm_k.scale", "heads")
_GLOBAL = {
    "patch_embedding.weight": ("patch_embed.kernel", "conv"), "patch_embedding.bias": ("patch_embed.bias", "copy"),
    "condition_embedder.text_embedder.linear_1.weight": ("text_embed.up.kernel", "linear"),
    "condition_embedder.text_embedder.linear_1.bias": ("text_embed.up.bias", "copy"),
    "condition_embedder.text_embedder.linear_2.weight": ("text_embed.down.kernel", "linear"),
    "condition_embedder.text_embedder.linear_2.bias": ("text_embed.down.bias", "copy"),
    "condition_embedder.time_embedder.linear_1.weight": ("time_embed.up.kernel", "linear"),
    "condition_embedder.time_embedder.linear_1.bias": ("time_embed.up.bias", "copy"),
    "condition_embedder.time_embedder.linear_2.weight": ("time_embed.down.kernel", "linear"),
    "condition_embedder.time_embedder.linear_2.bias": ("time_embed.down.bias", "copy"),
    "condition_embedder.time_proj.weight": ("time_project.kernel", "linear_to_table"),
    "condition_embedder.time_proj.bias": ("time_project.bias", "table"),
    "scale_shift_table": ("head_modulation", "table"),
    "proj_out.weight": ("head.kernel", "linear"), "proj_out.bias": ("head.bias", "copy"),
}


def _listing(names) -> str:
  names = sorted(names)
  return f"{names[:6]}{' ...' if len(names) > 6 else ''} ({len(names)})"


def model_overrides(cfg: dict, source: str = "config") -> dict:
  """vdit config values ({'model.dim': 1536, ..., 'text.dim': 4096}) that build the DiT matching a
  diffusers WanTransformer3DModel config.json's contents.

  Raises:
    ConfigError: naming `source` and the unknown key or the value vdit does not build.
  """
  if cfg.get("_class_name", CLASS_NAME) != CLASS_NAME:
    raise ConfigError(f"{source}: _class_name={cfg['_class_name']!r}, expected {CLASS_NAME!r}.")
  cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
  unknown = sorted(set(cfg) - _KNOWN)
  if unknown:
    raise ConfigError(f"{source}: unknown {CLASS_NAME} config keys {unknown}; known: {sorted(_KNOWN)}.")
  for key, value in _REQUIRED.items():
    if cfg.get(key, value) != value:
      raise ConfigError(f"{source}: {key}={cfg[key]!r} is not supported; vdit builds Wan 2.1 text-to-video "
                        f"({key}={value!r}).")
  heads, head_dim = int(cfg.get("num_attention_heads", 40)), int(cfg.get("attention_head_dim", 128))
  dim, in_channels = heads * head_dim, int(cfg.get("in_channels", 16))
  out_channels = cfg.get("out_channels", 16) or in_channels
  if out_channels != in_channels:
    raise ConfigError(f"{source}: out_channels={out_channels} != in_channels={in_channels}; vdit's DiT predicts "
                      "as many channels as it reads.")
  if head_dim % 2:
    raise ConfigError(f"{source}: attention_head_dim={head_dim} must be even for RoPE.")
  ffn_dim = int(cfg.get("ffn_dim", 13824))
  mlp_ratio = ffn_dim / dim
  if int(dim * mlp_ratio) != ffn_dim:
    raise ConfigError(f"{source}: ffn_dim={ffn_dim} is not reachable as int(dim * mlp_ratio) for dim {dim}.")
  return {"model.variant": "wan", "model.in_channels": in_channels,
          "model.patch_size": tuple(int(p) for p in cfg.get("patch_size", (1, 2, 2))), "model.dim": dim,
          "model.depth": int(cfg.get("num_layers", 40)), "model.num_heads": heads, "model.mlp_ratio": mlp_ratio,
          "model.rope_theta": 10000.0, "text.dim": int(cfg.get("text_dim", 4096))}


def build_dit(overrides: dict, rngs=None, abstract: bool = False) -> DiT:
  """The vdit DiT for `model_overrides(...)` (float32); `abstract`: shapes only, no compute."""
  o = overrides
  make = lambda r: DiT(in_channels=o["model.in_channels"], patch_size=o["model.patch_size"], dim=o["model.dim"],
                       depth=o["model.depth"], num_heads=o["model.num_heads"], mlp_ratio=o["model.mlp_ratio"],
                       text_dim=o["text.dim"], rope_theta=o["model.rope_theta"], rngs=r,
                       **VARIANTS[o["model.variant"]])
  if abstract:
    return nnx.eval_shape(lambda: make(nnx.Rngs(0)))
  return make(rngs or nnx.Rngs(0))


def _transform(kind: str, value: np.ndarray, heads: int) -> np.ndarray:
  if kind == "copy":
    return value
  if kind == "table":  # [1, k, D] or [k*D] -> [k, D]
    return value.reshape(-1, value.shape[-1]) if value.ndim == 3 else value.reshape(6, -1)
  if kind == "linear":
    return value.T
  if kind == "heads":  # [H*hd] -> [H, hd]
    return value.reshape(heads, -1)
  if kind == "linear_to_heads":  # [H*hd, in] -> [in, H, hd]
    return value.T.reshape(value.shape[1], heads, -1)
  if kind == "linear_from_heads":  # [out, H*hd] -> [H, hd, out]
    return value.T.reshape(heads, -1, value.shape[0])
  if kind == "linear_to_table":  # [6D, D] -> [D, 6, D]
    return value.T.reshape(value.shape[1], 6, -1)
  if kind == "conv":  # [D, C, pt, ph, pw] -> [pt*ph*pw*C, D]
    return value.transpose(2, 3, 4, 1, 0).reshape(-1, value.shape[0])
  raise AssertionError(kind)


def convert_state_dict(tensors: dict, overrides: dict, source: str = "checkpoint") -> dict:
  """Maps a diffusers WanTransformer3DModel state dict ({name: array}) to vdit DiT tensors (float32).

  Raises:
    weights.WeightsError: naming `source` and the unknown, missing or mis-shaped tensors (diffusers names).
  """
  depth, heads = overrides["model.depth"], overrides["model.num_heads"]
  abstract = build_dit(overrides, abstract=True)
  expected = {".".join(map(str, p)): tuple(v.get_value().shape)
              for p, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
  wanted = dict(_GLOBAL)
  for i in range(depth):
    wanted.update({f"blocks.{i}.{k}": (f"blocks.{v}", kind, i) for k, (v, kind) in _BLOCK.items()})
  unknown = sorted(set(tensors) - set(wanted))
  missing = sorted(set(wanted) - set(tensors))
  if unknown or missing:
    hint = (" (an image-to-video checkpoint? vdit converts Wan 2.1 text-to-video)"
            if any("add_k_proj" in n or "image_embedder" in n for n in unknown) else "")
    raise weights.WeightsError(f"{source} does not match {CLASS_NAME}: missing tensors {_listing(missing)}, "
                               f"unknown tensors {_listing(unknown)}{hint}; check that --config is the "
                               "config.json of these weights.")
  converted, per_layer = {}, {}
  for name, (target, kind, *layer) in wanted.items():
    value = np.asarray(tensors[name], np.float32)
    try:
      value = _transform(kind, value, heads)
    except ValueError:
      value = None
    want = expected[target][1:] if layer else expected[target]
    if value is None or value.shape != want:
      raise weights.WeightsError(f"{source}: tensor {name!r} has shape {tuple(np.shape(tensors[name]))}, which "
                                 f"does not give vdit's {target!r} {want} for this config; check that --config "
                                 "is the config.json of these weights.")
    if layer:
      per_layer.setdefault(target, [None] * depth)[layer[0]] = value
    else:
      converted[target] = np.ascontiguousarray(value)
  converted.update({k: np.stack(v) for k, v in per_layer.items()})
  return converted


def read_config(path: str) -> dict:
  """model_overrides of a diffusers config.json; ConfigError naming the file if absent or unreadable."""
  return model_overrides(diffusers_config.read(path, "the transformer's"), f"Config file {path!r}")


def read_weights(path: str) -> dict:
  """{name: array} of one safetensors file or every *.safetensors file of a directory (shards)."""
  files = sorted(glob.glob(os.path.join(path, "*.safetensors"))) if os.path.isdir(path) else [path]
  if not files:
    raise weights.WeightsError(f"Directory {path!r} has no .safetensors files; pass the transformer's directory "
                               "or its .safetensors file.")
  tensors = {}
  for file in files:
    shard, _ = weights.load(file)
    clash = sorted(set(shard) & set(tensors))
    if clash:
      raise weights.WeightsError(f"Weights file {file!r} repeats tensors of another shard: {_listing(clash)}.")
    tensors.update(shard)
  return tensors


def convert(source: str, input_path: str, config_path: str | None, output_path: str) -> dict:
  """Reads a diffusers transformer (safetensors + config.json), writes the vdit file; returns the
  vdit config overrides that build the matching model."""
  if source not in SOURCES:
    raise UserError(f"--from={source!r} is not a known source; choose one of {SOURCES}.")
  if not config_path:
    if not os.path.isdir(input_path):
      raise UserError(f"--config is required when --input ({input_path!r}) is a file.")
    config_path = os.path.join(input_path, "config.json")
  overrides = read_config(config_path)
  converted = convert_state_dict(read_weights(input_path), overrides, f"Weights {input_path!r}")
  weights.save(output_path, converted, {"format": FORMAT, "source": source,
                                        "model_overrides": json.dumps(overrides)})
  return overrides


def load_dit(path: str) -> DiT:
  """The DiT of a file written by `convert`, with its weights (float32)."""
  tensors, metadata = weights.load(path)
  if metadata.get("format") != FORMAT:
    raise weights.WeightsError(f"Weights file {path!r} is not a vdit DiT file (format {metadata.get('format')!r}); "
                               "write one with `python -m vdit.convert`.")
  overrides = json.loads(metadata["model_overrides"])
  overrides["model.patch_size"] = tuple(overrides["model.patch_size"])
  dit = build_dit(overrides, abstract=True)
  weights.load_into(dit, tensors, f"Weights file {path!r}")
  return dit
