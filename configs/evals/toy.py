"""Evaluation of a toy-world checkpoint: FVD/FID/KID with the toy feature network, text alignment,
colour/shape/direction adherence (seen vs held-out combinations), temporal consistency and motion,
and the validation loss at fixed timesteps.

Prepare once (the README's "Evaluate a checkpoint" does this):
  python -m data_prep.toy_world --output=runs/toy_eval_data --split=eval --num_clips=1024
  python -m vdit.eval.train_toy_features --data=runs/toy_data --out=runs/toy_features.safetensors
Run:
  python -m vdit.evaluate --workdir=runs/toy --eval=configs/evals/toy.py [--checkpoint=STEP|all]

Arguments (`--eval=configs/evals/toy.py:repeats=4`): repeats (videos per prompt), num_seen (seen
combinations sampled beside every held-out one).
"""
from configs.evals import base


def get_config(arg: str | None = None):
  from configs.base import parse_args
  args = parse_args(arg, repeats=4, num_seen=8)
  c = base.default_eval_config()
  c.name = "toy"
  c.reference_dir = "runs/toy_eval_data"
  c.num_reference = 512
  # Every held-out combination and `num_seen` seen ones, each `repeats` times with its own seed.
  c.prompts = "toy"
  c.toy_prompts.num_seen = int(args["num_seen"])
  c.toy_prompts.repeats = int(args["repeats"])
  c.features.kind = "toy"
  c.features.path = "runs/toy_features.safetensors"
  c.kid.subset_size = 32
  c.val.num_clips = 128
  c.lock()
  return c
