"""Toy quality ablations: what makes the toy model's shapes right and its videos steady, per minute of CPU.

  python benchmarks/toy_quality.py --variants=demo,uniform_t [--steps=3000] \
      [--out=benchmarks/results/toy_quality_cpu.json]

Each variant trains configs/toy.py with its overrides (runs/toy_quality/NAME; a finished workdir is
reused) and is evaluated with configs/evals/toy.py (`vdit.evaluate`: 64 videos of the held-out and
seen prompts against 512 eval clips, with the variant's sampling flags). A row: held-out and seen
colour / shape / direction by the toy judge, FVD and FID (toy features), motion over the real
clips' motion, temporal consistency (real clips': `reference_temporal_consistency`), validation
loss, training and evaluation wall time. The judge's own accuracy on 256 real eval clips (raw
frames, as the evaluator judges the samples) is recorded beside them.

Needs the demo's data: runs/toy_data, runs/toy_eval_data, runs/toy_features.safetensors
(`bash launch/toy_demo.sh` makes them; or see configs/evals/toy.py).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import results_io  # noqa: E402  (benchmarks/, on sys.path as the script's directory)
from vdit.core.cpu_malloc import MALLOC_ENV  # noqa: E402

# name -> (config overrides for training, evaluation overrides (eval config keys)). Variants that
# share training overrides share one trained workdir (keyed by `train_as`).
VARIANTS = {
    "demo": ([], []),
    "cfg2": ([], ["sample.cfg=2.0"]),
    "cfg1": ([], ["sample.cfg=1.0"]),
    "logit_mean_0": (["diffusion.logit_mean=0.0"], []),
    "uniform_t": (["diffusion.timestep_sampling=uniform"], []),
    "ema_0.999": (["optim.ema_decay=0.999"], []),
    "patch_1x8x8": (["model.patch_size=(1,8,8)"], []),
    "batch_32": (["train.global_batch_size=32"], []),
    # One temporal patch per 8-frame clip, 4x4-pixel patches: the same 64 tokens, no seams between
    # temporal patches and a 2x finer grid for the shape.
    "patch_8x4x4": (["model.patch_size=(8,4,4)"], []),
    # EDM-style skip: near clean data the estimate is mostly the input (model/factory.py).
    "x_skip": (["model.prediction=x_skip"], []),
}
_TRAIN_AS = {"cfg2": "demo", "cfg1": "demo"}


def _run(argv, log_path):
  start = time.perf_counter()
  with open(log_path, "w") as log:
    result = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, **MALLOC_ENV))
  if result.returncode:
    sys.exit(f"error: {' '.join(argv[:2])} failed (exit {result.returncode}); see {log_path}")
  return time.perf_counter() - start


def _train(name, overrides, args) -> tuple[str, float]:
  workdir = os.path.join(args.runs, name)
  done = os.path.join(workdir, "checkpoints", str(args.steps))
  if os.path.isdir(done):
    return workdir, None
  os.makedirs(workdir, exist_ok=True)
  seconds = _run(["vdit.main", f"--config=configs/toy.py:steps={args.steps}", f"--workdir={workdir}",
                  f"--config.data.dir={args.data}", f"--config.train.checkpoint_every={args.steps}",
                  *[f"--config.{o}" for o in overrides]], os.path.join(workdir, "train.log"))
  return workdir, seconds


def _evaluate(name, workdir, overrides, args) -> dict:
  out = os.path.join(args.runs, name, "eval")
  seconds = _run(["vdit.evaluate", f"--workdir={workdir}", "--eval=configs/evals/toy.py", f"--out={out}",
                  f"--eval.reference_dir={args.eval_data}", f"--eval.features.path={args.features}",
                  *[f"--eval.{o}" for o in overrides]], os.path.join(args.runs, name, "eval.log"))
  with open(os.path.join(out, f"step_{args.steps:08d}", "results.json")) as f:
    return json.load(f), seconds


def _train_seconds(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return max((json.loads(line).get("uptime", 0) for line in f), default=None)


def _row(name, train_overrides, eval_overrides, results, eval_seconds, workdir) -> dict:
  m, ref = results["metrics"], results["reference_metrics"]
  pick = lambda split: {k: round(m[f"{split}_{k}_accuracy"], 4) for k in ("colour", "shape", "direction")}
  return {
      "name": name, "train_overrides": train_overrides, "eval_overrides": eval_overrides,
      "held_out": pick("held_out"), "seen": pick("seen"),
      "fvd": round(m["fvd"], 3), "fid": round(m["fid"], 3),
      "motion_ratio_to_real": round(m["motion"] / ref["motion"], 3),
      "temporal_consistency": round(m["temporal_consistency"], 4),
      "reference_temporal_consistency": round(ref["temporal_consistency"], 4),
      "val_loss": round(m["val_loss"], 4),
      "train_seconds": _train_seconds(workdir), "eval_seconds": round(eval_seconds, 1),
      "sample_options": results["sample_options"],
  }


def _judge_on_real(eval_data) -> dict:
  from vdit.toy import judge
  report = judge.judge_real_clips(eval_data, 256, mp4_scale=0)
  return {k: report[k] for k in report if k.endswith("accuracy") or k == "num_videos"}


def markdown(rows, real) -> str:
  pct = lambda split: " / ".join(f"{100 * split[k]:.0f}%" for k in ("colour", "shape", "direction"))
  lines = ["| variant | held-out colour / shape / direction | seen | FVD | FID | motion / real | temporal "
           "consistency | train s |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['name']} | {pct(r['held_out'])} | {pct(r['seen'])} | {r['fvd']:.2f} | {r['fid']:.2f} | "
                 f"{r['motion_ratio_to_real']:.2f} | {r['temporal_consistency']:.3f} (real "
                 f"{r['reference_temporal_consistency']:.3f}) | {r['train_seconds'] or 0:.0f} |")
  lines.append(f"\nThe judge on {real.get('num_videos')} real eval clips: {json.dumps(real)}")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--variants", default=",".join(VARIANTS), help=f"Comma-separated, of {list(VARIANTS)}.")
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--data", default="runs/toy_data")
  parser.add_argument("--eval_data", default="runs/toy_eval_data")
  parser.add_argument("--features", default="runs/toy_features.safetensors")
  parser.add_argument("--runs", default="runs/toy_quality", help="Where each variant's workdir goes.")
  parser.add_argument("--out", default="", help="Default: benchmarks/results/toy_quality_cpu.json at 3000 "
                      "steps, toy_quality_STEPS_steps_cpu.json otherwise.")
  args = parser.parse_args()
  suffix = "" if args.steps == 3000 else f"_{args.steps}_steps"
  args.out = args.out or os.path.join(ROOT, "benchmarks", "results", f"toy_quality{suffix}_cpu.json")
  names = [n for n in args.variants.split(",") if n]
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    sys.exit(f"error: unknown variants {unknown}; choose from {list(VARIANTS)}")
  for path in (args.data, args.eval_data, args.features):
    if not os.path.exists(os.path.join(ROOT, path)):
      sys.exit(f"error: {path} does not exist; run `bash launch/toy_demo.sh` first (it makes the toy data and features)")

  rows = []
  for name in names:
    train_overrides, eval_overrides = VARIANTS[name]
    base = _TRAIN_AS.get(name, name)
    workdir, _ = _train(base, VARIANTS[base][0], args)
    results, eval_seconds = _evaluate(name, workdir, eval_overrides, args)
    rows.append(_row(name, VARIANTS[base][0], eval_overrides, results, eval_seconds, workdir))
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  real = _judge_on_real(args.eval_data)
  rows = _kept_rows(args.out, args.steps, {r["name"] for r in rows}) + rows
  results_io.write(args.out, {"steps": args.steps, "judge_on_real_clips": real, "rows": rows}, markdown(rows, real))


def _kept_rows(path, steps, replaced) -> list[dict]:
  """Rows of an earlier run at the same step count for variants this run did not measure."""
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    earlier = json.load(f)
  return [r for r in earlier["rows"] if r["name"] not in replaced] if earlier.get("steps") == steps else []


if __name__ == "__main__":
  main()
