"""The demo's evaluation prompts cover every held-out combination plus distinct seen ones."""
import json

from vdit.toy import prompts as toy_prompts
from vdit.toy import spec as toy_spec
from tests.helpers import make_toy_data


def test_eval_prompts_cover_held_out_and_seen(tmp_path):
  data = make_toy_data(tmp_path, num_clips=32)
  prompts = toy_prompts.eval_prompts(data, num_seen=5, repeats=2)
  with open(tmp_path / "held_out.json") as f:
    held = {tuple(c) for c in json.load(f)["combinations"]}
  combos = [toy_spec.parse_caption(p) for p in prompts]
  assert len(prompts) == 2 * (len(held) + 5)
  assert held <= set(combos)
  seen = set(combos) - held
  assert len(seen) == 5
  assert prompts == toy_prompts.eval_prompts(data, num_seen=5, repeats=2)  # deterministic


def test_two_object_eval_prompts_cover_held_out_pairs_and_seen_ones(tmp_path):
  from vdit.toy import two_objects
  two_objects.generate(str(tmp_path), num_clips=16, num_frames=4, num_shards=1, num_held_out=3)
  prompts = toy_prompts.eval_prompts(str(tmp_path), num_seen=4, repeats=2)
  with open(tmp_path / "held_out.json") as f:
    held = {toy_spec.pair_key(p) for p in json.load(f)["pairs"]}
  parsed = [toy_spec.parse_objects(p) for p in prompts]
  assert len(prompts) == 2 * (3 + 4) and all(p and len(p) == 2 for p in parsed)
  pairs = {toy_spec.pair_key(p) for p in parsed}
  assert held <= pairs and len(pairs - held) == 4
  assert prompts == toy_prompts.eval_prompts(str(tmp_path), num_seen=4, repeats=2)  # deterministic
