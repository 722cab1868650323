"""Hugging Face T5 / umT5 encoder checkpoints (config.json + safetensors) -> `T5Encoder`.

A checkpoint is given by path: a directory holding config.json and either model.safetensors or
model.safetensors.index.json with its shards (what `save_pretrained` writes, e.g. the
`text_encoder/` folder of a diffusers repo), or one of those files directly (config.json is then
read from the same folder). Full encoder-decoder checkpoints load too: `decoder.*` and `lm_head.*`
tensors are skipped. HF Linear weights are [out, in]; vdit kernels are [in, out] with heads split
([d_model, heads, d_kv] and [heads, d_kv, d_model]).

Every mismatch (a missing, unexpected or misshapen tensor, a bad config.json or index) is one
`WeightsError` naming the file and the tensor. Files are read through `vdit.core.weights` (the one
safetensors importer), one shard at a time; the network is built abstractly (no random init of
billions of parameters), cast to `param_dtype` (bfloat16 for umT5-XXL) and, given a mesh, placed
sharded by its logical axes.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdit.parallel import sharding
from vdit.core import weights
from vdit.text.t5 import T5Config, T5ConfigError, T5Encoder
from vdit.core.weights import WeightsError

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_SKIPPED_PREFIXES = ("decoder.", "lm_head.")
_EMBED_ALIASES = ("shared.weight", "encoder.embed_tokens.weight")  # tied; either one is the table


def read_config(path: str) -> T5Config:
  """T5Config from a Hugging Face config.json; WeightsError naming the file if it is not one."""
  try:
    with open(path, encoding="utf-8") as f:
      d = json.load(f)
  except FileNotFoundError:
    raise WeightsError(f"T5 config {path!r} does not exist; the checkpoint folder needs the "
                       "config.json written by save_pretrained.") from None
  except (OSError, ValueError) as e:
    raise WeightsError(f"T5 config {path!r} is not readable JSON ({e}).") from None
  if not isinstance(d, dict):
    raise WeightsError(f"T5 config {path!r} is not a JSON object.")
  try:
    return T5Config.from_dict(d, source=path)
  except T5ConfigError as e:
    raise WeightsError(str(e)) from None


def _split_heads_in(w, cfg):  # HF [heads*d_kv, d_model] -> [d_model, heads, d_kv]
  return w.T.reshape(cfg.d_model, cfg.num_heads, cfg.d_kv)


def _split_heads_out(w, cfg):  # HF [d_model, heads*d_kv] -> [heads, d_kv, d_model]
  return w.T.reshape(cfg.num_heads, cfg.d_kv, cfg.d_model)


def _transpose(w, cfg):
  del cfg
  return w.T


def _same(w, cfg):
  del cfg
  return w


def tensor_specs(cfg: T5Config) -> dict:
  """{HF name: (vdit name, HF shape, HF -> vdit function)} for every tensor of the encoder."""
  d, inner, f = cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff
  specs = {"shared.weight": ("embed.table", (cfg.vocab_size, d), _same),
           "encoder.final_layer_norm.weight": ("final_norm.scale", (d,), _same)}
  for i in range(cfg.num_layers):
    hf, ours = f"encoder.block.{i}.layer", f"layers.{i}"
    specs[f"{hf}.0.layer_norm.weight"] = (f"{ours}.attn_norm.scale", (d,), _same)
    for name in "qkv":
      specs[f"{hf}.0.SelfAttention.{name}.weight"] = (f"{ours}.attn.{name}.kernel", (inner, d), _split_heads_in)
    specs[f"{hf}.0.SelfAttention.o.weight"] = (f"{ours}.attn.o.kernel", (d, inner), _split_heads_out)
    if cfg.bias_per_layer or i == 0:
      specs[f"{hf}.0.SelfAttention.relative_attention_bias.weight"] = (
          f"{ours}.attn.relative_bias", (cfg.relative_attention_num_buckets, cfg.num_heads), _same)
    specs[f"{hf}.1.layer_norm.weight"] = (f"{ours}.ffn_norm.scale", (d,), _same)
    for name in (("wi_0", "wi_1") if cfg.gated else ("wi",)):
      specs[f"{hf}.1.DenseReluDense.{name}.weight"] = (f"{ours}.ffn.{name}.kernel", (f, d), _transpose)
    specs[f"{hf}.1.DenseReluDense.wo.weight"] = (f"{ours}.ffn.wo.kernel", (d, f), _transpose)
  return specs


def checkpoint_files(path: str) -> tuple[str, list[str], dict]:
  """(config.json path, safetensors files, {tensor: file} from the index or {}) for a checkpoint path."""
  if os.path.isdir(path):
    folder = path
    index = os.path.join(path, INDEX_FILE)
    if not os.path.isfile(index):
      single = os.path.join(path, SINGLE_FILE)
      if not os.path.isfile(single):
        raise WeightsError(f"T5 checkpoint folder {path!r} has neither {SINGLE_FILE} nor {INDEX_FILE}; "
                           "pass a folder written by save_pretrained(safe_serialization=True).")
      return os.path.join(folder, CONFIG_FILE), [single], {}
  elif os.path.isfile(path):
    folder = os.path.dirname(os.path.abspath(path))
    if not path.endswith(".json"):
      return os.path.join(folder, CONFIG_FILE), [path], {}
    index = path
  else:
    raise WeightsError(f"T5 checkpoint {path!r} does not exist; pass its folder, a .safetensors file "
                       f"or its {INDEX_FILE}.")
  try:
    with open(index, encoding="utf-8") as f:
      weight_map = json.load(f)["weight_map"]
    weight_map = {str(k): os.path.join(folder, str(v)) for k, v in weight_map.items()}
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise WeightsError(f"Index {index!r} is not a safetensors index with a 'weight_map' ({e!r}).") from None
  return os.path.join(folder, CONFIG_FILE), sorted(set(weight_map.values())), weight_map


def convert(files_tensors, cfg: T5Config, param_dtype, source: str) -> dict:
  """HF tensors -> vdit names, checked against `cfg` and cast to `param_dtype`.

  Args:
    files_tensors: iterable of (file path, {HF name: array}); consumed one file at a time.
    source: names the checkpoint in the missing-tensor error.
  """
  specs = tensor_specs(cfg)
  out, origin = {}, {}
  for file, tensors in files_tensors:
    for name in sorted(tensors):
      if name.startswith(_SKIPPED_PREFIXES):
        continue
      key = "shared.weight" if name in _EMBED_ALIASES else name
      if key not in specs:
        raise WeightsError(f"{file}: unexpected tensor {name!r}: not part of a {cfg.model_type} encoder with "
                           f"{cfg.num_layers} layers and feed_forward_proj={cfg.feed_forward_proj!r}; check "
                           "that config.json belongs to these weights.")
      ours, shape, fn = specs[key]
      if name in origin:
        raise WeightsError(f"{file}: tensor {name!r} also appears in {origin[name]!r}.")
      origin[name] = file
      if ours in out:  # the tied embedding under its other name
        continue
      value = tensors[name]
      if tuple(value.shape) != shape:
        raise WeightsError(f"{file}: tensor {name!r} has shape {tuple(value.shape)}, the config expects {shape}.")
      if not np.issubdtype(value.dtype, np.floating) and value.dtype != jnp.bfloat16:
        raise WeightsError(f"{file}: tensor {name!r} has dtype {value.dtype}, expected a float type.")
      out[ours] = np.ascontiguousarray(fn(value, cfg)).astype(param_dtype)
  missing = [name for name, (ours, _, _) in specs.items() if ours not in out]
  if missing:
    raise WeightsError(f"{source}: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                       f"({len(missing)} of {len(specs)}); check that the checkpoint is a complete "
                       f"{cfg.model_type} encoder matching config.json.")
  return out


def _read_files(files, weight_map):
  for file in files:
    tensors, _ = weights.load(file)
    if weight_map:
      listed = {k for k, v in weight_map.items() if v == file}
      absent = sorted(listed - set(tensors))
      if absent:
        raise WeightsError(f"{file}: missing tensor {absent[0]!r} that the index lists in this file "
                           f"({len(absent)} missing).")
    yield file, tensors


def load_encoder(path: str, *, param_dtype=jnp.float32, dtype=None, mesh=None,
                 rules=sharding.DEFAULT_RULES, config_path: str | None = None) -> T5Encoder:
  """A T5Encoder with the weights of a Hugging Face T5/umT5 checkpoint.

  Args:
    path: checkpoint folder, .safetensors file or model.safetensors.index.json.
    param_dtype: parameter dtype (tensors are cast; bfloat16 halves umT5-XXL to ~11 GB).
    dtype: compute dtype (default: param_dtype); norms and softmax stay float32.
    mesh: place parameters sharded over it by their logical axes (default: the default device).
    rules: logical-axis rules for `mesh`.
    config_path: config.json if not next to the weights.

  Raises:
    WeightsError: naming the file and tensor of any mismatch.
  """
  default_config, files, weight_map = checkpoint_files(path)
  cfg = read_config(config_path or default_config)
  dtype = param_dtype if dtype is None else dtype
  model = nnx.eval_shape(lambda: T5Encoder(cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype))
  tensors = convert(_read_files(files, weight_map), cfg, np.dtype(param_dtype), source=path)
  weights.load_into(model, tensors, source=path)
  del tensors
  state = nnx.state(model, nnx.Param)
  values = nnx.to_pure_dict(state)
  if mesh is None:
    values = jax.device_put(values)
  else:
    values = jax.device_put(values, sharding.state_shardings(state, mesh, rules))
  nnx.replace_by_pure_dict(state, values)
  nnx.update(model, state)
  return model


def to_hf_tensors(model: T5Encoder) -> dict:
  """{HF name: np.ndarray} of a T5Encoder (the inverse of `convert`; for tests and export)."""
  cfg = model.config
  ours = weights.module_tensors(model)
  out = {}
  for hf_name, (name, shape, fn) in tensor_specs(cfg).items():
    value = ours[name]
    if fn is _split_heads_in:
      value = value.reshape(cfg.d_model, -1).T
    elif fn is _split_heads_out:
      value = value.reshape(-1, cfg.d_model).T
    elif fn is _transpose:
      value = value.T
    out[hf_name] = np.ascontiguousarray(value).reshape(shape)
  return out
