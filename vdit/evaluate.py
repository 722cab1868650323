"""Evaluation entry point: a workdir's checkpoint -> sampled eval set, metrics, plots, HTML gallery.

  python -m vdit.evaluate --workdir=runs/toy --eval=configs/evals/toy.py [--checkpoint=STEP|latest|all]
      [--out=DIR] [--eval.num_reference=1024 ...]

Writes DIR (default WORKDIR/eval/NAME)/step_{step:08d}/{results.json, index.html, videos/} and
DIR/{index.html, plots/}; prints the metrics. Sampling and features are sharded over every device
of every process (launch one process per host as for training); process 0 writes.
"""
import json
import os

from absl import flags
from ml_collections import config_flags

from vdit.core import command
from vdit.core.errors import UserError


def define_flags():
  config_flags.DEFINE_config_file("eval", None, "Eval config file (configs/evals/NAME.py[:args]).",
                                  lock_config=True)
  command.define_path("workdir", None, "Training workdir (config.json + checkpoints/).", kind="dir")
  flags.DEFINE_string("checkpoint", "latest", "Checkpoint step, 'latest' or 'all' (every kept one).")
  command.define_output_dir("out", None, "Output directory (default: WORKDIR/eval/NAME; created if missing).")
  flags.DEFINE_bool("ema", True, "Evaluate the EMA weights (--noema for the raw weights).")
  flags.mark_flags_as_required(["eval", "workdir"])


def check_eval_config(eval_config, workdir: str, out: str | None) -> str:
  """The output directory, after the checks that need no model: the eval config, the sampling
  overrides eval_config.validate leaves open, and where the results go."""
  from vdit.eval import eval_config as eval_config_lib
  eval_config_lib.validate(eval_config)
  steps, seed = eval_config.sample.steps, eval_config.seed
  if steps < 0:
    raise UserError(f"eval config sample.steps={steps} must be >= 1 (or 0: the workdir config's sample.steps).")
  if not 0 <= seed <= 2**31 - 1:  # seeds + offsets become uint32 noise keys
    raise UserError(f"eval config seed={seed} must be in [0, 2**31 - 1].")
  if out is None:  # a given --out was checked with the flags
    out = os.path.join(workdir, "eval", eval_config.name)
    problem = command.output_dir_problem(out)
    if problem:
      raise UserError(f"cannot write results to the default --out: {problem} (or pass --out=DIR).")
  return out


def main(f):
  out = check_eval_config(f.eval, f.workdir, f.out)  # before any heavy import or model work
  from vdit.core import logs
  from vdit.parallel import distributed
  logs.quiet_library_logs()
  distributed.maybe_initialize()
  import jax

  from vdit.config import pretrained
  from vdit.parallel import sharding
  from vdit.eval.evaluator import Evaluator

  workdir = f.workdir
  config = pretrained.load_config(workdir)
  eval_config = f.eval
  mesh = sharding.make_mesh({"data": -1})
  with pretrained.Checkpoints(workdir, config, mesh) as checkpoints:
    steps = checkpoints.select(f.checkpoint)  # every chosen step checked before any sampling
    evaluator = Evaluator(config, eval_config, workdir=workdir, out_dir=out, mesh=mesh)
    for step in steps:
      results = evaluator.run(checkpoints.restore(step, ema=f.ema), step)
      if jax.process_index() == 0:
        print(json.dumps({"step": step, "metrics": results["metrics"], "skipped": results["skipped"]}, indent=2))
  if jax.process_index() == 0:
    print(f"Results, plots and gallery: {os.path.abspath(out)}/index.html")


if __name__ == "__main__":
  command.run(main, define_flags)
