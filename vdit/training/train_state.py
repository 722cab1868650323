"""The train state as a pure-dict pytree, created directly sharded on the mesh.

state = {"params": ..., "ema": ..., "opt_state": ..., "step": int32}. Parameter shardings come from
each parameter's logical axes and the rules table; the optimizer state mirrors its parameters.
With LoRA (config.lora.rank > 0) the state's parameters are the adapters alone: the frozen base
is an argument of the step, never trained, checkpointed or written.
"""
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from vdit.core.memo import per_frozen_config
from vdit.parallel import sharding
from vdit.model import lora
from vdit.model.factory import init_params, param_shapes, param_shardings


def trainable(config, params: dict) -> dict:
  """The parameters a run trains: all of them, or with LoRA the adapters alone."""
  return lora.adapter_params(params) if config.lora.rank else params


def make_optimizer(optim_config, num_steps: int) -> optax.GradientTransformation:
  """AdamW with linear warmup + cosine decay and global-norm clipping; no decay on vectors."""
  schedule = learning_rate_schedule(optim_config, num_steps)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  return optax.chain(
      optax.clip_by_global_norm(optim_config.clip_norm),
      optax.adamw(schedule, b1=optim_config.b1, b2=optim_config.b2, weight_decay=optim_config.weight_decay,
                  mask=decay_mask),
  )


def learning_rate_schedule(optim_config, num_steps: int):
  warmup = min(optim_config.warmup_steps, max(num_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim_config.peak_lr, warmup_steps=warmup,
      decay_steps=max(num_steps, warmup + 1), end_value=optim_config.peak_lr * optim_config.end_lr_fraction)


@per_frozen_config
def state_shardings(config, mesh, tx, rules=sharding.DEFAULT_RULES) -> dict:
  params = trainable(config, param_shardings(config, mesh, rules))
  replicated = NamedSharding(mesh, P())
  abstract_opt = jax.eval_shape(tx.init, trainable(config, param_shapes(config)))
  opt = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, params,
                              transform_non_params=lambda _: replicated)
  shardings = {"params": params, "ema": params, "opt_state": opt, "step": replicated}
  if dmd(config):
    shardings["aux"] = {"fake": params, "fake_opt": opt}
  return shardings


def dmd(config) -> bool:
  """A distillation with the DMD regulariser: its state also holds the fake-score network."""
  return config.distill.dmd_weight > 0


def with_aux(config, tx, state: dict) -> dict:
  """`state` plus, under DMD, the fake-score network (the student's shape, starting as the student
  does) and its optimizer state, as the state's `aux` item."""
  if not dmd(config):
    return state
  return {**state, "aux": {"fake": state["params"], "fake_opt": tx.init(state["params"])}}


def initial_state(config, tx, key) -> dict:
  return _state_of(config, tx, trainable(config, init_params(config, key)))


def _state_of(config, tx, params: dict) -> dict:
  return with_aux(config, tx, {"params": params, "ema": params, "opt_state": tx.init(params),
                               "step": jnp.zeros((), jnp.int32)})


def create_state(config, mesh, tx, key, rules=sharding.DEFAULT_RULES) -> dict:
  """Initialises the full train state inside jit with out_shardings: no host-side full copy."""
  shardings = state_shardings(config, mesh, tx, rules)
  with jax.set_mesh(mesh):
    return jax.jit(lambda k: initial_state(config, tx, k), out_shardings=shardings)(key)


def abstract_state(config, mesh, tx, rules=sharding.DEFAULT_RULES) -> dict:
  """ShapeDtypeStructs with shardings for the whole state (restore targets, AOT checks)."""
  shardings = state_shardings(config, mesh, tx, rules)
  shapes = jax.eval_shape(lambda params: _state_of(config, tx, params), trainable(config, param_shapes(config)))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
