"""Sharding: mesh construction, rules, a sharded step equal to the single-device step, FSDP coverage."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import dit_xl, wan_1p3b
from tests.tiny import tiny_config
from vdit import sharding, train_state
from vdit.diffusion import flow
from vdit.text.tokenizer import Tokenizer
from vdit.train import build_train_step
from vdit.train_step import video_to_model_space


def test_make_mesh_fills_and_rejects_bad_shapes():
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  with pytest.raises(sharding.MeshConfigError, match="needs 16 devices"):
    sharding.make_mesh({"data": 4, "fsdp": 4})
  with pytest.raises(sharding.MeshConfigError, match="Unknown mesh axes"):
    sharding.make_mesh({"dta": -1})
  with pytest.raises(sharding.MeshConfigError, match="At most one"):
    sharding.make_mesh({"data": -1, "fsdp": -1})


def test_logical_rules_map_to_mesh_axes():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  assert sharding.logical_to_spec(("embed", "mlp"), shape=(64, 128), mesh=mesh) == jax.sharding.PartitionSpec("fsdp", "tensor")
  # A dim the mesh axis does not divide is replicated rather than failing; fsdp then moves to 'mlp'.
  assert sharding.logical_to_spec(("embed", "mlp"), shape=(63, 128), mesh=mesh) == jax.sharding.PartitionSpec(
      None, ("tensor", "fsdp"))
  assert sharding.logical_to_spec(("mlp",), shape=(128,), mesh=mesh) == jax.sharding.PartitionSpec(("tensor", "fsdp"))
  assert sharding.logical_to_spec(("batch", "length"), shape=(8, 3), mesh=mesh) == jax.sharding.PartitionSpec(("data", "fsdp"), None)


def _synthetic_batch(config, batch_size, seed=0):
  rng = np.random.default_rng(seed)
  d = config.sample
  tokens, mask = Tokenizer(config.text.max_length).encode_batch(["a red circle moving left"] * batch_size)
  return {"video": rng.integers(0, 256, (batch_size, d.num_frames, d.height, d.width, 3), dtype=np.uint8),
          "tokens": tokens, "text_mask": mask}


def _run_steps(config, mesh, batch, num_steps=2):
  tx = train_state.make_optimizer(config.optim, config.train.num_steps)
  state = train_state.create_state(config, mesh, tx, jax.random.key(0))
  step = build_train_step(config, mesh, tx, Tokenizer(config.text.max_length))
  put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh, x.ndim))
  batch = {k: put(v) for k, v in batch.items()}
  losses, grad_norms = [], []
  for i in range(num_steps):
    with jax.set_mesh(mesh):
      state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics["loss"]))
    grad_norms.append(float(metrics["grad_norm"]))
  return state, losses, grad_norms


def test_sharded_step_equals_single_device_step():
  config = tiny_config()
  with config.unlocked():
    config.sample.height = config.sample.width = 16
  batch = _synthetic_batch(config, 8)
  single = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  three_axis = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  _, losses_1, norms_1 = _run_steps(config, single, batch)
  state_8, losses_8, norms_8 = _run_steps(config, three_axis, batch)
  # Tolerance: float32 reductions reorder across shards (~1e-7 relative per op). The loss of
  # step 2 depends on the updated parameters, so a wrong gradient or update on any shard shows there.
  # (Parameters are not compared elementwise: Adam's g/sqrt(v) turns float noise on near-zero
  # gradients into sign flips of size lr.)
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
  np.testing.assert_allclose(norms_8, norms_1, rtol=1e-4)
  # The parameters really are spread over the mesh.
  kernel = state_8["params"]["dit"]["blocks"]["mlp"]["up"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")


@pytest.mark.parametrize("get_config", [dit_xl.get_config, wan_1p3b.get_config])
def test_pod_configs_initialise_abstractly_and_fsdp_shards_every_large_param(get_config):
  config = get_config()
  mesh = sharding.make_mesh(dict(config.mesh))
  assert mesh.shape["fsdp"] == 8
  tx = train_state.make_optimizer(config.optim, config.train.num_steps)
  state = train_state.abstract_state(config, mesh, tx)
  params = state["params"]
  total = sum(x.size for x in jax.tree.leaves(params))
  assert total > 5e8  # pod-sized
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  for path, leaf in flat:
    if leaf.size >= 1 << 16:
      shard = leaf.sharding.shard_shape(leaf.shape)
      assert np.prod(shard) * 8 == leaf.size, f"{jax.tree_util.keystr(path)} {leaf.shape} is not sharded 8 ways"
  # Optimizer moments follow their parameters.
  mu = jax.tree.leaves(state["opt_state"])
  assert any(getattr(x, "sharding", None) is not None and x.sharding.spec != jax.sharding.PartitionSpec() for x in mu)


def _gradients(config, mesh, params, batch):
  """Flow-matching loss gradients for fixed times and noise (no optimizer involved)."""
  graphdef, _ = train_state.abstract_model(config)
  params = jax.device_put(params, train_state.param_shardings(config, mesh))
  batch = {k: jax.device_put(v, sharding.batch_sharding(mesh, v.ndim)) for k, v in batch.items()}

  def loss(params, batch):
    with sharding.activation_rules(sharding.DEFAULT_RULES):
      model = nnx.merge(graphdef, params)
      x0 = video_to_model_space(batch["video"])
      t = jnp.linspace(0.1, 0.9, x0.shape[0])
      x_t, target = flow.noisy_sample(x0, jax.random.normal(jax.random.key(1), x0.shape), t)
      context = model.encode_text(batch["tokens"], batch["text_mask"])
      return jnp.mean(jnp.square(model.velocity(x_t, t, context, batch["text_mask"]) - target))

  with jax.set_mesh(mesh):
    return jax.jit(jax.grad(loss))(params, batch)


def test_sharded_gradients_equal_single_device_gradients():
  """Every parameter's gradient on a data x fsdp x tensor mesh matches one device. Parameters are
  perturbed away from init so every path (zero-init heads, gates) carries gradient."""
  config = tiny_config()
  with config.unlocked():
    config.sample.height = config.sample.width = 16
  params = train_state.init_params(config, jax.random.key(0))
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = jax.tree.unflatten(treedef, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  batch = _synthetic_batch(config, 8)
  single = _gradients(config, sharding.make_mesh({"data": 1}, devices=jax.devices()[:1]), params, batch)
  sharded = _gradients(config, sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}), params, batch)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(single)[0], jax.tree.leaves(sharded)):
    a, b = np.asarray(a), np.asarray(b)
    # Tolerance: 1e-4 of the leaf's largest gradient (float32 reordering gives ~1e-6).
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max() + 1e-9, jax.tree_util.keystr(path)
