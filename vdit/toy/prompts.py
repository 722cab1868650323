"""Writes an evaluation prompt list for a toy dataset: every held-out combination (or, in the
two-object world, pair) plus seen ones.

  python -m data_prep.toy_prompts --data=runs/toy_data --out=runs/toy/prompts.txt [--num_seen=8 --repeats=2]

Each prompt is written `repeats` times; `vdit.sample` gives each line its own seed.
"""
import json
import os

import numpy as np

from vdit.data import dataset_files
from vdit.toy import spec as toy_spec


def num_objects(data_dir: str) -> int:
  """Objects a clip of a toy dataset shows: metadata.json's "objects" (one-object datasets,
  written before there were two, lack it)."""
  return dataset_files.read_metadata(data_dir).get("objects", 1)


def eval_prompts(data_dir: str, num_seen: int = 8, repeats: int = 2, seed: int = 0) -> list[str]:
  path = os.path.join(data_dir, "held_out.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found; generate the data with python -m data_prep.toy_world first.")
  with open(path) as f:
    held = json.load(f)
  rng = np.random.default_rng(seed)
  if num_objects(data_dir) == 2:
    return _pair_prompts([[tuple(o) for o in pair] for pair in held["pairs"]], num_seen, repeats, rng)
  held_out = [tuple(c) for c in held["combinations"]]
  seen = [c for c in toy_spec.all_combinations() if c not in set(held_out)]
  chosen = [seen[i] for i in sorted(rng.choice(len(seen), size=min(num_seen, len(seen)), replace=False))]
  return [toy_spec.caption(*c) for c in held_out + chosen for _ in range(repeats)]


def _pair_prompts(held_out: list, num_seen: int, repeats: int, rng) -> list[str]:
  """Every held-out pair plus `num_seen` distinct random pairs of the training distribution (not
  held out; of ~4,000 pairs a training set shows each a few times at most, so these test
  composition too, while the held-out ones are never shown)."""
  combos = toy_spec.all_combinations()
  held_keys = {toy_spec.pair_key(p) for p in held_out}
  chosen, keys = [], set(held_keys)
  while len(chosen) < num_seen:
    a, b = (combos[i] for i in rng.choice(len(combos), size=2, replace=False))
    if a[0] != b[0] and toy_spec.pair_key((a, b)) not in keys:
      keys.add(toy_spec.pair_key((a, b)))
      chosen.append((a, b))
  return [toy_spec.objects_caption(p) for p in held_out + chosen for _ in range(repeats)]
