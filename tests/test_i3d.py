"""I3D for FVD: loading user weight files, video features, and parity with pytorch-i3d.

The network is tiny (width_divisor=8) but full depth at 224x224: one jit compile costs a few
seconds on CPU, so each test compiles at most once. The parity tests need torch (a test-only
extra) and are skipped without it.
"""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from vdit.parallel import sharding
from vdit.core import weights
from vdit.eval import i3d
from vdit.eval import i3d_convert

_DIVISOR = 8
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _random_tensors(seed=0):
  """vdit-layout tensors of the tiny network: fan-in scaled kernels, positive BN variances."""
  rng = np.random.default_rng(seed)
  tensors = {}
  for name, shape in i3d.tensor_shapes(width_divisor=_DIVISOR).items():
    if name.endswith("kernel"):
      value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
    elif name.endswith("var"):
      value = rng.uniform(0.5, 1.5, shape)
    else:
      value = rng.normal(0.0, 0.1, shape) + (1.0 if name.endswith("scale") else 0.0)
    tensors[name] = value.astype(np.float32)
  return tensors


def _save(path, tensors, **metadata):
  metadata = {"format": i3d.FORMAT, "width_divisor": _DIVISOR, "num_classes": 400, **metadata}
  weights.save(str(path), tensors, metadata)
  return str(path)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
  return _save(tmp_path_factory.mktemp("i3d") / "tiny.safetensors", _random_tensors())


def _videos(n, t, h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, t, h, w, 3), dtype=np.uint8)


def test_feature_dims_follow_the_feature_choice(tiny_file):
  logits = i3d.I3DFeatures(tiny_file)
  pool = i3d.I3DFeatures(tiny_file, feature="pool")
  assert (logits.name, logits.frame_dim, logits.video_dim) == ("i3d", None, 400)
  assert pool.video_dim == 1024 // _DIVISOR


def test_video_features_shape_over_padded_sharded_batches(tiny_file):
  # 3 videos in batches of 2 over 2 data devices: the last batch is padded and the padding dropped.
  mesh = sharding.make_mesh({"data": 2, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:2])
  features = i3d.I3DFeatures(tiny_file, mesh=mesh, batch_size=2)
  out = features.video_features(_videos(3, i3d.MIN_FRAMES, 96, 128))
  assert out.shape == (3, 400) and out.dtype == np.float64
  assert np.all(np.isfinite(out)) and not np.allclose(out[0], out[2])


def test_too_few_frames_is_a_clear_error(tiny_file):
  features = i3d.I3DFeatures(tiny_file)
  with pytest.raises(ValueError, match=f"at least {i3d.MIN_FRAMES} frames, got 8"):
    features.video_features(_videos(1, 8, 32, 32))


def test_missing_tensor_names_file_and_tensor(tmp_path):
  tensors = _random_tensors()
  del tensors["Mixed_4c.b2b.bn.var"]
  path = _save(tmp_path / "missing.safetensors", tensors)
  with pytest.raises(weights.WeightsError, match=r"missing\.safetensors.*Mixed_4c\.b2b\.bn\.var"):
    i3d.I3DFeatures(path)


def test_wrong_shape_names_file_and_tensor(tmp_path):
  tensors = _random_tensors()
  tensors["Mixed_3b.b0.conv.kernel"] = tensors["Mixed_3b.b0.conv.kernel"][..., :1]
  path = _save(tmp_path / "shape.safetensors", tensors)
  with pytest.raises(weights.WeightsError, match=r"shape\.safetensors.*'Mixed_3b\.b0\.conv\.kernel' has shape"):
    i3d.I3DFeatures(path)


def test_non_safetensors_file_names_the_file(tmp_path):
  path = tmp_path / "i3d.pt"
  path.write_bytes(b"\x80\x02 not a safetensors file")
  with pytest.raises(weights.WeightsError, match=r"i3d\.pt.*not a readable safetensors"):
    i3d.I3DFeatures(str(path))


def test_file_without_i3d_format_is_rejected(tmp_path):
  path = _save(tmp_path / "other.safetensors", _random_tensors(), format="something-else")
  with pytest.raises(weights.WeightsError, match=r"other\.safetensors.*format 'something-else'.*i3d_convert"):
    i3d.I3DFeatures(path)


def test_converter_lists_unknown_and_missing_names():
  state = {"logits.conv3d.weight": np.zeros((400, 1024, 1, 1, 1), np.float32),
           "logits.conv3d.bias": np.zeros((400,), np.float32),
           "Mixed_3b.b9.conv3d.weight": np.zeros((1,), np.float32)}
  with pytest.raises(weights.WeightsError, match=r"unknown names \['Mixed_3b\.b9\.conv3d\.weight'\].*"
                                                 r"missing .*Conv3d_1a_7x7\.bn\.bias"):
    i3d_convert.convert_state_dict(state)


# --- Parity with the PyTorch reference (needs torch) ---


@pytest.fixture(scope="module")
def torch_reference():
  """(tiny eval-mode pytorch-i3d network, its state dict as numpy) with random BN statistics."""
  torch = pytest.importorskip("torch", reason="torch is a test-only extra: the I3D parity tests need it")
  from tests import torch_i3d_reference  # pylint: disable=g-import-not-at-top  # imports torch
  torch.manual_seed(0)
  net = torch_i3d_reference.InceptionI3d(num_classes=400, width_divisor=_DIVISOR)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, torch.nn.BatchNorm3d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.1)
        module.running_mean.normal_(0.0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
    net.logits.conv3d.weight.mul_(30.0)  # logits of order 10, so the tolerance is relative there
  net.eval()
  return net, {k: v.numpy() for k, v in net.state_dict().items()}


def _reference_features(net, x_bthwc):
  torch = pytest.importorskip("torch")
  with torch.no_grad():
    out = net.features(torch.from_numpy(np.ascontiguousarray(x_bthwc.transpose(0, 4, 1, 2, 3))))
  return {k: v.numpy() for k, v in out.items()}


def _assert_close(name, got, want):
  # Tolerance: 1e-4 of the reference's largest magnitude (at least 1e-4 absolute), in float32.
  tol = 1e-4 * max(1.0, float(np.abs(want).max()))
  err = float(np.abs(np.asarray(got, np.float64) - want).max())
  assert err <= tol, f"{name}: max abs error {err:.3g} > {tol:.3g}"


@pytest.fixture(scope="module")
def converted_file(torch_reference, tmp_path_factory):
  tensors = i3d_convert.convert_state_dict(torch_reference[1], width_divisor=_DIVISOR)
  return _save(tmp_path_factory.mktemp("i3d") / "converted.safetensors", tensors)


@pytest.mark.reference
def test_network_matches_pytorch_i3d(torch_reference, converted_file):
  x = np.random.default_rng(1).uniform(-1.0, 1.0, (2, 16, 224, 224, 3)).astype(np.float32)
  want = _reference_features(torch_reference[0], x)
  got = nnx.jit(lambda model, x: model(x))(i3d.load(converted_file), x)
  for name in ("logits", "pool"):
    assert got[name].shape == want[name].shape
    _assert_close(name, got[name], want[name])


@pytest.mark.reference
def test_video_features_match_pytorch_i3d(torch_reference, converted_file):
  videos = _videos(3, 10, 224, 224, seed=2)  # 224x224: no resize, so the reference sees the same input
  mesh = sharding.make_mesh({"data": 2, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:2])
  got = i3d.I3DFeatures(converted_file, mesh=mesh).video_features(videos)
  want = _reference_features(torch_reference[0], videos.astype(np.float32) / 127.5 - 1.0)
  _assert_close("video_features", got, want["logits"])


@pytest.mark.reference
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_converter_cli(torch_reference, tmp_path, suffix):
  torch = pytest.importorskip("torch")
  net, state = torch_reference
  source = str(tmp_path / f"rgb_imagenet{suffix}")
  if suffix == ".pt":
    torch.save(net.state_dict(), source)
  else:
    weights.save(source, state)
  output = str(tmp_path / "i3d.safetensors")
  subprocess.run([sys.executable, "-m", "vdit.eval.i3d_convert", f"--input={source}", f"--output={output}",
                  f"--width_divisor={_DIVISOR}"], check=True, cwd=_ROOT,
                 env={**os.environ, "PYTHONPATH": _ROOT})
  tensors, metadata = weights.load(output)
  assert metadata["format"] == i3d.FORMAT and metadata["width_divisor"] == str(_DIVISOR)
  assert metadata["num_classes"] == "400"
  expected = i3d_convert.convert_state_dict(state, width_divisor=_DIVISOR)
  assert sorted(tensors) == sorted(expected)
  for name, value in expected.items():
    np.testing.assert_array_equal(tensors[name], value, err_msg=name)
