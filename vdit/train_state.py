"""The train state as a pure-dict pytree, created directly sharded on the mesh.

state = {"params": ..., "ema": ..., "opt_state": ..., "step": int32}. Parameter shardings come from
each parameter's logical axes and the rules table; the optimizer state mirrors its parameters.
"""
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from vdit import sharding
from vdit.model.factory import build_model


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


def abstract_model(config):
  """(graphdef, abstract param State with logical-axis metadata), without allocating anything."""
  model = nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise ValueError("The model has non-parameter state; the train state only carries nnx.Param.")
  return graphdef, params


def param_shardings(config, mesh, rules=sharding.DEFAULT_RULES):
  _, params = abstract_model(config)
  return sharding.state_shardings(params, mesh, rules)


def abstract_params(config, mesh, rules=sharding.DEFAULT_RULES) -> dict:
  """ShapeDtypeStructs with shardings for the parameters alone (restore targets for sampling)."""
  shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
                      param_shardings(config, mesh, rules))


def state_shardings(config, mesh, tx, rules=sharding.DEFAULT_RULES) -> dict:
  params = param_shardings(config, mesh, rules)
  replicated = NamedSharding(mesh, P())
  abstract_params = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  opt = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, params,
                              transform_non_params=lambda _: replicated)
  return {"params": params, "ema": params, "opt_state": opt, "step": replicated}


def init_params(config, key) -> dict:
  model = build_model(config, nnx.Rngs(key))
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def initial_state(config, tx, key) -> dict:
  params = init_params(config, key)
  return {"params": params, "ema": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}


def create_state(config, mesh, tx, key, rules=sharding.DEFAULT_RULES) -> dict:
  """Initialises the full train state inside jit with out_shardings: no host-side full copy."""
  shardings = state_shardings(config, mesh, tx, rules)
  with jax.set_mesh(mesh):
    return jax.jit(lambda k: initial_state(config, tx, k), out_shardings=shardings)(key)


def abstract_state(config, mesh, tx, rules=sharding.DEFAULT_RULES) -> dict:
  """ShapeDtypeStructs with shardings for the whole state (restore targets, AOT checks)."""
  shardings = state_shardings(config, mesh, tx, rules)
  shapes = jax.eval_shape(lambda k: initial_state(config, tx, k), jax.random.key(0))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
