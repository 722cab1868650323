"""Evaluation entry point: a workdir's checkpoint -> sampled eval set, metrics, plots, HTML gallery.

  python -m vdit.evaluate --workdir=runs/toy --eval=configs/evals/toy.py [--checkpoint=STEP|latest|all]
      [--out=DIR] [--eval.num_reference=1024 ...]

Writes DIR (default WORKDIR/eval/NAME)/step_{step:08d}/{results.json, index.html, videos/} and
DIR/{index.html, plots/}; prints the metrics. Sampling and features are sharded over every device
of every process (launch one process per host as for training); process 0 writes.
"""
import json
import os

from absl import app, flags
from ml_collections import config_flags

from vdit.parallel import distributed
from vdit.core import logs

_EVAL = config_flags.DEFINE_config_file("eval", None, "Eval config file (configs/evals/NAME.py[:args]).",
                                        lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints/).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "Checkpoint step, 'latest' or 'all' (every kept one).")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/eval/NAME).")
_EMA = flags.DEFINE_bool("ema", True, "Evaluate the EMA weights (--noema for the raw weights).")
flags.mark_flags_as_required(["eval", "workdir"])


def run():
  import jax

  from vdit.core import checkpoint as ckpt_lib
  from vdit.config import config_io
  from vdit.parallel import sharding
  from vdit.model import factory
  from vdit.eval.evaluator import Evaluator

  workdir = _WORKDIR.value
  config = config_io.for_inference(config_io.load(workdir))
  eval_config = _EVAL.value
  checkpointer = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(workdir), read_only=True)
  steps = checkpointer.select_steps(_CHECKPOINT.value)
  for step in steps:
    saved = checkpointer.read_meta(step).get("model_signature", {})
    if saved != config_io.model_signature(config):
      raise ckpt_lib.CheckpointError(f"Checkpoint step {step} does not match {workdir}/config.json: "
                                     f"{ckpt_lib.describe_mismatch(saved, config_io.model_signature(config))}.")
  out = _OUT.value or os.path.join(workdir, "eval", eval_config.name)
  mesh = sharding.make_mesh({"data": -1})
  evaluator = Evaluator(config, eval_config, workdir=workdir, out_dir=out, mesh=mesh)
  target = factory.abstract_params(config, mesh)
  for step in steps:
    params = checkpointer.restore_item(step, "ema" if _EMA.value else "params", target)
    results = evaluator.run(params, step)
    if jax.process_index() == 0:
      print(json.dumps({"step": step, "metrics": results["metrics"], "skipped": results["skipped"]}, indent=2))
  checkpointer.close()
  if jax.process_index() == 0:
    print(f"Results, plots and gallery: {os.path.abspath(out)}/index.html")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logs.quiet_library_logs()
  distributed.maybe_initialize()
  from vdit.core.errors import exit_on_user_error
  exit_on_user_error(run)


if __name__ == "__main__":
  app.run(main)
