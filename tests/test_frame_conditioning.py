"""Frame conditioning: training masks, per-frame timesteps in the model, conditioned sampling and
SDEdit editing in the sampler."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tests.tiny import tiny_config
from vdit.config import experiment
from vdit.model import factory
from vdit.diffusion import conditioning
from vdit.diffusion.generation import VideoSampler
from vdit.text.tokenizer import Tokenizer
from vdit.training.dit_step import make_train_step


@functools.cache
def _config(**overrides):
  """tests/tiny.py with frame conditioning, frozen as services get it (an Experiment): each
  variant's abstract model is traced once."""
  return experiment.freeze(tiny_config(**{"model.frame_conditioning": True, **overrides}))


def _host_params(config):
  """Random parameters drawn on the host (initialising on device compiles a program per shape):
  norm scales near 1, everything else N(0, 0.1^2), off the zero-initialised heads and gates so
  every input path reaches the output."""
  _, abstract = factory.abstract_model(config)
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    base = 1.0 if "scale" in jax.tree_util.keystr(path) else 0.0
    return jnp.asarray(base + 0.1 * rng.standard_normal(leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(abstract))


@functools.cache
def _params():
  """One tree for the tests below (they only read it): the prediction type changes no parameter."""
  return _host_params(_config())


def _model_parts(config):
  return factory.abstract_model(config)[0], _params()


def test_masks_follow_each_strategy_and_leave_a_frame_to_generate():
  names = conditioning.STRATEGIES
  # Jitted as the train step runs it: one program for every strategy's probabilities.
  sample_masks = jax.jit(conditioning.sample_masks, static_argnums=(1, 2), static_argnames="max_frames")
  for i, name in enumerate(names):
    probs = jnp.asarray([1.0 if j == i else 0.0 for j in range(len(names))])
    masks = np.asarray(sample_masks(jax.random.key(i), 256, 6, probs, max_frames=3))
    assert (~masks).any(axis=1).all(), name
    if name == "none":
      assert not masks.any()
    elif name == "first":
      assert masks[:, 0].all() and not masks[:, 1:].any()
    elif name == "first_last":
      assert masks[:, [0, 5]].all() and not masks[:, 1:5].any()
    elif name in ("first_k", "last_k"):
      counts = masks.sum(1)
      assert counts.min() == 1 and counts.max() == 3
      ordered = masks if name == "first_k" else masks[:, ::-1]
      assert all((row[:c].all() and not row[c:].any()) for row, c in zip(ordered, counts))
    else:
      assert 0.1 < masks.mean() < 0.4
  assert not np.asarray(conditioning.sample_masks(jax.random.key(0), 4, 1, [0, 1, 0, 0, 0, 0], 3)).any()


def test_strategy_weights_are_validated():
  assert conditioning.strategy_probabilities({"none": 1, "first": 3})[:2] == [0.25, 0.75]
  with pytest.raises(ValueError, match="Unknown conditioning strategies \\['middle'\\]"):
    conditioning.strategy_probabilities({"middle": 1.0})


def test_constant_per_frame_time_equals_one_time_per_video():
  config = _config()
  graphdef, params = _model_parts(config)

  @jax.jit
  def velocity(params, x, t, tokens, mask, frame_mask):
    model = nnx.merge(graphdef, params)
    return model.velocity(x, t, model.encode_text(tokens, mask), mask, frame_mask)

  x = jax.random.normal(jax.random.key(2), (2, 4, 16, 16, 3))
  tokens, mask = Tokenizer(config.text.max_length).encode_batch(["a red circle moving left"] * 2)
  t = jnp.asarray([0.3, 0.8])
  no_mask = jnp.zeros((2, 4), bool)
  per_video = velocity(params, x, t, tokens, mask, no_mask)
  per_frame = velocity(params, x, jnp.repeat(t[:, None], 4, axis=1), tokens, mask, no_mask)
  np.testing.assert_allclose(per_frame, per_video, rtol=1e-5, atol=1e-5)
  marked = velocity(params, x, t, tokens, mask, jnp.asarray([[True, False, False, False]] * 2))
  assert np.abs(np.asarray(marked) - np.asarray(per_video)).max() > 1e-4  # the mask channel is seen


def test_train_step_with_conditioning_runs_and_learns_signal():
  # One block and word embeddings for text: all the step needs, and each block adds compile time.
  config = _config(**{"model.depth": 1, "text.depth": 0})
  graphdef, params = factory.abstract_model(config)[0], _host_params(config)
  tx = optax.adam(1e-3)
  tokenizer = Tokenizer(config.text.max_length)
  empty_tokens, empty_mask = tokenizer.encode_batch([""])
  step = jax.jit(make_train_step(
      graphdef, tx, empty_tokens=jnp.asarray(empty_tokens[0]), empty_mask=jnp.asarray(empty_mask[0]),
      caption_dropout=0.1, timestep_sampling="uniform", logit_mean=0.0, logit_std=1.0, shift=1.0,
      patch_size=(2, 8, 8), ema_decay=0.9, conditioning=[0, 0.5, 0.5, 0, 0, 0], conditioning_max_frames=2))
  tokens, mask = tokenizer.encode_batch(["a red circle moving left"] * 4)
  batch = {"video": np.random.default_rng(0).integers(0, 256, (4, 4, 16, 16, 3), dtype=np.uint8),
           "tokens": tokens, "text_mask": mask}
  state = {"params": params, "ema": params, "opt_state": tx.init(params), "step": jnp.int32(0)}
  for i in range(2):
    state, metrics = step(state, batch, jax.random.key(i))
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0


@pytest.fixture(scope="module")
def sampler():
  # Velocity prediction: a random model then moves x by about t * |v|, so how far an edit strays
  # from its input tracks the strength (an x-prediction model jumps to its own output at once).
  config = _config(**{"model.prediction": "velocity"})
  graphdef, params = _model_parts(config)
  return VideoSampler(graphdef, params, Tokenizer(config.text.max_length))


_OPTS = dict(num_frames=4, height=16, width=16, channels=3, patch_size=(2, 8, 8), steps=4, cfg=3.0,
             sampler="dpmpp_2m")


def test_conditioning_frames_are_kept_exactly(sampler):
  given = np.asarray(jax.random.uniform(jax.random.key(5), (2, 4, 16, 16, 3), minval=-1, maxval=1))
  frame_mask = np.asarray([[True, False, False, False], [True, False, False, True]])
  out = np.asarray(sampler.generate(["a red circle moving left"] * 2, [0, 1], frames=given,
                                    frame_mask=frame_mask, **_OPTS))
  np.testing.assert_array_equal(out[frame_mask], given[frame_mask])
  plain = np.asarray(sampler.generate(["a red circle moving left"] * 2, [0, 1], **_OPTS))
  assert np.abs(out[~frame_mask] - plain[~frame_mask]).max() > 1e-3


def test_edit_strength_controls_how_much_of_the_input_survives(sampler):
  source = np.asarray(jax.random.uniform(jax.random.key(6), (1, 4, 16, 16, 3), minval=-1, maxval=1))
  prompt = ["a blue square moving up"]
  plain = np.asarray(sampler.generate(prompt, [0], **_OPTS))
  full = np.asarray(sampler.generate(prompt, [0], init_video=source, strength=1.0, **_OPTS))
  np.testing.assert_array_equal(full, plain)
  light = np.asarray(sampler.generate(prompt, [0], init_video=source, strength=0.1, **_OPTS))
  heavy = np.asarray(sampler.generate(prompt, [0], init_video=source, strength=0.9, **_OPTS))
  assert np.abs(light - source).mean() < np.abs(heavy - source).mean()
  with pytest.raises(ValueError, match="strength=1.5 must be in"):
    sampler.generate(prompt, [0], init_video=source, strength=1.5, **_OPTS)


def test_separate_frame_and_text_guidance(sampler):
  given = np.asarray(jax.random.uniform(jax.random.key(7), (1, 4, 16, 16, 3), minval=-1, maxval=1))
  frame_mask = np.asarray([[True, False, False, False]])
  run = lambda **kw: np.asarray(sampler.generate(["a red circle moving left"], [0], frames=given,
                                                 frame_mask=frame_mask, **{**_OPTS, **kw}))
  joint = run()
  # frame_cfg 1: v(frames, -) + cfg (v(frames, text) - v(frames, -)), which is joint guidance.
  np.testing.assert_allclose(run(frame_cfg=1.0), joint, atol=2e-5)
  separate = run(frame_cfg=3.0)
  np.testing.assert_array_equal(separate[frame_mask], given[frame_mask])
  assert np.abs(separate - joint).max() > 1e-3
  # Without conditioning frames there is nothing to guide apart (a config's frame_cfg, text-to-video).
  np.testing.assert_array_equal(sampler.generate(["a"], [0], frame_cfg=2.0, **_OPTS), sampler.generate(["a"], [0], **_OPTS))
