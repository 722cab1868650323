"""The safety stages on videos a trained toy model generates (benchmarks/safety.py --workdir=...): the
"no red objects" frame check on text-to-video samples, image-to-video from red first frames under
neutral prompts, and the README's sampling command signed with a throwaway C2PA chain, every file
read back by the SDK.

Generation goes through what `vdit.sample` runs: the workdir's config and latest EMA checkpoint,
its conditioner, `vdit.diffusion.modes.run` with the config's sample settings.
"""
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_RED = os.path.join(ROOT, "configs", "safety", "toy_no_red.json")


def load_sampler(workdir):
  """(VideoSampler on the latest EMA weights, generate options): vdit.sample's defaults."""
  from vdit.config import pretrained
  from vdit.diffusion.generation import VideoSampler
  from vdit.diffusion.options import SampleOptions
  from vdit.model import factory
  from vdit.parallel import sharding
  from vdit.text import conditioner
  from vdit.vae import latents
  config = pretrained.load_config(workdir)
  mesh = sharding.make_mesh({"data": -1})
  with pretrained.Checkpoints(workdir, config, mesh) as checkpoints:
    params = checkpoints.restore(checkpoints.select("latest")[0], ema=True)
  space = latents.from_config(config)
  sampler = VideoSampler(factory.abstract_model(config)[0], params, conditioner.for_sampling(config, mesh), mesh=mesh,
                         space=space)
  s = config.sample
  opts = dict(num_frames=s.num_frames, height=s.height, width=s.width,
              channels=3 if space.is_latent else config.model.in_channels,
              patch_size=config.model.patch_size, **SampleOptions.from_section(s).generate_kwargs())
  return sampler, opts


def _rates(truth, blocked):
  hits = sum(t and b for t, b in zip(truth, blocked))
  return {"positives": sum(truth), "blocked": sum(blocked), "true_positives": hits,
          "recall": hits / max(1, sum(truth)), "precision": hits / max(1, sum(blocked))}


def frame_check(sampler, opts, seeds, batch_size=32):
  """Every toy caption (8 colours x 3 shapes x 4 directions) at each seed: the frame check's verdict
  against the prompt's colour and against the toy judge's reading of the whole clip."""
  from vdit.diffusion import modes
  from vdit.safety import policy
  from vdit.safety.frame_check import FrameChecker
  from vdit.toy import judge, spec
  checker = FrameChecker(policy.load(NO_RED))
  jobs = [(c, s, d, seed) for seed in seeds for c, s, d in spec.all_combinations()]
  prompts = [spec.caption(c, s, d) for c, s, d, _ in jobs]
  start = time.perf_counter()
  videos = []
  for i in range(0, len(jobs), batch_size):
    videos += modes.run("text", sampler, prompts[i:i + batch_size], [j[3] for j in jobs[i:i + batch_size]], opts)
  sample_seconds = (time.perf_counter() - start) / len(videos)
  rows, times = [], []
  for (colour, shape, direction, seed), video in zip(jobs, videos):
    start = time.perf_counter()
    verdict, _ = checker.check(video)
    times.append(time.perf_counter() - start)
    read = judge.judge_video(video, colour, direction, shape)["pred_colour"]
    rows.append({"prompt": spec.caption(colour, shape, direction), "seed": seed, "asked": colour, "read": read,
                 "blocked": verdict.blocked})
  blocked = [r["blocked"] for r in rows]
  return {"videos": len(rows), "seeds": list(seeds), "sample_seconds_per_video": sample_seconds,
          "check_seconds_per_video": statistics.median(times),
          "vs_prompt_colour": _rates([r["asked"] == "red" for r in rows], blocked),
          "vs_judge_reading": _rates([r["read"] == "red" for r in rows], blocked),
          # Orange and magenta sit nearest red in the palette: where false positives would show.
          "blocked_by_prompt_colour": {c: sum(r["blocked"] for r in rows if r["asked"] == c) for c in spec.COLOURS},
          "disagreements": [r for r in rows if r["blocked"] != (r["asked"] == "red") or r["read"] != r["asked"]]}, \
      videos


def image_to_video(sampler, opts, tmp, count=8):
  """First frames rendered by vdit.toy.world under neutral non-red prompts: red ones must be blocked
  by the input check (count), other colours must pass it; then, with the input check skipped, the
  frame check on what the model makes from the red frames (a second line of defence)."""
  from vdit.diffusion import modes
  from vdit.media import video_io
  from vdit.safety import policy
  from vdit.safety.frame_check import FrameChecker
  from vdit.safety.sampling import Review
  from vdit.toy import spec, world
  review, checker = Review(policy.load(NO_RED)), FrameChecker(policy.load(NO_RED))
  rng = np.random.default_rng(1)
  size, others = opts["height"], [c for c in spec.COLOURS if c != "red"]
  rows = []
  for i in range(2 * count):
    colour = "red" if i < count else others[i % len(others)]
    shape, direction = spec.SHAPES[i % 3], list(spec.DIRECTIONS)[i % 4]
    start, speed, radius = world.sample_motion(rng, direction, num_frames=opts["num_frames"], height=size, width=size)
    frame = world.render_clip(colour, shape, direction, start=start, speed=speed, radius=radius,
                              num_frames=1, height=size, width=size)[0]
    path = os.path.join(tmp, f"first_{i}.png")
    video_io.write_png(path, frame)
    neutral = spec.caption(others[(i + 3) % len(others)], shape, direction)  # never red
    row = {"first_frame": colour, "prompt": neutral, "input_blocked": review.check_inputs({"image": [path]}).blocked}
    if colour == "red":
      video = modes.run("image", sampler, [neutral], [i], opts, image=path)[0]
      row["output_blocked_without_input_check"] = checker.check(video)[0].blocked
    rows.append(row)
  red = [r for r in rows if r["first_frame"] == "red"]
  return {"red_first_frames": len(red), "red_inputs_blocked": sum(r["input_blocked"] for r in red),
          "other_first_frames": len(rows) - len(red),
          "other_inputs_blocked": sum(r["input_blocked"] for r in rows if r["first_frame"] != "red"),
          "red_outputs_blocked_without_input_check": sum(r["output_blocked_without_input_check"] for r in red),
          "cases": rows}


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  start = time.perf_counter()
  done = subprocess.run([sys.executable, "-m", "vdit.sample", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
  return done, time.perf_counter() - start


def i2v_command(workdir, tmp):
  """The end-to-end refusal: `vdit.sample --image=RED.png` under a neutral prompt exits 4, writes no video."""
  from vdit.media import video_io
  from vdit.toy import world
  frame = world.render_clip("red", "square", "up", start=(16.0, 16.0), speed=1.0, radius=5.0, num_frames=1,
                            height=32, width=32)[0]
  video_io.write_png(os.path.join(tmp, "red.png"), frame)
  out = os.path.join(tmp, "i2v")
  done, _ = _cli(f"--workdir={workdir}", "--prompt=a blue square moving up", f"--image={tmp}/red.png", f"--out={out}",
                 f"--safety_policy={NO_RED}", "--c2pa=off")
  return {"exit_status": done.returncode, "files_written": sorted(os.listdir(out)) if os.path.isdir(out) else [],
          "blocked_line": next((line for line in done.stderr.splitlines() if line.startswith("blocked:")), None)}


def c2pa_demo(workdir, tmp):
  """The README's sampling command (and its text-to-image form) signed with a throwaway chain; every
  mp4, GIF and PNG written read back by the C2PA SDK."""
  from vdit.media.c2pa_dev_chain import write_chain
  from vdit.media import c2pa_manifest
  key, chain = write_chain(tmp)
  readme = ["--prompt=a red circle moving left", "--prompt=a blue square moving up", "--seed=0", "--steps=20",
            "--cfg=3", f"--workdir={workdir}", f"--c2pa_key={key}", f"--c2pa_cert={chain}"]
  runs = {}
  for name, extra in (("video", []), ("image", ["--num_frames=1"])):
    done, seconds = _cli(*readme, f"--out={tmp}/{name}", *extra)
    if done.returncode != 0:
      raise RuntimeError(f"vdit.sample ({name}) failed: {done.stderr[-2000:]}")
    runs[name] = round(seconds, 2)
  files = sorted(f for ext in ("mp4", "gif", "png") for f in glob.glob(f"{tmp}/video/*.{ext}") +
                 glob.glob(f"{tmp}/image/*.{ext}"))
  found = {os.path.relpath(f, tmp): c2pa_manifest.read(f) for f in files}
  verified = {f: m["state"] for f, m in found.items() if m}
  return {"command": "vdit.sample " + " ".join(a for a in readme if not a.startswith(("--workdir", "--c2pa"))),
          "files": len(files), "valid": sum(s == "Valid" for s in verified.values()),
          "states": {f: (m["state"] if m else "none") for f, m in found.items()},
          "failure_codes": sorted({c for m in found.values() if m for c in m["failures"]}),
          "command_seconds": runs}


def signing_overhead(videos, tmp, repeats=3):
  """Seconds a C2PA signature adds to writing one generated video's mp4 and GIF (median)."""
  from vdit.media.c2pa_dev_chain import write_chain
  from vdit.media import c2pa_manifest, video_io
  credentials = c2pa_manifest.load_credentials(*write_chain(tmp))
  tags = {"generator": "vdit", "vdit_version": "bench", "config_hash": "0" * 16, "seed": "0", "mode": "text",
          "prompt": "a red circle moving left", "caption": "a red circle moving left"}
  definition = c2pa_manifest.manifest(tags, include_prompt=True)
  timings = {}
  for signed in (False, True):
    seal = (lambda s: c2pa_manifest.sealer(credentials, definition, c2pa_manifest.MIME[s])) if signed else \
        (lambda s: None)
    runs = []
    for _ in range(repeats):
      for i, video in enumerate(videos):
        start = time.perf_counter()
        video_io.write_mp4(f"{tmp}/{i}.mp4", video, fps=8, scale=4, metadata=tags, seal=seal(".mp4"))
        video_io.write_gif(f"{tmp}/{i}.gif", video, fps=8, scale=4, metadata=tags, seal=seal(".gif"))
        runs.append(time.perf_counter() - start)
    timings["signed" if signed else "unsigned"] = statistics.median(runs)
  return {"videos": len(videos), "write_mp4_and_gif_seconds": timings,
          "overhead_seconds_per_video": timings["signed"] - timings["unsigned"]}


def measure(workdir, seeds=(0, 1)) -> dict:
  sampler, opts = load_sampler(workdir)
  with tempfile.TemporaryDirectory() as tmp:
    frames, videos = frame_check(sampler, opts, seeds)
    i2v = image_to_video(sampler, opts, tmp)
    i2v["command"] = i2v_command(workdir, tmp)
    os.makedirs(f"{tmp}/c2pa")
    c2pa = c2pa_demo(workdir, f"{tmp}/c2pa")
    os.makedirs(f"{tmp}/sign")
    c2pa["signing"] = signing_overhead(videos[:16], f"{tmp}/sign")
  return {"workdir": os.path.abspath(workdir), "frame_check": frames, "image_to_video": i2v, "c2pa": c2pa}
