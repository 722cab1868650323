"""Gradient accumulation: k microbatches give the update of one full batch."""
import jax
import numpy as np
from flax import nnx

from tests.tiny import tiny_config
from vdit.config import experiment
from vdit.model import factory
from vdit.parallel import sharding
from vdit.training import train_state
from vdit.text.tokenizer import Tokenizer
from vdit.training.dit_trainer import build_train_step


def _host_state(config, tx) -> dict:
  """A train state with random parameters drawn on the host (no initialisation program to compile):
  norm scales near 1, everything else N(0, 0.1^2), so every parameter has a gradient (at init the
  zero-initialised head and gates leave most of them at zero)."""
  _, abstract = factory.abstract_model(config)
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    base = 1.0 if "scale" in jax.tree_util.keystr(path) else 0.0
    return (base + 0.1 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

  # NumPy arrays: each use below becomes its own device buffer (the step donates params and ema).
  params = jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(abstract))
  return jax.device_get({"params": params, "ema": params, "opt_state": tx.init(params), "step": np.int32(0)})


def _one_step(config, mesh, state, batch):
  tx = train_state.make_optimizer(config.optim, config.train.num_steps)
  step = build_train_step(config, mesh, tx, Tokenizer(config.text.max_length))
  state = jax.device_put(state, train_state.state_shardings(config, mesh, tx))  # donated below
  batch = {k: jax.device_put(v, sharding.batch_sharding(mesh, v.ndim)) for k, v in batch.items()}
  with jax.set_mesh(mesh):
    state, metrics = step(state, batch, jax.random.key(3))
  return jax.device_get(state["params"]), {k: float(v) for k, v in metrics.items()}


def test_accumulated_step_equals_full_batch_step():
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2})
  rng = np.random.default_rng(0)
  base = tiny_config()  # frame conditioning on: the loss normalises over generated frames only
  with base.unlocked():
    base.train.global_batch_size = 16
    base.model.depth = 1
    # Word embeddings only (the toy config's text encoder): accumulation splits the batch before the
    # model, so a text block would only add compile time.
    base.text.depth = 0
  tokens, mask = Tokenizer(base.text.max_length).encode_batch(["a red circle moving left", "a blue square moving up"] * 8)
  batch = {"video": rng.integers(0, 256, (16, 4, 16, 16, 3), dtype=np.uint8), "tokens": tokens, "text_mask": mask}
  accum = base.copy_and_resolve_references()
  with accum.unlocked():
    accum.train.grad_accum_steps = 2  # 2 rows per device -> 2 microbatches of one row each
  # Frozen as the trainer gets them: the model and state shapes traced from each are memoised.
  base, accum = experiment.freeze(base), experiment.freeze(accum)
  state = _host_state(base, train_state.make_optimizer(base.optim, base.train.num_steps))  # accumulation changes no state
  full_params, full = _one_step(base, mesh, state, batch)
  accum_params, accumulated = _one_step(accum, mesh, state, batch)
  # Tolerance: float32 sums in a different order (per microbatch, then across them).
  np.testing.assert_allclose(accumulated["loss"], full["loss"], rtol=1e-5)
  np.testing.assert_allclose(accumulated["grad_norm"], full["grad_norm"], rtol=1e-4)
  for a, b in zip(jax.tree.leaves(accum_params), jax.tree.leaves(full_params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
