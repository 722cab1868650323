"""Sampling speed against quality on a trained toy model: network passes per video, seconds per video
on this machine, and the toy judge's colour/shape/direction on held-out and seen prompts, per setting.

  python benchmarks/sample_speed.py --workdir=runs/toy --data=runs/toy_data \
      [--student=runs/toy_student --student=student4000=runs/toy_student_4k] \
      [--features=runs/toy_features.safetensors --reference=runs/toy_eval_data] \
      [--out=benchmarks/results/sample_speed_cpu.json] [--repeats=4]

Settings: the teacher at its config's steps (20 for configs/toy.py) with CFG, at 50 steps, each
cache mode (vdit/diffusion/caching.py) at the config's steps, and a `vdit.distill` student at 1, 2
and 4 steps (guidance distilled in: one pass per step). Every setting samples the same prompts
(configs' held-out combinations plus seen ones, data_prep.toy_prompts) with the same seeds; the
seconds exclude compilation (one warm-up batch per setting). With --features and --reference (the
README demo's toy feature network and eval split) each row also has the toy FVD of its videos
against the reference clips and the FID of their frames (the same features and distance as
vdit.evaluate).
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import results_io  # noqa: E402  (benchmarks/, on sys.path as the script's directory)


def _settings(steps: int, students) -> list:
  teacher = [dict(name=f"teacher_{steps}_steps", steps=steps, cache="none"),
             dict(name="teacher_50_steps", steps=50, cache="none"),
             dict(name=f"cache_cfg_{steps}_steps", steps=steps, cache="cfg"),
             dict(name=f"cache_block_{steps}_steps", steps=steps, cache="block")]
  return teacher + [dict(name=f"{name}_{n}_steps", steps=n, cache="none", student=name)
                    for name in students for n in (1, 2, 4)]


def _distances(features_path: str, reference_dir: str, num_frames: int, mesh):
  """videos -> (FVD over video features, FID over every frame's features) against the reference clips
  (cut to the generated length, as vdit.evaluate does)."""
  import numpy as np
  from vdit.data import dataset_files
  from vdit.eval import stats
  from vdit.eval.toy_features import ToyFeatures
  features = ToyFeatures(features_path, mesh=mesh)
  clips = np.stack([c["frames"][:num_frames] for c in dataset_files.read_clips(reference_dir)])
  reference_frames, reference_videos = features.frames_and_videos(clips)
  flat = lambda f: f.reshape(-1, f.shape[-1])

  def distances(videos):
    frame_features, video_features = features.frames_and_videos(np.stack(videos))
    return (float(stats.frechet_distance(video_features, reference_videos)),
            float(stats.frechet_distance(flat(frame_features), flat(reference_frames))))

  return distances


def _student_flag(value: str) -> tuple[str, str]:
  """'[NAME=]WORKDIR' -> (name, workdir); the name defaults to 'student'."""
  name, sep, workdir = value.partition("=")
  return (name, workdir) if sep else ("student", value)


def _load(workdir, mesh):
  from vdit.config import pretrained
  from vdit.diffusion.generation import VideoSampler
  from vdit.model import factory
  from vdit.text import conditioner
  from vdit.vae import latents
  config = pretrained.load_config(workdir)
  with pretrained.Checkpoints(workdir, config, mesh) as checkpoints:
    step, = checkpoints.select(None)
    params = checkpoints.restore(step)
  return config, step, VideoSampler(factory.abstract_model(config)[0], params, conditioner.for_sampling(config, mesh),
                                    mesh=mesh, space=latents.from_config(config))


def markdown(rows: list) -> str:
  """The README's table: passes, seconds and the judge's accuracy (held-out | seen) per setting."""
  lines = ["| setting | network passes / video | s / video | held-out colour | held-out direction | held-out shape "
           "| seen colour | seen direction | FVD | FID |", "|---|---|---|---|---|---|---|---|---|---|"]
  pct = lambda v: f"{100 * v:.0f}%"
  for r in rows:
    lines.append(f"| {r['name']} | {r['network_passes_per_video']:g} | {r['seconds_per_video']:.3f} | "
                 f"{pct(r['held_out']['colour'])} | {pct(r['held_out']['direction'])} | {pct(r['held_out']['shape'])} | "
                 f"{pct(r['seen']['colour'])} | {pct(r['seen']['direction'])} | "
                 f"{'-' if r.get('fvd') is None else format(r['fvd'], '.2f')} | "
                 f"{'-' if r.get('fid') is None else format(r['fid'], '.2f')} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="A trained toy workdir (README Quickstart: runs/toy).")
  parser.add_argument("--data", required=True, help="Its toy dataset (held_out.json names the held-out combinations).")
  parser.add_argument("--student", action="append", default=[],
                      help="[NAME=]WORKDIR: a vdit.distill student of --workdir (rows NAME_1/2/4_steps); repeatable.")
  parser.add_argument("--features", default="", help="A toy feature network (vdit.eval.train_toy_features): FVD.")
  parser.add_argument("--reference", default="", help="With --features: reference clips (the toy eval split).")
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "sample_speed_cpu.json"))
  parser.add_argument("--repeats", type=int, default=4, help="Videos per prompt (each its own seed).")
  parser.add_argument("--batch_size", type=int, default=16)
  args = parser.parse_args()

  import jax
  import numpy as np
  from vdit.diffusion.options import SampleOptions
  from vdit.media import pixels
  from vdit.parallel import sharding
  from vdit.toy import judge, prompts as toy_prompts, spec as toy_spec

  mesh = sharding.make_mesh({"data": -1})
  students = dict(map(_student_flag, args.student))
  models = {False: _load(args.workdir, mesh), **{name: _load(path, mesh) for name, path in students.items()}}
  config, step, _ = models[False]
  distances = _distances(args.features, args.reference, config.sample.num_frames, mesh) if args.features else None
  captions = toy_prompts.eval_prompts(args.data, repeats=args.repeats)
  with open(os.path.join(args.data, "held_out.json")) as f:
    held_out = {tuple(c) for c in json.load(f)["combinations"]}
  seeds = list(range(len(captions)))
  s = config.sample
  rows = []
  for setting in _settings(s.steps, students):
    model_config, model_step, sampler = models[setting.get("student", False)]
    opts = dict(num_frames=s.num_frames, height=s.height, width=s.width, channels=config.model.in_channels,
                patch_size=config.model.patch_size,
                **SampleOptions.from_section(model_config.sample, steps=setting["steps"],
                                             cache=setting["cache"]).generate_kwargs())
    batches = [slice(i, i + args.batch_size) for i in range(0, len(captions), args.batch_size)]
    sampler.generate(captions[batches[0]], seeds[batches[0]], **opts)  # compiles
    sampler.network_passes, videos = 0, []
    start = time.perf_counter()
    for batch in batches:
      videos.extend(np.asarray(pixels.to_uint8(sharding.to_host(sampler.generate(captions[batch], seeds[batch], **opts)))))
    seconds = time.perf_counter() - start
    verdicts = {"seen": [], "held_out": []}
    for caption, video in zip(captions, videos):
      colour, shape, direction = toy_spec.parse_caption(caption)
      split = "held_out" if (colour, shape, direction) in held_out else "seen"
      verdicts[split].append(judge.judge_video(video, colour, direction, shape))
    rows.append({**setting, "checkpoint_step": int(model_step), "cfg": opts["cfg"], "sampler": opts["sampler"],
                 "network_passes_per_video": sampler.network_passes / len(captions),
                 "seconds_per_video": round(seconds / len(captions), 4),
                 **(dict(zip(("fvd", "fid"), (round(v, 3) for v in distances(videos)))) if distances else {"fvd": None, "fid": None}),
                 **{split: {k: sum(v[f"{k}_ok"] for v in vs) / len(vs) for k in ("colour", "shape", "direction")}
                    for split, vs in verdicts.items()}})
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  results_io.write(args.out, {"devices": [str(d) for d in jax.devices()][:1], "teacher": args.workdir,
                              "students": students, "features": args.features, "reference": args.reference, "teacher_step": int(step), "videos_per_setting": len(captions),
                              "rows": rows}, markdown(rows))


if __name__ == "__main__":
  main()
