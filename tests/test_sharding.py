"""Sharding: mesh construction, rules, a sharded step equal to the single-device step, FSDP coverage."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import dit_xl, wan_1p3b
from tests.tiny import tiny_config
from vdit.config import config_io, experiment
from vdit.parallel import sharding
from vdit.training import train_state
from vdit.model import factory
from vdit.diffusion import flow
from vdit.text.tokenizer import Tokenizer
from vdit.training.dit_trainer import build_train_step
from vdit.media.pixels import to_model_space as video_to_model_space


def test_make_mesh_fills_and_rejects_bad_shapes():
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2, "tensor": 2})  # axes left out have size 1
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "context": 1, "tensor": 2}
  assert dict(sharding.make_mesh({"data": -1}).shape) == {"data": 8, "fsdp": 1, "context": 1, "tensor": 1}
  assert dict(sharding.make_mesh({"data": 2, "context": -1}).shape)["context"] == 4
  with pytest.raises(sharding.MeshConfigError, match="needs 16 devices"):
    sharding.make_mesh({"data": 4, "fsdp": 4})
  with pytest.raises(sharding.MeshConfigError, match="Unknown mesh axes"):
    sharding.make_mesh({"dta": -1})
  with pytest.raises(sharding.MeshConfigError, match="At most one"):
    sharding.make_mesh({"data": -1, "fsdp": -1})


class _FakeDevice:
  """Stands in for a device of a multi-process run (one CPU process cannot have two)."""
  platform = device_kind = "cpu"

  def __init__(self, id, process_index):
    self.id, self.process_index = id, process_index

  def __repr__(self):
    return f"d{self.id}@p{self.process_index}"


def test_multi_slice_mesh_keeps_slices_contiguous_and_checks_the_slice_count():
  devices = [_FakeDevice(i, i // 4) for i in range(8)]  # 2 processes (slices) of 4 devices
  ici = sharding.mesh_sizes({"fsdp": 2, "tensor": 2}, 4)
  array = sharding.hybrid_device_array(ici, sharding.dcn_sizes({"data": 2}), devices)
  assert array.shape == (2, 2, 1, 2)  # data = 2 slices x 1, fsdp and tensor within a slice
  for data in range(2):  # only the data axis crosses the slow network
    assert {d.process_index for d in array[data].flat} == {data}
  # This test process is one slice: asking for two is refused with the numbers.
  with pytest.raises(sharding.MeshConfigError, match=r"asks for 2 slices, but the 8 devices form 1 processes"):
    sharding.make_mesh({"data": -1}, dcn_mesh_shape={"data": 2})
  with pytest.raises(sharding.MeshConfigError, match="3 slices, which do not divide the 8 devices"):
    sharding.make_mesh({"data": -1}, dcn_mesh_shape={"fsdp": 3})
  with pytest.raises(sharding.MeshConfigError, match="dcn_mesh sizes must be positive"):
    sharding.make_mesh({"data": -1}, dcn_mesh_shape={"data": -1})
  with pytest.raises(sharding.MeshConfigError, match=r"Per-slice mesh \(of 2 slices\) .* needs 8 devices but 4"):
    sharding.make_mesh({"data": 8}, devices=devices, dcn_mesh_shape={"data": 2})


def test_config_validation_checks_the_mesh_against_the_model():
  def error(**overrides):
    with pytest.raises(config_io.ConfigError) as e:
      config_io.validate(tiny_config(**overrides))
    return str(e.value)

  config_io.validate(tiny_config(**{"mesh.tensor": 2, "mesh.context": 2, "model.context_parallel": "ring"}))
  assert "config.model.num_heads=2 is not divisible by the tensor axis (4)" in error(**{"mesh.tensor": 4})
  # Across slices the axis is mesh x dcn_mesh.
  assert "tensor axis (4)" in error(**{"mesh.tensor": 2, "dcn_mesh.tensor": 2})
  assert "splits the 1 heads per tensor shard (num_heads 2 / tensor 2) over the context axis (2)" in error(
      **{"mesh.tensor": 2, "mesh.context": 2, "model.context_parallel": "ulysses"})
  assert "config.sample size 4x32x32 gives 32 tokens" in error(
      **{"sample.height": 32, "sample.width": 32, "mesh.context": 3, "model.context_parallel": "ring"})
  assert "At most one mesh axis may be -1" in error(**{"mesh.context": -1})
  assert "config.model.context_parallel='sp'" in error(**{"model.context_parallel": "sp"})
  assert "config.model.remat='dots_no_batch' is not a policy" in error(**{"model.remat": "dots_no_batch"})


def test_logical_rules_map_to_mesh_axes():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  assert sharding.logical_to_spec(("embed", "mlp"), shape=(64, 128), mesh=mesh) == jax.sharding.PartitionSpec("fsdp", "tensor")
  # A dim the mesh axis does not divide is replicated rather than failing; fsdp then moves to 'mlp'.
  assert sharding.logical_to_spec(("embed", "mlp"), shape=(63, 128), mesh=mesh) == jax.sharding.PartitionSpec(
      None, ("tensor", "fsdp"))
  assert sharding.logical_to_spec(("mlp",), shape=(128,), mesh=mesh) == jax.sharding.PartitionSpec(("tensor", "fsdp"))
  assert sharding.logical_to_spec(("batch", "length"), shape=(8, 3), mesh=mesh) == jax.sharding.PartitionSpec(("data", "fsdp"), None)
  # Video tokens shard over context; text tokens stay whole.
  mesh = sharding.make_mesh({"data": 2, "context": 4})
  assert sharding.logical_to_spec(("batch", "length", "act_embed"), shape=(2, 16, 8), mesh=mesh) == \
      jax.sharding.PartitionSpec("data", "context", None)
  assert sharding.logical_to_spec(("batch", "text_length"), shape=(2, 16), mesh=mesh) == jax.sharding.PartitionSpec("data", None)


@functools.cache
def _config(**overrides):
  """tests/tiny.py at 16x16, frozen as the trainer gets it (an Experiment): the model and state
  shapes traced from it are memoised, not traced again for every mesh."""
  config = tiny_config(**overrides)
  with config.unlocked():
    config.sample.height = config.sample.width = 16
  return experiment.freeze(config)


def _synthetic_batch(config, batch_size, seed=0):
  rng = np.random.default_rng(seed)
  d = config.sample
  tokens, mask = Tokenizer(config.text.max_length).encode_batch(["a red circle moving left"] * batch_size)
  return {"video": rng.integers(0, 256, (batch_size, d.num_frames, d.height, d.width, 3), dtype=np.uint8),
          "tokens": tokens, "text_mask": mask}


def _host_params(config) -> dict:
  """Random parameters drawn on the host (initialising on device compiles a program per shape),
  away from init so every path (zero-init heads, gates) carries gradient: norm scales near 1,
  everything else N(0, 0.1^2). NumPy arrays: each use becomes its own device buffer."""
  _, abstract = factory.abstract_model(config)
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    base = 1.0 if "scale" in jax.tree_util.keystr(path) else 0.0
    return (base + 0.1 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(abstract))


def _run_steps(config, mesh, batch, num_steps=2):
  tx = train_state.make_optimizer(config.optim, config.train.num_steps)
  params = _host_params(config)  # the same values on every mesh
  state = {"params": params, "ema": params, "opt_state": jax.device_get(tx.init(params)), "step": np.int32(0)}
  state = jax.device_put(state, train_state.state_shardings(config, mesh, tx))
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
  # No warmup: the first update moves the parameters (a warmup from 0 would leave them as they
  # were). One block and word embeddings for text (as configs/toy.py): the sharded gradients of
  # scanned blocks and of a text block are checked below, and here they would only add compile time.
  config = _config(**{"optim.warmup_steps": 0, "model.depth": 1, "text.depth": 0})
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
  graphdef, _ = factory.abstract_model(config)
  params = jax.device_put(params, factory.param_shardings(config, mesh))
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


@functools.cache
def _params():
  return _host_params(_config())  # context parallelism changes no parameter: one tree for every mesh


@functools.cache
def _single_device_gradients():
  config = _config()
  return _gradients(config, sharding.make_mesh({"data": 1}, devices=jax.devices()[:1]), _params(),
                    _synthetic_batch(config, 8))


@pytest.mark.parametrize("mesh_shape,context_parallel", [
    ({"data": 2, "fsdp": 2, "tensor": 2}, "none"),
    ({"data": 2, "context": 2, "tensor": 2}, "ring"),  # text encoder and DiT sequence-sharded
])
def test_sharded_gradients_equal_single_device_gradients(mesh_shape, context_parallel):
  """Every parameter's gradient on a sharded mesh matches one device, at parameters away from init
  (every path carries gradient)."""
  config = _config(**{"model.context_parallel": context_parallel})
  sharded = _gradients(config, sharding.make_mesh(mesh_shape), _params(), _synthetic_batch(config, 8))
  single = _single_device_gradients()
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(single)[0], jax.tree.leaves(sharded)):
    a, b = np.asarray(a), np.asarray(b)
    # Tolerance: 1e-4 of the leaf's largest gradient (float32 reordering gives ~1e-6).
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max() + 1e-9, jax.tree_util.keystr(path)
