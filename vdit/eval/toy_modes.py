"""Every sampling mode on a trained toy checkpoint, judged: prints JSON and writes the GIFs.

  python -m vdit.eval.toy_modes --workdir=runs/toy --out=runs/toy/modes [--videos=8]

Inputs are toy-world clips rendered here (so their colour, shape and direction are known).
Per mode: image-to-video (PSNR of frame 0; direction of the motion asked for), extend forward
and backward (the given frames kept exactly; at the boundary, the distance in pixels between the
shape's centre in the first generated frame and in the true continuation of the rendered clip,
next to the shape's per-frame speed; direction continued), connect (starts at A's last frame, ends at B's
first), loop (last frame equals the first), edit (the colour follows the new prompt while the
direction is kept), text-to-image (colour), and a long video (direction held over 3 windows).
"""
import json
import os

from absl import app, flags
import numpy as np

from data_prep import toy_spec, toy_world
from vdit import checkpoint as ckpt_lib
from vdit import config_io, logs, sample_modes, sharding, train_state, video_io
from vdit.eval import toy as judge
from vdit.sampling import VideoSampler
from vdit.text.tokenizer import Tokenizer

_WORKDIR = flags.DEFINE_string("workdir", "runs/toy", "A trained toy workdir.")
_OUT = flags.DEFINE_string("out", "runs/toy/modes", "Where the GIFs and results.json go.")
_VIDEOS = flags.DEFINE_integer("videos", 8, "Videos per mode.")


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


def main(argv):
  del argv
  logs.quiet_library_logs()
  config = config_io.for_inference(config_io.load(_WORKDIR.value))
  s = config.sample
  checkpointer = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(_WORKDIR.value), read_only=True)
  mesh = sharding.make_mesh({"data": -1})
  graphdef, _ = train_state.abstract_model(config)
  params = checkpointer.restore_item(checkpointer.latest_step(), "ema", train_state.abstract_params(config, mesh))
  checkpointer.close()
  sampler = VideoSampler(graphdef, params, Tokenizer(config.text.max_length), mesh=mesh)
  t, size = s.num_frames, s.height
  opts = dict(num_frames=t, height=size, width=s.width, channels=3, patch_size=config.model.patch_size,
              steps=s.steps, cfg=s.cfg, sampler="dpmpp_2m", shift=s.shift)
  rng = np.random.default_rng(0)
  combos = toy_spec.all_combinations()
  os.makedirs(_OUT.value, exist_ok=True)
  inputs = os.path.join(_OUT.value, "inputs")
  os.makedirs(inputs, exist_ok=True)
  results = {name: [] for name in ("image", "extend_forward", "extend_backward", "connect", "loop",
                                   "edit", "text_to_image", "long")}

  def save(name, i, video):
    if i == 0:
      video_io.write_gif(os.path.join(_OUT.value, f"{name}.gif"), video, fps=8, scale=4)

  for i in range(_VIDEOS.value):
    colour, shape, direction = combos[rng.integers(len(combos))]
    prompt = [toy_spec.caption(colour, shape, direction)]
    seed = [i]
    source = _clip(rng, colour, shape, direction, t, size)
    path = os.path.join(inputs, f"{i}.gif")
    video_io.write_gif(path, source, fps=8)
    png = os.path.join(inputs, f"{i}.png")
    video_io.write_png(png, source[0])

    save("text", i, sample_modes.run("text", sampler, prompt, seed, opts)[0])
    video = sample_modes.run("image", sampler, prompt, seed, opts, image=png)[0]
    verdict = judge.judge_video(video, colour, direction)
    results["image"].append({"psnr_frame0": _psnr(video[0], source[0]), "direction": verdict["direction_ok"]})
    save("image", i, video)

    # Extension: render t + k frames (the shape stays in view throughout), give t of them, and
    # compare the first generated frame with the rendered frame it should be.
    k = t // 2
    truth = _clip(rng, colour, shape, direction, t + k, size)
    speed = float(np.linalg.norm(_centre(truth[1]) - _centre(truth[0])))
    for mode, given, expected, first_new in (("extend_forward", truth[:t], truth[t], t),
                                             ("extend_backward", truth[k:], truth[k - 1], k - 1)):
      given_path = os.path.join(inputs, f"{i}_{mode}.gif")
      video_io.write_gif(given_path, given, fps=8)
      video = sample_modes.run(mode, sampler, prompt, seed, opts, video=given_path, extend_frames=k)[0]
      kept = video[:t] if mode == "extend_forward" else video[-t:]
      results[mode].append({
          "given_kept_psnr": _psnr(kept, given),
          "boundary_error_px": float(np.linalg.norm(_centre(video[first_new]) - _centre(expected))),
          "speed_px": speed,
          "direction": judge.judge_video(video, colour, direction)["direction_ok"]})
      save(mode, i, video)

    other = _clip(rng, colour, shape, direction, t, size)
    other_path = os.path.join(inputs, f"{i}_b.gif")
    video_io.write_gif(other_path, other, fps=8)
    video = sample_modes.run("connect", sampler, prompt, seed, opts, connect=[path, other_path])[0]
    results["connect"].append({"start_psnr": _psnr(video[0], source[-1]), "end_psnr": _psnr(video[-1], other[0])})
    save("connect", i, video)

    video = sample_modes.run("loop", sampler, prompt, seed, opts)[0]
    results["loop"].append({"last_vs_first_psnr": _psnr(video[-1], video[0])})
    save("loop", i, video)

    new_colour = [c for c in toy_spec.COLOURS if c != colour][rng.integers(len(toy_spec.COLOURS) - 1)]
    edit_prompt = [toy_spec.caption(new_colour, shape, direction)]
    video = sample_modes.run("edit", sampler, edit_prompt, seed, opts, video=path, strength=0.8)[0]
    verdict = judge.judge_video(video, new_colour, direction)
    results["edit"].append({"colour": verdict["colour_ok"], "direction": verdict["direction_ok"]})
    save("edit", i, video)

    image = sample_modes.run("text", sampler, prompt, seed, dict(opts, num_frames=config.model.patch_size[0]))[0][:1]
    results["text_to_image"].append({"colour": judge.judge_video(image, colour, direction)["colour_ok"]})
    save("text_to_image", i, np.repeat(image, 2, axis=0))

    video = sample_modes.run("long", sampler, prompt, seed, opts, total_frames=3 * t - 2 * k, extend_frames=k)[0]
    results["long"].append({"frames": int(video.shape[0]),
                            "direction": judge.judge_video(video, colour, direction)["direction_ok"]})
    save("long", i, video)

  summary = {mode: {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
             for mode, rows in results.items()}
  with open(os.path.join(_OUT.value, "results.json"), "w") as f:
    json.dump({"summary": summary, "videos": results}, f, indent=2)
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  app.run(main)
