"""Sampling modes (vdit.diffusion.modes) on a tiny random model: each mode's conditioning frames land
where they should and the result is assembled right; bad inputs give one clear error each."""
import numpy as np
import pytest

from tests.test_frame_conditioning import _config, _model_parts
from vdit.diffusion import modes as sample_modes
from vdit.media import video_io
from vdit.diffusion.generation import VideoSampler
from vdit.text.tokenizer import Tokenizer

_OPTS = dict(num_frames=4, height=16, width=16, channels=3, patch_size=(2, 8, 8), steps=2, cfg=2.0,
             sampler="euler")
_PROMPTS, _SEEDS = ["a red circle moving left", "a blue square moving up"], [0, 1]


@pytest.fixture(scope="module")
def sampler():
  config = _config(**{"model.prediction": "velocity"})
  graphdef, params = _model_parts(config)
  return VideoSampler(graphdef, params, Tokenizer(config.text.max_length))


def _clip(num_frames, height=16, width=16, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b) ** 2)
  return np.inf if mse == 0 else 10 * np.log10(255 ** 2 / mse)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp("inputs")
  paths = {}
  # GIFs: an exact round trip for random colours would need a palette; these clips use 8 grey
  # levels, which GIF stores exactly.
  for name, clip in {"a.gif": _clip(6, seed=1), "b.gif": _clip(6, seed=2),
                     "wide.gif": _clip(6, 16, 32)}.items():
    paths[name] = str(d / name)
    video_io.write_gif(paths[name], clip // 32 * 32, fps=8)
  image = _clip(1, seed=4)[0]
  paths["image.png"] = str(d / "image.png")
  video_io.write_png(paths["image.png"], image)
  paths["big.png"] = str(d / "big.png")
  video_io.write_png(paths["big.png"], _clip(1, 20, 24, seed=5)[0])
  paths["strip.png"] = str(d / "strip.png")
  video_io.write_png(paths["strip.png"], _clip(1, 8, 64, seed=6)[0])
  return paths


def _run(sampler, mode, **kwargs):
  return sample_modes.run(mode, sampler, _PROMPTS, _SEEDS, _OPTS, **kwargs)


def test_image_to_video_keeps_the_first_frame(sampler, files):
  image = sample_modes.load_frames(files["image.png"], 16, 16)[0]
  for video in _run(sampler, "image", image=files["image.png"]):
    assert video.shape == (4, 16, 16, 3) and _psnr(video[0], image) >= 30


def test_extend_forward_and_backward_continue_the_given_video(sampler, files):
  source = sample_modes.load_frames(files["a.gif"], 16, 16)
  for video in _run(sampler, "extend_forward", video=files["a.gif"], extend_frames=2):
    assert video.shape[0] == 6 + 2
    np.testing.assert_array_equal(video[:6], source)
  for video in _run(sampler, "extend_backward", video=files["a.gif"], extend_frames=3):
    assert video.shape[0] == 6 + 1
    np.testing.assert_array_equal(video[1:], source)


def test_connect_starts_at_a_and_ends_at_b(sampler, files):
  a = sample_modes.load_frames(files["a.gif"], 16, 16)
  b = sample_modes.load_frames(files["b.gif"], 16, 16)
  for video in _run(sampler, "connect", connect=[files["a.gif"], files["b.gif"]]):
    np.testing.assert_array_equal(video[0], a[-1])
    np.testing.assert_array_equal(video[-1], b[0])
  with pytest.raises(sample_modes.ModeError, match="differ in size"):
    _run(sampler, "connect", connect=[files["a.gif"], files["wide.gif"]])


def test_loop_is_a_clip_then_a_bridge_from_its_end_back_to_its_start(sampler, monkeypatch):
  from vdit.media import pixels
  generate, bridges = sampler.generate, []
  def recording(prompts, seeds, **kwargs):
    out = generate(prompts, seeds, **kwargs)
    if kwargs.get("frame_mask") is not None:
      bridges.append((pixels.to_uint8(kwargs["frames"]), kwargs["frame_mask"], pixels.to_uint8(out)))
    return out
  monkeypatch.setattr(sampler, "generate", recording)
  clips = _run(sampler, "text")
  loops = _run(sampler, "loop")  # window 4: one frame of each end given (a quarter), two bridging frames
  assert len(bridges) == 2
  for clip, loop, (given, mask, bridge) in zip(clips, loops, bridges):
    np.testing.assert_array_equal(mask, [[True, False, False, True]])
    np.testing.assert_array_equal(given[0, 0], clip[-1])  # the bridge starts where the clip ends
    np.testing.assert_array_equal(given[0, 3], clip[0])  # and ends where it starts
    np.testing.assert_array_equal(loop, np.concatenate([clip, bridge[0, 1:3]]))
  with pytest.raises(sample_modes.ModeError, match="between 1 and 1 for a loop"):
    _run(sampler, "loop", extend_frames=2)


def test_edit_strength_bounds(sampler, files):
  source = sample_modes.load_frames(files["a.gif"], 16, 16)[:4]
  for video in _run(sampler, "edit", video=files["a.gif"], strength=0.0):
    np.testing.assert_array_equal(video, source)
  edited = _run(sampler, "edit", video=files["a.gif"], strength=0.5)
  assert all(v.shape == (4, 16, 16, 3) for v in edited)
  with pytest.raises(sample_modes.ModeError, match="must be in \\[0, 1\\]"):
    _run(sampler, "edit", video=files["a.gif"], strength=1.5)
  with pytest.raises(sample_modes.ModeError, match="editing needs num_frames=4"):
    _run(sampler, "edit", video=files["image.png"], strength=0.5)


def test_long_video_overlaps_its_windows(sampler):
  videos = _run(sampler, "long", total_frames=9, extend_frames=2)
  assert all(v.shape == (9, 16, 16, 3) for v in videos)


def test_bad_inputs_give_one_clear_error(sampler, files, tmp_path):
  with pytest.raises(sample_modes.ModeError, match="shorter than the conditioning window"):
    _run(sampler, "extend_forward", video=files["image.png"], extend_frames=2)
  with pytest.raises(sample_modes.ModeError, match="must be between 1 and num_frames - 1"):
    _run(sampler, "extend_forward", video=files["a.gif"], extend_frames=4)
  with pytest.raises(sample_modes.ModeError, match="crop away"):
    _run(sampler, "image", image=files["strip.png"])
  with pytest.raises(sample_modes.ModeError, match="Cannot use .*missing.png"):
    _run(sampler, "image", image=str(tmp_path / "missing.png"))
  assert _run(sampler, "image", image=files["big.png"])[0].shape == (4, 16, 16, 3)  # resized
