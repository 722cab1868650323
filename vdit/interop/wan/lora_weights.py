"""LoRA adapters as files in the diffusers/PEFT convention for `WanTransformer3DModel`.

One safetensors file per adapter: `transformer.blocks.{i}.attn1.to_q.lora_A.weight` [r, in] and
`...lora_B.weight` [out, r] per adapted Linear (attn1/attn2 to_q, to_k, to_v, to_out.0; ffn.net.0.proj,
ffn.net.2), and the PEFT LoraConfig (r, lora_alpha, target_modules, ...) as JSON under the metadata
key `lora_adapter_metadata`, its keys prefixed `transformer.`, as diffusers' `save_lora_weights`
writes it. Reading also takes PEFT's own `save_pretrained` names (`base_model.model.` prefix, with
`adapter_config.json` beside the file), kohya-style `.alpha` tensors, and unprefixed names; without
any alpha the scale is 1 (alpha = rank), as diffusers assumes. vdit's `vdit`-variant DiT has the
same block layers, so its adapters use the same names.

In vdit an adapter is a tree of stacked lora_a [L, in..., r] / lora_b [L, r, out...] under
`dit.blocks.<layer>` (vdit/model/lora.py): heads are split out of the flat Linear dims in C order,
exactly as vdit/interop/wan/dit_weights.py converts the base weights.
"""
import json
import os
import re

import jax
import numpy as np

from vdit.core import weights
from vdit.model import lora as lora_lib

METADATA_KEY = "lora_adapter_metadata"
_PREFIXES = ("transformer.", "base_model.model.", "")
_MODULES = {  # vdit block layer -> diffusers module under blocks.{i}.
    "self_attn.query": "attn1.to_q", "self_attn.key": "attn1.to_k", "self_attn.value": "attn1.to_v",
    "self_attn.out": "attn1.to_out.0", "cross_attn.query": "attn2.to_q", "cross_attn.key": "attn2.to_k",
    "cross_attn.value": "attn2.to_v", "cross_attn.out": "attn2.to_out.0", "mlp.up": "ffn.net.0.proj",
    "mlp.down": "ffn.net.2",
}
_LAYER_OF = {module: layer for layer, module in _MODULES.items()}
_NUM_IN = {"self_attn.out": 2, "cross_attn.out": 2}  # input dims of vdit's kernel: (heads, head_dim); else 1
_NAME_RE = re.compile(r"^blocks\.(\d+)\.(.+)\.(lora_A|lora_B)\.weight$")


class AdapterError(weights.WeightsError):
  pass


def _blocks(params: dict) -> dict:
  return params["dit"]["blocks"]


def _dense(blocks: dict, layer: str) -> dict:
  node = blocks
  for name in layer.split("."):
    node = node[name]
  return node


def save(path: str, adapter: dict, *, rank: int, alpha: float, layers) -> None:
  """Writes a vdit adapter tree (vdit.model.lora.adapter_params of a fine-tuned model) as one
  diffusers/PEFT safetensors file."""
  tensors = {}
  blocks = _blocks(adapter)
  for layer in layers:
    node = _dense(blocks, layer)
    a, b = np.asarray(node["lora_a"], np.float32), np.asarray(node["lora_b"], np.float32)
    for i in range(a.shape[0]):
      name = f"transformer.blocks.{i}.{_MODULES[layer]}"
      tensors[f"{name}.lora_A.weight"] = a[i].reshape(-1, rank).T
      tensors[f"{name}.lora_B.weight"] = b[i].reshape(rank, -1).T
  config = {"r": rank, "lora_alpha": alpha, "target_modules": sorted({_MODULES[layer] for layer in layers}),
            "lora_dropout": 0.0, "bias": "none", "use_dora": False, "use_rslora": False,
            "init_lora_weights": True, "rank_pattern": {}, "alpha_pattern": {}}
  metadata = {"format": "pt", METADATA_KEY: json.dumps({f"transformer.{k}": v for k, v in config.items()},
                                                       sort_keys=True)}
  weights.save(path, tensors, metadata)


def _peft_config(path: str, metadata: dict) -> dict:
  """The LoraConfig fields stored with the file (metadata, or PEFT's adapter_config.json beside it)."""
  if METADATA_KEY in metadata:
    try:
      raw = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as e:
      raise AdapterError(f"{path}: metadata {METADATA_KEY!r} is not JSON ({e}).") from None
    return {k.split(".", 1)[1] if k.startswith("transformer.") else k: v for k, v in raw.items()}
  beside = os.path.join(os.path.dirname(os.path.abspath(path)), "adapter_config.json")
  if os.path.isfile(beside):
    with open(beside, encoding="utf-8") as f:
      return json.load(f)
  return {}


def _strip(name: str) -> str:
  for prefix in _PREFIXES:
    if prefix and name.startswith(prefix):
      return name[len(prefix):]
  return name


def load(path: str, base_params: dict) -> dict:
  """An adapter file -> a vdit adapter tree shaped for `base_params` (the base's parameter tree,
  arrays or ShapeDtypeStructs), each layer's alpha / rank folded into its lora_b; layers the file
  leaves out are zero, ranks that differ are zero-padded (both exact).

  Raises:
    AdapterError: no LoRA tensors, a tensor this DiT has no place for, or the first shape mismatch.
  """
  tensors, metadata = weights.load(path)
  config = _peft_config(path, metadata)
  if config.get("use_dora") or config.get("alpha_pattern"):
    raise AdapterError(f"{path}: DoRA and per-module alpha_pattern adapters are not supported; use a plain LoRA.")
  rslora = bool(config.get("use_rslora"))
  alphas = {_strip(k)[:-len(".alpha")]: float(np.asarray(v)) for k, v in tensors.items() if k.endswith(".alpha")}
  pairs = {}
  for name in sorted(tensors):
    if name.endswith(".alpha"):
      continue
    match = _NAME_RE.match(_strip(name))
    if not match:
      raise AdapterError(f"{path}: tensor {name!r} is not a LoRA tensor of a {len(_MODULES)}-layer Wan block "
                         "(expected e.g. transformer.blocks.0.attn1.to_q.lora_A.weight); is this a LoRA file for "
                         "Wan 2.1 / vdit?")
    i, module, which = int(match[1]), match[2], match[3]
    if module not in _LAYER_OF:
      raise AdapterError(f"{path}: tensor {name!r} adapts {module!r}, which vdit's DiT blocks do not have "
                         f"(adaptable: {', '.join(sorted(_LAYER_OF))}).")
    pairs.setdefault((_LAYER_OF[module], i), {})[which] = (name, np.asarray(tensors[name], np.float32))
  if not pairs:
    raise AdapterError(f"{path} holds no LoRA tensors (names ending in .lora_A.weight / .lora_B.weight); pass an "
                       "adapter file written by vdit.finetune, diffusers or PEFT.")
  blocks = _blocks(base_params)
  depth = blocks["mlp"]["up"]["kernel"].shape[0]
  out = {}
  for layer in lora_lib.LAYERS:
    found = {i: p for (l, i), p in pairs.items() if l == layer}
    if not found:
      continue
    kernel = _dense(blocks, layer)["kernel"]
    shape = tuple(kernel.shape[1:])
    num_in = _NUM_IN.get(layer, 1)
    in_shape, out_shape = shape[:num_in], shape[num_in:]
    ranks = []
    for i, p in sorted(found.items()):
      if i >= depth:
        raise AdapterError(f"{path}: tensor {p[next(iter(p))][0]!r} is for block {i}, but the base has {depth} "
                           "blocks; this adapter was trained for another model.")
      if set(p) != {"lora_A", "lora_B"}:
        raise AdapterError(f"{path}: {next(iter(p.values()))[0]!r} has no lora_{'B' if 'lora_A' in p else 'A'} "
                           "partner.")
      (a_name, a), (b_name, b) = p["lora_A"], p["lora_B"]
      want_a, want_b = (a.shape[0], int(np.prod(in_shape))), (int(np.prod(out_shape)), a.shape[0])
      for name, value, want in ((a_name, a, want_a), (b_name, b, want_b)):
        if value.shape != want:
          raise AdapterError(f"{path}: tensor {name!r} has shape {value.shape}, the base needs {want} (rank "
                             f"{a.shape[0]}); this adapter was trained for another model.")
      ranks.append(a.shape[0])
    rank = max(ranks)
    stacked_a = np.zeros((depth,) + in_shape + (rank,), np.float32)
    stacked_b = np.zeros((depth, rank) + out_shape, np.float32)
    for i, p in found.items():
      a, b = p["lora_A"][1], p["lora_B"][1]
      r = a.shape[0]
      module = f"blocks.{i}.{_MODULES[layer]}"
      alpha = alphas.get(module, float(config.get("lora_alpha", r)))
      factor = alpha / (np.sqrt(r) if rslora else r)
      stacked_a[i, ..., :r] = a.T.reshape(in_shape + (r,))
      stacked_b[i, :r] = (b.T * factor).reshape((r,) + out_shape)
    node = out.setdefault("dit", {}).setdefault("blocks", {})
    for name in layer.split("."):
      node = node.setdefault(name, {})
    node["lora_a"], node["lora_b"] = stacked_a, stacked_b
  return out


def apply(params: dict, specs) -> dict:
  """Base parameters with adapters [(file, scale)] merged into their kernels, sharding kept; every
  file is read and checked before any arithmetic. Scale 0 returns the base's values exactly."""
  trees = [load(path, params) for path, _ in specs]
  scales = [scale for _, scale in specs]
  return jax.jit(lambda p, t: lora_lib.merge(p, list(zip(t, scales))))(params, trees)


def parse_spec(spec: str) -> tuple[str, float]:
  """'FILE[:SCALE]' -> (file, scale); AdapterError if SCALE does not parse."""
  path, sep, scale = spec.rpartition(":")
  if not sep or not path or os.path.isfile(spec):
    return spec, 1.0
  try:
    return path, float(scale)
  except ValueError:
    raise AdapterError(f"--lora={spec}: scale {scale!r} is not a number; write FILE or FILE:SCALE (e.g. "
                       "style.safetensors:0.8).") from None
