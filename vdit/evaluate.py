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


def define_flags():
  config_flags.DEFINE_config_file("eval", None, "Eval config file (configs/evals/NAME.py[:args]).",
                                  lock_config=True)
  command.define_path("workdir", None, "Training workdir (config.json + checkpoints/).", kind="dir")
  flags.DEFINE_string("checkpoint", "latest", "Checkpoint step, 'latest' or 'all' (every kept one).")
  flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/eval/NAME).")
  flags.DEFINE_bool("ema", True, "Evaluate the EMA weights (--noema for the raw weights).")
  flags.mark_flags_as_required(["eval", "workdir"])


def main(f):
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
    out = f.out or os.path.join(workdir, "eval", eval_config.name)
    evaluator = Evaluator(config, eval_config, workdir=workdir, out_dir=out, mesh=mesh)
    for step in steps:
      results = evaluator.run(checkpoints.restore(step, ema=f.ema), step)
      if jax.process_index() == 0:
        print(json.dumps({"step": step, "metrics": results["metrics"], "skipped": results["skipped"]}, indent=2))
  if jax.process_index() == 0:
    print(f"Results, plots and gallery: {os.path.abspath(out)}/index.html")


if __name__ == "__main__":
  command.run(main, define_flags)
