"""LoRA adapters on the DiT blocks' dense layers (Hu et al. 2021): W x + (alpha / r) B A x.

A fine-tuned model is its frozen base plus, on each targeted layer, A [in..., r] (random) and B
[r, out...] (zero, so training starts at the base exactly), held as `nnx.LoRAParam`s on vdit's own
`Dense` (which keeps logical axis names and multi-dimensional head layouts; Flax's `nnx.LoRA` does
not). The forward pass takes the low-rank path, so no [in, out] update or gradient is ever formed.
Targets name block sub-layers, or groups of them (TARGET_GROUPS), in vdit's names.

Sampling with adapters merges them into the kernels instead (`merge`): W + sum_i s_i (alpha_i / r_i) A_i B_i.
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

# Block sub-layers (vdit names) an adapter can target; groups name several.
LAYERS = ("self_attn.query", "self_attn.key", "self_attn.value", "self_attn.out",
          "cross_attn.query", "cross_attn.key", "cross_attn.value", "cross_attn.out", "mlp.up", "mlp.down")
TARGET_GROUPS = {"self_attn": LAYERS[:4], "cross_attn": LAYERS[4:8], "mlp": LAYERS[8:],
                 "attention": LAYERS[:8], "all": LAYERS}
ADAPTER_LEAVES = ("lora_a", "lora_b")


@dataclasses.dataclass(frozen=True)
class LoRASpec:
  rank: int
  alpha: float  # the update is scaled by alpha / rank (PEFT's lora_alpha)
  targets: tuple[str, ...]  # names in LAYERS or TARGET_GROUPS

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def layers(self) -> tuple[str, ...]:
    return resolve_targets(self.targets)


def resolve_targets(targets) -> tuple[str, ...]:
  """Target names -> block sub-layers, in LAYERS order; ValueError naming an unknown one."""
  chosen = set()
  for name in targets:
    if name in TARGET_GROUPS:
      chosen.update(TARGET_GROUPS[name])
    elif name in LAYERS:
      chosen.add(name)
    else:
      raise ValueError(f"lora.targets: {name!r} is not a layer or group; choose from "
                       f"{sorted(TARGET_GROUPS)} or {list(LAYERS)}.")
  return tuple(layer for layer in LAYERS if layer in chosen)


def attach(block, spec: LoRASpec, rngs: nnx.Rngs, param_dtype=jnp.float32) -> None:
  """Gives the targeted Dense layers of one block an adapter: A ~ PEFT's default (Kaiming-uniform
  over the input), B = 0."""
  for path in spec.layers():
    dense = block
    for name in path.split("."):
      dense = getattr(dense, name)
    kernel = dense.kernel
    in_shape, out_shape = kernel.shape[:dense.num_in], kernel.shape[dense.num_in:]
    axes = kernel.get_metadata()["logical_axes"]
    in_axes, out_axes = axes[:dense.num_in], axes[dense.num_in:]
    init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=tuple(range(dense.num_in)),
                                             out_axis=dense.num_in)
    # nnx.data: Dense declares the attributes as None (static) for models without adapters.
    dense.lora_a = nnx.data(nnx.LoRAParam(init(rngs.params(), in_shape + (spec.rank,), param_dtype),
                                          logical_axes=tuple(in_axes) + ("lora_rank",)))
    dense.lora_b = nnx.data(nnx.LoRAParam(jnp.zeros((spec.rank,) + tuple(out_shape), param_dtype),
                                          logical_axes=("lora_rank",) + tuple(out_axes)))
    dense.lora_scale = spec.scale


def adapter_params(params: dict) -> dict:
  """The adapter leaves (lora_a, lora_b) of a parameter tree, in the same nesting; the rest dropped."""
  kept = {}
  for key, value in params.items():
    if isinstance(value, dict):
      sub = adapter_params(value)
      if sub:
        kept[key] = sub
    elif key in ADAPTER_LEAVES:
      kept[key] = value
  return kept


def without_adapters(params: dict) -> dict:
  """The base's part of a parameter tree: every leaf but the adapters'."""
  return {key: without_adapters(value) if isinstance(value, dict) else value
          for key, value in params.items() if key not in ADAPTER_LEAVES}


def combine(base: dict, adapter: dict) -> dict:
  """One tree from the frozen base and the adapter leaves (disjoint paths)."""
  out = dict(base)
  for key, value in adapter.items():
    out[key] = combine(base.get(key, {}), value) if isinstance(value, dict) else value
  return out


def drop_inputs(adapter: dict, key, rate: float) -> dict:
  """LoRA dropout as a step-level mask: each A's input rows are dropped with probability `rate`
  (and the rest scaled by 1 / (1 - rate)), one mask per layer and step shared by every token,
  which costs no activation memory (PEFT drops per token, on the activations)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(adapter)
  keys = jax.random.split(key, len(leaves))
  out = []
  for (path, leaf), k in zip(leaves, keys):
    if path[-1].key == "lora_a":
      keep = jax.random.bernoulli(k, 1.0 - rate, leaf.shape[:-1] + (1,))
      leaf = jnp.where(keep, leaf / (1.0 - rate), 0.0).astype(leaf.dtype)
    out.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, out)


def low_rank_update(a, b, num_in: int):
  """A [L?, in..., r] @ B [L?, r, out...] -> [L?, in..., out...] (a leading stacked-layers axis kept)."""
  stacked = a.ndim - num_in - 1
  num_out = b.ndim - stacked - 1
  letters = "abcdefghij"
  lead, ins, outs = letters[:stacked], letters[stacked:stacked + num_in], letters[stacked + num_in:][:num_out]
  return jnp.einsum(f"{lead}{ins}r,{lead}r{outs}->{lead}{ins}{outs}", a, b)


def merge(params: dict, adapters) -> dict:
  """`params` with each adapter (a tree of lora_a/lora_b under the Dense paths it targets, with its
  own `scale` already folded in: a list of (tree, factor)) added into the kernels."""
  out = dict(params)
  for key, value in params.items():
    if not isinstance(value, dict):
      continue
    subs = [(tree[key], factor) for tree, factor in adapters if key in tree]
    if not subs:
      continue
    if "kernel" in value and any("lora_a" in sub for sub, _ in subs):
      kernel = value["kernel"]
      for sub, factor in subs:
        num_in = kernel.ndim - sub["lora_b"].ndim + 1  # kernel [L?, in..., out...], B [L?, r, out...]
        update = low_rank_update(sub["lora_a"], sub["lora_b"], num_in)
        kernel = kernel + factor * update.astype(kernel.dtype)
      out[key] = dict(value, kernel=kernel)
    else:
      out[key] = merge(value, subs)
  return out
