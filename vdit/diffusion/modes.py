"""Sampling modes beyond text-to-video, all from one checkpoint through frame conditioning:
image-to-video, extending a video forward or backward, connecting two videos, looping, editing
(SDEdit), text-to-image, and videos longer than the model's window by repeated extension.

Each mode turns its inputs into clean conditioning frames + a mask (or an initial video for
editing) for `VideoSampler.generate`, and assembles the result. Inputs are read with
vdit.media.video_reader and resized + centre-cropped to the sampling size.
"""
import math

from absl import logging
import numpy as np

from vdit.media import video_reader
from vdit.core.errors import UserError
from vdit.media import pixels

MODES = ("text", "image", "extend_forward", "extend_backward", "connect", "loop", "edit", "long")
FRAME_MODES = ("image", "extend_forward", "extend_backward", "connect", "loop", "long")  # conditioning frames
_MAX_CROP = 0.5  # an input whose aspect ratio would lose more than this to the crop is refused


class ModeError(UserError):
  """Bad inputs for a sampling mode; the message names the file or value and the fix."""


def _read(path: str) -> np.ndarray:
  try:
    return video_reader.read_video(path)
  except video_reader.VideoReadError as e:
    raise ModeError(f"Cannot use {path}: {e}") from e


def load_frames(path: str, height: int, width: int, frames=None) -> np.ndarray:
  """A video or image as uint8 [T, height, width, 3], resized + centre-cropped (with a warning)."""
  frames = _read(path) if frames is None else frames
  src_h, src_w = frames.shape[1:3]
  if (src_h, src_w) == (height, width):
    return frames
  kept = min(src_w / src_h, width / height) / max(src_w / src_h, width / height)
  if 1 - kept > _MAX_CROP:
    raise ModeError(f"{path} is {src_h}x{src_w}; fitting it to {height}x{width} would crop away "
                    f"{1 - kept:.0%} of it. Pass --height/--width with a closer aspect ratio.")
  logging.warning("%s is %dx%d: resized and centre-cropped to %dx%d.", path, src_h, src_w, height, width)
  return np.stack([video_reader.resize_center_crop(f, height, width) for f in frames])


def _conditioned(sampler, prompts, seeds, opts, given, mask, progress):
  """One generation with the same conditioning frames for every prompt; uint8 [N, T, H, W, 3]."""
  n = len(prompts)
  frames = np.broadcast_to(pixels.to_model_space(given), (n,) + given.shape)
  masks = np.broadcast_to(mask, (n, mask.shape[0]))
  return pixels.to_uint8(sampler.generate(prompts, seeds, frames=frames, frame_mask=masks,
                                    progress=progress, **opts))


def _window(opts, frames_of_given):
  t = opts["num_frames"]
  given = np.zeros((t, opts["height"], opts["width"], opts["channels"]), np.uint8)
  mask = np.zeros((t,), bool)
  for index, frame in frames_of_given.items():
    given[index], mask[index] = frame, True
  return given, mask


def context_limits(mode: str, num_frames: int) -> tuple[int, int, int]:
  """(default, lowest, highest) frames of context for `mode` in a window of num_frames: the given
  video's frames kept when extending and the overlap of a long video's windows (default half the
  window), or each end a loop's bridge is given (a quarter; the bridge makes at least one frame)."""
  if mode == "loop":
    return max(1, num_frames // 4), 1, (num_frames - 1) // 2
  return num_frames // 2, 1, num_frames - 1


def _context_frames(extend_frames, num_frames, video, path):
  k = extend_frames or context_limits("extend_forward", num_frames)[0]
  if not 1 <= k < num_frames:
    raise ModeError(f"--extend_frames={k} must be between 1 and num_frames - 1 = {num_frames - 1}.")
  if len(video) < k:
    raise ModeError(f"{path} has {len(video)} frames, shorter than the conditioning window of "
                    f"{k} frames (--extend_frames); lower --extend_frames.")
  return k


def run(mode: str, sampler, prompts, seeds, opts, *, image=None, video=None, connect=None,
        extend_frames=None, strength=None, total_frames=None, progress=None) -> list[np.ndarray]:
  """Generates one uint8 video [T', H, W, 3] per prompt for `mode` (see MODES).

  Args:
    opts: VideoSampler.generate keywords (num_frames is the model's window); "frame_cfg", the
      separate frame guidance scale, applies to the conditioned generations only.
    image: path, for "image". video: path, for "extend_*" and "edit". connect: (path A, path B).
    extend_frames: conditioning frames taken from the given video (default half the window);
      also the overlap between windows of a "long" video, and for "loop" the frames of each end its
      bridge is given (default a quarter of the window). A loop is the window's video followed by
      num_frames - 2 * extend_frames bridging frames.
    strength: for "edit", the noise level in [0, 1] the input is taken to (0 returns it).
    total_frames: for "long", the length of the result.
  """
  t, h, w = opts["num_frames"], opts["height"], opts["width"]
  conditioned_opts, opts = opts, {k: v for k, v in opts.items() if k != "frame_cfg"}
  if mode == "text":
    return list(pixels.to_uint8(sampler.generate(prompts, seeds, progress=progress, **opts)))
  if mode == "image":
    given, mask = _window(opts, {0: load_frames(image, h, w)[0]})
    return list(_conditioned(sampler, prompts, seeds, conditioned_opts, given, mask, progress))
  if mode in ("extend_forward", "extend_backward"):
    source = load_frames(video, h, w)
    k = _context_frames(extend_frames, t, source, video)
    if mode == "extend_forward":
      given, mask = _window(opts, {i: source[len(source) - k + i] for i in range(k)})
      out = _conditioned(sampler, prompts, seeds, conditioned_opts, given, mask, progress)
      return [np.concatenate([source, v[k:]]) for v in out]
    given, mask = _window(opts, {t - k + i: source[i] for i in range(k)})
    out = _conditioned(sampler, prompts, seeds, conditioned_opts, given, mask, progress)
    return [np.concatenate([v[:t - k], source]) for v in out]
  if mode == "connect":
    raw = [_read(p) for p in connect]
    if raw[0].shape[1:3] != raw[1].shape[1:3]:
      raise ModeError(f"--connect clips differ in size ({'x'.join(map(str, raw[0].shape[1:3]))} vs "
                      f"{'x'.join(map(str, raw[1].shape[1:3]))}); resize one to match the other.")
    a, b = (load_frames(p, h, w, frames) for p, frames in zip(connect, raw))
    given, mask = _window(opts, {0: a[-1], t - 1: b[0]})
    return list(_conditioned(sampler, prompts, seeds, conditioned_opts, given, mask, progress))
  if mode == "loop":
    # Sora's recipe: a text-to-video clip, then a bridge from its last frames back to its first ones.
    # Played on repeat, every frame (the wrap included) leads to the next by ordinary motion.
    default, lowest, highest = context_limits("loop", t)
    k = extend_frames or default
    if not lowest <= k <= highest:
      raise ModeError(f"--extend_frames={k} must be between 1 and {highest} for a loop: the bridge window "
                      f"of num_frames={t} holds that many frames of each end and at least one new frame.")
    first = pixels.to_uint8(sampler.generate(prompts, seeds, progress=progress, **opts))
    out = []
    for i, video_i in enumerate(first):  # each prompt closes its own loop
      ends = {j: video_i[len(video_i) - k + j] for j in range(k)} | {t - k + j: video_i[j] for j in range(k)}
      given, mask = _window(opts, ends)
      bridge = _conditioned(sampler, prompts[i:i + 1], seeds[i:i + 1], conditioned_opts, given, mask, progress)[0]
      out.append(np.concatenate([video_i, bridge[k:t - k]]))
    return out
  if mode == "edit":
    if strength is None or not 0.0 <= strength <= 1.0:
      raise ModeError(f"--strength={strength} must be in [0, 1] (0 keeps the video, 1 ignores it).")
    source = load_frames(video, h, w)
    if len(source) < t:
      raise ModeError(f"{video} has {len(source)} frames; editing needs num_frames={t}. Lower "
                      "--num_frames.")
    if strength == 0.0:
      return [source[:t].copy() for _ in prompts]
    init = np.broadcast_to(pixels.to_model_space(source[:t]), (len(prompts),) + source[:t].shape)
    return list(pixels.to_uint8(sampler.generate(prompts, seeds, init_video=init, strength=strength,
                                           progress=progress, **opts)))
  if mode == "long":
    k = extend_frames or context_limits("long", t)[0]
    if not 1 <= k < t:
      raise ModeError(f"--extend_frames={k} must be between 1 and num_frames - 1 = {t - 1}.")
    videos = list(pixels.to_uint8(sampler.generate(prompts, seeds, progress=progress, **opts)))
    for window in range(math.ceil(max(0, total_frames - t) / (t - k))):
      for i, v in enumerate(videos):
        given, mask = _window(opts, {j: v[len(v) - k + j] for j in range(k)})
        seed = [seeds[i] + 1000 * (window + 1)]
        new = _conditioned(sampler, prompts[i:i + 1], seed, conditioned_opts, given, mask, progress)[0]
        videos[i] = np.concatenate([v, new[k:]])
    return [v[:total_frames] for v in videos]
  raise ModeError(f"Unknown mode {mode!r}; choose one of {MODES}.")
