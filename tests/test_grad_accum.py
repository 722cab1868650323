"""Gradient accumulation: k microbatches give the update of one full batch."""
import jax
import numpy as np

from tests.tiny import tiny_config
from vdit.parallel import sharding
from vdit.training import train_state
from vdit.text.tokenizer import Tokenizer
from vdit.training.dit_trainer import build_train_step


def _one_step(config, mesh, batch):
  tx = train_state.make_optimizer(config.optim, config.train.num_steps)
  state = train_state.create_state(config, mesh, tx, jax.random.key(0))
  step = build_train_step(config, mesh, tx, Tokenizer(config.text.max_length))
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
  tokens, mask = Tokenizer(base.text.max_length).encode_batch(["a red circle moving left", "a blue square moving up"] * 8)
  batch = {"video": rng.integers(0, 256, (16, 4, 16, 16, 3), dtype=np.uint8), "tokens": tokens, "text_mask": mask}
  full_params, full = _one_step(base, mesh, batch)
  accum = base.copy_and_resolve_references()
  with accum.unlocked():
    accum.train.grad_accum_steps = 2  # 2 rows per device -> 2 microbatches of one row each
  accum_params, accumulated = _one_step(accum, mesh, batch)
  # Tolerance: float32 sums in a different order (per microbatch, then across them).
  np.testing.assert_allclose(accumulated["loss"], full["loss"], rtol=1e-5)
  np.testing.assert_allclose(accumulated["grad_norm"], full["grad_norm"], rtol=1e-4)
  for a, b in zip(jax.tree.leaves(accum_params), jax.tree.leaves(full_params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
