"""Every sampling mode on a trained toy checkpoint, judged: prints JSON and writes the GIFs.

  python -m vdit.eval.toy_modes --workdir=runs/toy --out=runs/toy/modes [--videos=8] [--modes=edit,loop]

Inputs are toy-world clips rendered here (so their colour, shape and direction are known).
Per mode: image-to-video (PSNR of frame 0; direction of the motion asked for), extend forward
and backward (the given frames kept exactly; at the boundary, the distance in pixels between the
shape's centre in the first generated frame and in the true continuation of the rendered clip,
next to the shape's per-frame speed, and the seam's move over the given frames' mean move;
direction continued), connect (starts at A's last frame, ends at B's first), loop (how far the
shape travels, and the wrap from the last frame to the first over the loop's mean move), edit (the
colour follows the new prompt while the direction and the shape's path are kept), text-to-image
(colour), and a long video (direction held over 3 windows).
"""
import json
import os

from absl import flags
import numpy as np

from vdit.core import command, logs
from vdit.media import video_io
from vdit.toy import judge
from vdit.toy import spec as toy_spec
from vdit.toy import world as toy_world


def _clip(rng, colour, shape, direction, t, size):
  start, speed, radius = toy_world.sample_motion(rng, direction, num_frames=t, height=size, width=size)
  return toy_world.render_clip(colour, shape, direction, start=start, speed=speed, radius=radius,
                               num_frames=t, height=size, width=size)


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b) ** 2)
  return 99.0 if mse == 0 else float(10 * np.log10(255 ** 2 / mse))


def _centre(frame):
  """The toy shape's centre (x, y) in pixels: the mean of its foreground pixels."""
  distance = np.linalg.norm(frame.astype(np.float64) - np.asarray(toy_spec.BACKGROUND), axis=-1)
  ys, xs = np.nonzero(distance > 60)
  return np.array([xs.mean(), ys.mean()]) if len(xs) else np.array([np.inf, np.inf])


def _centres(video) -> np.ndarray:
  """[T, 2]: the shape's centre in each frame; NaN in a frame without one."""
  c = np.stack([_centre(frame) for frame in video])
  return np.where(np.isfinite(c), c, np.nan)


def _moves(centres) -> np.ndarray:
  """The shape's move between consecutive frames, in pixels (NaN where a frame has no shape)."""
  return np.linalg.norm(np.diff(centres, axis=0), axis=1)


def _travel(video) -> float:
  """How far the shape gets from where it is first seen, in pixels (the most over the frames)."""
  c = _centres(video)
  seen = c[np.isfinite(c[:, 0])]
  return float(np.max(np.linalg.norm(seen - seen[0], axis=1))) if len(seen) else float("nan")


def _step_ratio(video, a: int, given: slice) -> float:
  """The shape's move from frame a to a + 1 over its mean move per frame within video[given]."""
  c = _centres(video)
  return float(np.linalg.norm(c[a + 1] - c[a]) / max(np.nanmean(_moves(c[given])), 1e-6))


MODES = ("text", "image", "extend_forward", "extend_backward", "connect", "loop", "edit", "text_to_image", "long")


def judge_modes(sampler, opts, num_videos: int, out_dir: str, modes=MODES, seed: int = 0,
                edit_strength: float = 0.8) -> dict:
  """Runs each of `modes` on `num_videos` toy inputs; returns {mode: [per-video measures]}.

  opts: sample_modes options (num_frames is the model's window; height == width). Inputs and the
  first video of each mode (as a 4x GIF) are written under out_dir.
  """
  from vdit.diffusion import modes as sample_modes  # JAX: imported once the flags are known to be good
  unknown = sorted(set(modes) - set(MODES))
  if unknown:
    raise ValueError(f"Unknown modes {unknown}; choose from {MODES}.")
  t, size = opts["num_frames"], opts["height"]
  rng = np.random.default_rng(seed)
  combos = toy_spec.all_combinations()
  inputs = os.path.join(out_dir, "inputs")
  os.makedirs(inputs, exist_ok=True)
  results = {name: [] for name in modes}

  def save(name, i, video):
    if i == 0:
      video_io.write_gif(os.path.join(out_dir, f"{name}.gif"), video, fps=8, scale=4)

  def write_input(name, clip):
    path = os.path.join(inputs, name)
    video_io.write_gif(path, clip, fps=8)
    return path

  for i in range(num_videos):
    colour, shape, direction = combos[rng.integers(len(combos))]
    prompt = [toy_spec.caption(colour, shape, direction)]
    seed = [i]
    # Every input is drawn whatever the modes, so a mode's inputs do not depend on the others.
    source = _clip(rng, colour, shape, direction, t, size)
    path = write_input(f"{i}.gif", source)
    png = os.path.join(inputs, f"{i}.png")
    video_io.write_png(png, source[0])
    k = t // 2
    truth = _clip(rng, colour, shape, direction, t + k, size)
    other = _clip(rng, colour, shape, direction, t, size)
    new_colour = [c for c in toy_spec.COLOURS if c != colour][rng.integers(len(toy_spec.COLOURS) - 1)]

    if "text" in modes:
      video = sample_modes.run("text", sampler, prompt, seed, opts)[0]
      verdict = judge.judge_video(video, colour, direction)
      moves = _moves(_centres(video))
      results["text"].append({"colour": verdict["colour_ok"], "direction": verdict["direction_ok"],
                              "travel_px": _travel(video),
                              "largest_move_ratio": float(np.nanmax(moves) / max(np.nanmean(moves), 1e-6))})
      save("text", i, video)

    if "text_to_image" in modes:
      image = sample_modes.run("text", sampler, prompt, seed, dict(opts, num_frames=opts["patch_size"][0]))[0][:1]
      results["text_to_image"].append({"colour": judge.judge_video(image, colour, direction)["colour_ok"]})
      save("text_to_image", i, np.repeat(image, 2, axis=0))

    if "image" in modes:
      video = sample_modes.run("image", sampler, prompt, seed, opts, image=png)[0]
      verdict = judge.judge_video(video, colour, direction)
      results["image"].append({"psnr_frame0": _psnr(video[0], source[0]), "direction": verdict["direction_ok"]})
      save("image", i, video)

    # Extension: render t + k frames (the shape stays in view throughout), give t of them, and
    # compare the first generated frame with the rendered frame it should be.
    speed = float(np.linalg.norm(_centre(truth[1]) - _centre(truth[0])))
    # The seam: the move between the last given and the first new frame, over the given frames' moves.
    for mode, given, expected, first_new, seam, kept_frames in (
        ("extend_forward", truth[:t], truth[t], t, t - 1, slice(0, t)),
        ("extend_backward", truth[k:], truth[k - 1], t - k - 1, t - k - 1, slice(t - k, None))):
      if mode not in modes:
        continue
      given_path = write_input(f"{i}_{mode}.gif", given)
      video = sample_modes.run(mode, sampler, prompt, seed, opts, video=given_path, extend_frames=k)[0]
      kept = video[:t] if mode == "extend_forward" else video[-t:]
      results[mode].append({
          "given_kept_psnr": _psnr(kept, given),
          "boundary_error_px": float(np.linalg.norm(_centre(video[first_new]) - _centre(expected))),
          "speed_px": speed,
          "seam_step_ratio": _step_ratio(video, seam, kept_frames),
          "direction": judge.judge_video(video, colour, direction)["direction_ok"]})
      save(mode, i, video)

    if "connect" in modes:
      other_path = write_input(f"{i}_b.gif", other)
      video = sample_modes.run("connect", sampler, prompt, seed, opts, connect=[path, other_path])[0]
      results["connect"].append({"start_psnr": _psnr(video[0], source[-1]), "end_psnr": _psnr(video[-1], other[0])})
      save("connect", i, video)

    if "loop" in modes:
      video = sample_modes.run("loop", sampler, prompt, seed, opts)[0]
      # Played on repeat, the last frame leads to the first: that wrap, and every other move, should be
      # an ordinary one (the largest move over the mean; 1 = even motion all round).
      moves = _moves(_centres(np.concatenate([video, video[:1]])))
      mean = max(np.nanmean(moves), 1e-6)
      results["loop"].append({"frames": len(video), "travel_px": _travel(video), "wrap_step_ratio": float(moves[-1] / mean),
                              "largest_move_ratio": float(np.nanmax(moves) / mean)})
      save("loop", i, video)

    if "edit" in modes:
      edit_prompt = [toy_spec.caption(new_colour, shape, direction)]
      video = sample_modes.run("edit", sampler, edit_prompt, seed, opts, video=path, strength=edit_strength)[0]
      verdict = judge.judge_video(video, new_colour, direction)
      # Keeping the motion: the shape's path, frame by frame, against the input's.
      path_error = np.mean([np.linalg.norm(_centre(a) - _centre(b)) for a, b in zip(video, source)])
      results["edit"].append({"colour": verdict["colour_ok"], "direction": verdict["direction_ok"],
                              "path_error_px": float(path_error)})
      save("edit", i, video)

    if "long" in modes:
      video = sample_modes.run("long", sampler, prompt, seed, opts, total_frames=3 * t - 2 * k, extend_frames=k)[0]
      results["long"].append({"frames": int(video.shape[0]),
                              "direction": judge.judge_video(video, colour, direction)["direction_ok"]})
      save("long", i, video)
  return results


def summarise(results: dict) -> dict:
  """Per mode, the mean of each measure over videos (those where it could be measured)."""
  return {mode: {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0]}
          for mode, rows in results.items() if rows}


def load_sampler(workdir: str, frame_cfg=None):
  """(VideoSampler on the latest EMA weights, sample_modes options from the config's sample settings;
  frame_cfg, if not None, replaces the config's)."""
  from vdit.config import pretrained
  from vdit.diffusion.generation import VideoSampler
  from vdit.diffusion.options import SampleOptions
  from vdit.model import factory
  from vdit.parallel import sharding
  from vdit.text.tokenizer import Tokenizer
  config = pretrained.load_config(workdir)
  s = config.sample
  mesh = sharding.make_mesh({"data": -1})
  with pretrained.Checkpoints(workdir, config, mesh) as checkpoints:
    params = checkpoints.restore(checkpoints.select("latest")[0])
  graphdef, _ = factory.abstract_model(config)
  sampler = VideoSampler(graphdef, params, Tokenizer(config.text.max_length), mesh=mesh)
  opts = dict(num_frames=s.num_frames, height=s.height, width=s.width, channels=3,
              patch_size=config.model.patch_size,
              **SampleOptions.from_section(s, sampler="dpmpp_2m").generate_kwargs())  # the judge's fixed sampler
  if frame_cfg is not None:
    opts["frame_cfg"] = frame_cfg or None
  return sampler, opts


def define_flags():
  command.define_path("workdir", "runs/toy", "A trained toy workdir.", kind="dir")
  flags.DEFINE_string("out", "runs/toy/modes", "Where the GIFs and results.json go.")
  flags.DEFINE_integer("videos", 8, "Videos per mode.", lower_bound=1)
  flags.DEFINE_float("edit_strength", 0.8, "SDEdit strength of the edit mode.", lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_float("frame_cfg", None, "Separate guidance for conditioning frames (0: off; default: the "
                     "config's sample.frame_cfg).", lower_bound=0.0)
  flags.DEFINE_list("modes", None, f"Modes to run, of {','.join(MODES)} (default: all of them).")
  flags.register_validator("modes", lambda modes: not modes or set(modes) <= set(MODES),
                           f"choose modes from {','.join(MODES)}")


def main(f):
  logs.quiet_library_logs()
  modes = tuple(f.modes or MODES)
  sampler, opts = load_sampler(f.workdir, f.frame_cfg)
  os.makedirs(f.out, exist_ok=True)
  results = judge_modes(sampler, opts, f.videos, f.out, modes=modes, edit_strength=f.edit_strength)
  summary = summarise(results)
  with open(os.path.join(f.out, "results.json"), "w") as out:
    json.dump({"summary": summary, "videos": results}, out, indent=2)
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  command.run(main, define_flags)
