"""VAE training (vdit.training.vae_trainer): loss falls, the export loads, a rerun resumes, bad input is one error.

One tiny run (5-frame 16x16 crops, base_dim 4, one down level; every loss term on: perceptual
through a random toy feature network, the discriminator from step 4) is shared by the tests that
read its workdir.
"""
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from configs import vae_toy
from tests.helpers import make_toy_data
from tests.tiny import apply_overrides
from vdit.training import jsonl_writer
from vdit.core import weights
from vdit.config.config_io import ConfigError
from vdit.eval import toy_features
from vdit.vae import wan_vae
from vdit.training import vae_trainer as train_vae

pytestmark = pytest.mark.slow  # every test uses a module fixture that trains

_STEPS = 8


def _config(data_dir, **overrides):
  config = vae_toy.get_config()
  with config.unlocked():
    config.data.dir = data_dir
    # Temporal x2, spatial x2 (one down level): the trainer does not depend on the factors, and half
    # the layers halve the compile time. 5 = 1 + 2 * 2 frames -> latents [3, 8, 8, 4].
    config.data.num_frames = 5
    config.vae.base_dim = 4
    config.vae.z_dim = 4
    config.vae.dim_mult = (1, 1)
    config.vae.temperal_downsample = (True,)
    config.vae.latent_stats_batches = 2
    config.optim.peak_lr = 1e-2
    config.optim.warmup_steps = 3
    config.train.num_steps = _STEPS
    config.train.global_batch_size = 8  # one clip per simulated device
    config.train.log_every = 2
    config.train.checkpoint_every = _STEPS // 2
    config.eval.dir = ""
    return apply_overrides(config, overrides)


def _toy_feature_weights(path):
  """A random toy feature network (frozen features need not be trained to be a loss), drawn in
  numpy: eager random init of the network costs seconds on CPU."""
  model = nnx.eval_shape(lambda: toy_features.ToyEncoder(vocab_size=16, dim=8, width=4, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  shapes = {".".join(map(str, p)): v.get_value().shape for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  tensors = {k: (rng.standard_normal(s) / np.sqrt(np.prod(s[:-1]) or 1)).astype(np.float32) for k, s in shapes.items()}
  weights.save(str(path), tensors, toy_features.config_metadata(16, 8, 4, 8))
  return str(path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return make_toy_data(tmp_path_factory.mktemp("vae_data"), num_clips=32, num_frames=6, size=16)


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
  """(config, workdir, logged records) of the shared run, trained for _STEPS steps."""
  tmp = tmp_path_factory.mktemp("vae_run")
  config = _config(data_dir, **{
      "loss.perceptual_weight": 0.1, "loss.perceptual_weights": _toy_feature_weights(tmp / "features.safetensors"),
      "loss.adversarial_weight": 0.05, "loss.adversarial_start_step": 4, "disc.base_dim": 4, "disc.num_layers": 1})
  workdir = str(tmp / "workdir")
  train_vae.train_vae(config, workdir)
  return config, workdir, _records(workdir)


def _records(workdir):
  return [r for r in jsonl_writer.read(os.path.join(workdir, "metrics.jsonl")) if "rec_loss" in r]


def test_loss_falls_with_every_term(run):
  records = run[2]
  assert [r["step"] for r in records] == list(range(2, _STEPS + 1, 2))
  assert records[-1]["rec_loss"] < 0.7 * records[0]["rec_loss"], (records[0], records[-1])
  for key in ("kl_loss", "perceptual_loss", "gen_loss", "disc_loss"):
    assert all(np.isfinite(r[key]) for r in records), key


def test_export_loads_round_trips_and_normalizes(run, data_dir):
  config, workdir, _ = run
  vae = wan_vae.load(os.path.join(workdir, train_vae.EXPORT_FILE))
  assert vae.config.z_dim == 4 and len(vae.config.latents_mean) == len(vae.config.latents_std) == 4
  buckets = train_vae._plan_buckets(config, data_dir, vae.config, 8)
  video = np.asarray(next(train_vae._batches(config, buckets, seed=1))["video"], np.float32) / 127.5 - 1.0
  mean, logvar = wan_vae.encode(vae, video, chunk_frames=None)
  assert mean.shape == logvar.shape == (8, 3, 8, 8, 4)
  assert wan_vae.decode(vae, wan_vae.sample(mean, logvar, jax.random.key(0)), chunk_frames=None).shape == video.shape
  # The exported statistics make other clips' latents unit-scale (loosely: 16 clips measured them).
  z = np.asarray(wan_vae.normalize_latents(vae.config, mean)).reshape(-1, 4)
  assert np.all(np.abs(z.mean(axis=0)) < 0.5) and np.all((z.std(axis=0) > 0.6) & (z.std(axis=0) < 1.6)), z.std(0)


def test_rerun_resumes_from_checkpoint(run):
  config, workdir, first = run
  # As if killed before the final checkpoint: the rerun continues from step _STEPS // 2.
  shutil.rmtree(os.path.join(workdir, "checkpoints", str(_STEPS)))
  train_vae.train_vae(config, workdir)
  # The rerun drops the records of the steps it runs again (after step 4), then logs them anew:
  # one record per logged step.
  rerun = _records(workdir)
  assert [r["step"] for r in rerun] == [r["step"] for r in first] == list(range(2, _STEPS + 1, 2))
  # Same data position, keys and state: the resumed steps repeat the first run's losses.
  np.testing.assert_allclose([r["rec_loss"] for r in rerun], [r["rec_loss"] for r in first], rtol=1e-5)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(_STEPS)))


@pytest.mark.parametrize("overrides, error, message", [
    ({"data.num_frames": 6, "vae.dim_mult": (1, 2, 4, 4), "vae.temperal_downsample": (False, True, True)},
     ConfigError, "config.data.num_frames=6 is not 1 + 4k"),
    ({"vae.init_weights": "/nonexistent/vae.safetensors"}, weights.WeightsError, "does not exist"),
    ({"vae.init_weights": "FEATURES"}, weights.WeightsError, "expected 'vdit.wan_vae.v1'"),
    ({"vae.init_weights": "EXPORT", "vae.base_dim": 8}, ConfigError, "base_dim=8 (file: 4)"),
    ({"loss.perceptual_weight": 1.0}, ConfigError, "needs config.loss.perceptual_weights"),
    ({"loss.perceptual_weight": 1.0, "loss.perceptual_weights": "EXPORT"}, weights.WeightsError,
     "expected 'vdit-toy-features'"),
])
def test_bad_config_is_one_clear_error(run, data_dir, tmp_path, overrides, error, message):
  files = {"FEATURES": run[0].loss.perceptual_weights, "EXPORT": os.path.join(run[1], train_vae.EXPORT_FILE)}
  overrides = {k: files.get(v, v) for k, v in overrides.items()}
  with pytest.raises(error) as info:
    train_vae.train_vae(_config(data_dir, **overrides), str(tmp_path / "workdir"))
  assert message in str(info.value), str(info.value)
  assert not os.path.exists(tmp_path / "workdir")  # refused before writing anything
