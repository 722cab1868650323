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
