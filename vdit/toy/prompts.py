"""Writes an evaluation prompt list for a toy dataset: every held-out combination plus seen ones.

  python -m data_prep.toy_prompts --data=runs/toy_data --out=runs/toy/prompts.txt [--num_seen=8 --repeats=2]

Each prompt is written `repeats` times; `vdit.sample` gives each line its own seed.
"""
import json
import os

import numpy as np

from vdit.toy import spec as toy_spec


def eval_prompts(data_dir: str, num_seen: int = 8, repeats: int = 2, seed: int = 0) -> list[str]:
  path = os.path.join(data_dir, "held_out.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found; generate the data with python -m data_prep.toy_world first.")
  with open(path) as f:
    held_out = [tuple(c) for c in json.load(f)["combinations"]]
  seen = [c for c in toy_spec.all_combinations() if c not in set(held_out)]
  rng = np.random.default_rng(seed)
  chosen = [seen[i] for i in sorted(rng.choice(len(seen), size=min(num_seen, len(seen)), replace=False))]
  return [toy_spec.caption(*c) for c in held_out + chosen for _ in range(repeats)]
