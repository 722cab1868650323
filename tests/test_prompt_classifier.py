"""The offline prompt classifier (vdit.safety.prompt_classifier): trained, saved and loaded, used as a
policy check, refused with one line when its weights are missing or foreign; its shipped training
set is disjoint from the held-out prompts the benchmark measures it on."""
import json
import os

import numpy as np
import pytest

from tests.helpers import REPO
from vdit.core import weights
from vdit.safety import policy, prompt_check, prompt_classifier
from vdit.safety.train_prompt_classifier import train

_BAD = ["a man stabbing a stranger", "soldiers shooting prisoners", "a naked woman posing", "a nazi salute at a rally",
        "a man strangling his wife", "a nude couple having sex"]
_GOOD = ["a cat sleeping on a sofa", "a sailboat on a lake", "children flying kites", "a chef slicing onions",
         "a dog running on a beach", "a red circle moving left"]


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory):
  model = train(_BAD + _GOOD, np.array([1.0] * len(_BAD) + [0.0] * len(_GOOD), np.float32), steps=100)
  path = str(tmp_path_factory.mktemp("classifier") / "c.safetensors")
  model.save(path, {"prompts": 12})
  return path


def test_trained_scores_separate_and_survive_saving(weights_path):
  model = prompt_classifier.load(weights_path)
  scores = model.scores(_BAD + _GOOD)
  assert scores[:len(_BAD)].min() > 0.5 > scores[len(_BAD):].max()
  assert os.path.getsize(weights_path) < 100_000  # 16k float32 buckets
  # Normalised text: leetspeak and spacing read as the words they hide.
  np.testing.assert_allclose(model.scores(["a m4n st@bbing a stranger"]), model.scores(["a man stabbing a stranger"]))


def _policy(tmp_path, check):
  path = tmp_path / "p.json"
  path.write_text(json.dumps({"version": 1, "categories": {"unsafe": {"action": "block", "checks": [check]}}},
                             indent=1))
  return str(path)


def test_classifier_check_blocks_in_a_policy(weights_path, tmp_path):
  checker = prompt_check.PromptChecker(policy.load(_policy(tmp_path, {"type": "classifier", "weights": weights_path,
                                                                      "threshold": 0.5})))
  verdict = checker.check("soldiers shooting prisoners")
  assert verdict.blocked and verdict.category == "unsafe" and "prompt classifier scored" in verdict.reason
  assert checker.check("a sailboat on a lake").decision == "allowed"


def test_missing_or_foreign_weights_are_one_line_before_compute(tmp_path):
  path = _policy(tmp_path, {"type": "classifier", "weights": str(tmp_path / "missing.safetensors")})
  with pytest.raises(policy.PolicyError, match=r"line 9: category 'unsafe': classifier weights .*missing.safetensors"):
    policy.load(path)
  weights.save(str(tmp_path / "other.safetensors"), {"w": np.zeros(3, np.float32)}, {"format": "vdit-toy-features"})
  loaded = policy.load(_policy(tmp_path, {"type": "classifier", "weights": str(tmp_path / "other.safetensors")}))
  with pytest.raises(weights.WeightsError, match="is not a prompt classifier"):
    prompt_check.PromptChecker(loaded)


def test_shipped_classifier_loads_and_its_training_set_is_held_apart():
  model = prompt_classifier.load(os.path.join(REPO, "configs", "safety", "prompt_classifier.safetensors"))
  assert model.scores(["a woman stripping off all her clothes on a rooftop at night"])[0] > 0.5
  read = lambda name: {json.loads(line)["prompt"].lower() for line in open(os.path.join(REPO, name)) if line.strip()}
  assert not read("configs/safety/prompt_train.jsonl") & read("tests/data/safety_prompts.jsonl")
