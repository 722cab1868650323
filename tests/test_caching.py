"""Training-free sampling caches (vdit/diffusion/caching.py): the passes they save, counted, and their
exact paths: with nothing to reuse each cache equals uncached sampling bit for bit."""
import jax
import numpy as np
import pytest

from tests.tiny import tiny_config
from vdit.diffusion import caching
from vdit.diffusion.generation import VideoSampler
from vdit.model import factory
from vdit.text.tokenizer import Tokenizer

_OPTS = dict(num_frames=4, height=16, width=16, channels=3, patch_size=(2, 4, 4), steps=8, cfg=3.0)
_PROMPTS = ["a red circle moving left", "a blue square moving up"]


def _sampler():
  config = tiny_config()
  params = factory.init_params(config, jax.random.key(0))
  # The zero-initialised head and modulations perturbed, so the velocity depends on its inputs.
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(treedef, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  return VideoSampler(factory.abstract_model(config)[0], params, Tokenizer(config.text.max_length))


def _generate(video_sampler, **opts):
  video_sampler.network_passes = 0
  videos = np.asarray(video_sampler.generate(_PROMPTS, [0, 1], **{**_OPTS, **opts}))
  return videos, video_sampler.network_passes // len(_PROMPTS)


@pytest.fixture(scope="module")
def uncached():
  sampler = _sampler()
  return sampler, _generate(sampler)


def test_uncached_sampling_counts_two_passes_per_guided_step(uncached):
  sampler, (_, passes) = uncached
  assert passes == 2 * 8
  # Guidance only in the noisier half: the rest run the conditional pass alone.
  assert _generate(sampler, guidance_interval=(0.5, 1.0))[1] < 2 * 8
  assert _generate(sampler, sampler="heun")[1] == 2 * 2 * 8


def test_cfg_cache_runs_both_passes_on_every_refresh_step(uncached, monkeypatch):
  sampler, (expected, _) = uncached
  videos, passes = _generate(sampler, cache="cfg")
  full_steps = -(-8 // caching.CFG_REFRESH)
  assert passes == 8 + full_steps and 2 * 8 / passes >= 1.6
  assert np.isfinite(videos).all() and not np.array_equal(videos, expected)
  # Refreshed every step, the cached difference is never used: uncached sampling, to float32 round-off
  # (a separately compiled program may fuse and order the same sums differently).
  monkeypatch.setattr(caching, "CFG_REFRESH", 1)
  videos, passes = _generate(sampler, cache="cfg")
  np.testing.assert_allclose(videos, expected, rtol=0, atol=1e-5)
  assert passes == 16


def test_block_cache_reuses_only_below_its_threshold(uncached, monkeypatch):
  sampler, (expected, _) = uncached
  monkeypatch.setattr(caching, "BLOCK_THRESHOLD", 0.0)  # nothing counts as unchanged: every step computes
  videos, passes = _generate(sampler, cache="block")
  np.testing.assert_array_equal(videos, expected)
  assert passes == 16
  monkeypatch.setattr(caching, "BLOCK_THRESHOLD", 1e9)  # everything does: reuse as often as allowed
  videos, passes = _generate(sampler, cache="block")
  # Steps 0 and 7 compute; between them at most BLOCK_MAX_REUSE reuses in a row (2): 0 c, 1-2 r, 3 c, 4-5 r, 6 c, 7 c.
  assert passes == 2 * 4 and np.isfinite(videos).all()


def test_cache_modes_a_run_cannot_use_are_errors():
  assert "choose one of ('none', 'cfg', 'block')" in caching.mode_error("tea")
  assert "use cache='block' or 'none'" in caching.mode_error("cfg", frame_cfg=2.0)
  with pytest.raises(ValueError, match="not a cache mode"):
    _sampler().generate(_PROMPTS, [0, 1], **_OPTS, cache="tea")
