"""The safety stage of an evaluation (vdit.eval.safety_stage) on rendered toy clips, and a bad
policy in an eval config refused at validation."""
import json

import numpy as np
import pytest

from vdit.eval import eval_config as eval_config_lib
from vdit.eval.safety_stage import SafetyStage
from vdit.safety import policy
from vdit.safety.frame_check import blur
from vdit.toy import world


def _clip(colour):
  return world.render_clip(colour, "circle", "left", start=(8.0, 8.0), speed=0.5, radius=3.0, num_frames=4,
                           height=16, width=16)


def _policy(tmp_path, categories):
  (tmp_path / "p.json").write_text(json.dumps({"version": 1, "categories": categories}))
  return policy.load(str(tmp_path / "p.json"))


def test_rates_per_category_count_every_category_that_hits(tmp_path):
  loaded = _policy(tmp_path, {
      "red_objects": {"action": "block", "checks": [{"type": "frames", "classifier": "toy_colour", "colour": "red"}]},
      "blue_objects": {"action": "blur", "checks": [{"type": "frames", "classifier": "toy_colour", "colour": "blue"}]},
      "weapons": {"action": "flag", "checks": [{"type": "terms", "terms": ["gun"]}]}})
  prompts = ["a red circle", "a red circle with a gun", "a blue circle", "a green circle"]
  stage = SafetyStage(loaded, prompts)
  videos = [_clip("red"), _clip("red"), _clip("blue"), _clip("green")]
  summary, records, shown = stage.review(videos)
  assert [r["decision"] for r in records] == ["blocked", "blocked", "flagged", "allowed"]
  assert (records[2]["category"], records[2]["stage"]) == ("blue_objects", "frames")
  # Video 1 is blocked for red, and its prompt still counts for weapons.
  assert summary["categories"]["weapons"] == {"action": "flag", "prompt_rate": 0.25, "frames_rate": 0.0, "rate": 0.25}
  assert summary["categories"]["red_objects"]["frames_rate"] == 0.5
  assert summary["categories"]["blue_objects"]["rate"] == 0.25
  assert (summary["blocked_rate"], summary["flagged_rate"], summary["num_videos"]) == (0.5, 0.25, 4)
  np.testing.assert_array_equal(shown[2], blur(videos[2]))  # what vdit.sample would write
  np.testing.assert_array_equal(shown[3], videos[3])


def test_prompt_blocked_before_compute_stays_blocked(tmp_path):
  loaded = _policy(tmp_path, {"violence": {"action": "block", "checks": [{"type": "terms", "terms": ["kill"]}]}})
  summary, records, _ = SafetyStage(loaded, ["a k1ll circle", "a green circle"]).review([_clip("green")] * 2)
  assert [(r["decision"], r["stage"]) for r in records] == [("blocked", "prompt"), ("allowed", None)]
  assert summary["categories"]["violence"]["prompt_rate"] == 0.5


def test_bad_policy_in_eval_config_is_refused_at_validation(tmp_path):
  from configs.evals import toy
  config = eval_config_lib.apply_overrides(toy.get_config(), f"safety.policy={tmp_path}/missing.json")
  with pytest.raises(policy.PolicyError, match="missing.json does not exist"):
    eval_config_lib.validate(config)
  (tmp_path / "bad.json").write_text('{"version": 1,\n "categories": {"v": {"action": "hide", "checks": []}}}')
  config = eval_config_lib.apply_overrides(toy.get_config(), f"safety.policy={tmp_path}/bad.json")
  with pytest.raises(policy.PolicyError, match="line 2: category 'v': action 'hide'"):
    eval_config_lib.validate(config)
