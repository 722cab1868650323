"""The safety stages (vdit/safety): policy validation, prompt checks, the external classifier,
frame checks on rendered toy clips, blur, and NudeNet when installed."""
import json
import os
import sys

import numpy as np
import pytest

from tests.helpers import REPO
from vdit.safety import decision, policy, prompt_check
from vdit.safety.frame_check import FrameChecker, blur
from vdit.safety.sampling import Review
from vdit.safety.text_match import TermMatcher
from vdit.toy import world

DEFAULT = os.path.join(REPO, "configs", "safety", "default.json")
TOY_NO_RED = os.path.join(REPO, "configs", "safety", "toy_no_red.json")


def _clip(colour, direction="left", num_frames=6, size=16):
  return world.render_clip(colour, "circle", direction, start=(8.0, 8.0), speed=0.5, radius=3.0,
                           num_frames=num_frames, height=size, width=size)


@pytest.fixture(scope="module")
def checker():
  return prompt_check.PromptChecker(policy.load(DEFAULT))


@pytest.mark.parametrize("prompt, category", [
    ("a man k1lling his neighbour", "violence"),
    ("K I L L the guard", "violence"),
    ("a n u d e woman", "sexual"),
    ("N.U.D.E beach", "sexual"),
    ("nüde models", "sexual"),
    ("a nudе model", "sexual"),  # Cyrillic е
    ("exe.cution of a prisoner", "violence"),
    ("kiiiilling spree", "violence"),
    ("blowjob", "sexual"),
    ("a killer whale kills a diver", "violence"),  # the allowed phrase does not hide the rest
    ("taylor swift at a party", "real_people"),
])
def test_obfuscated_violations_are_caught(checker, prompt, category):
  verdict = checker.check(prompt)
  assert verdict.decision != "allowed" and verdict.category == category, verdict


@pytest.mark.parametrize("prompt", [
    "shooting a film in the desert", "a killer whale", "killer whales hunting", "breast stroke swimming",
    "the skill of a potter", "3 red circles", "a drone shot of rice terraces", "a sunset over Essex",
    "a red circle moving left",
])
def test_benign_near_misses_pass(checker, prompt):
  assert checker.check(prompt) == decision.ALLOWED


def test_flag_action_flags_and_caption_is_checked_too(checker):
  assert checker.check("mickey mouse driving").decision == "flagged"
  verdict = checker.check("a friendly scene", "a friendly scene with a corpse")  # the expansion's words count
  assert verdict.blocked and "corpse" in verdict.reason


def test_terms_match_words_not_substrings():
  matcher = TermMatcher(["kill", "blow job"], ["kill time"])
  assert matcher.find("skills") is None and matcher.find("cats kill time") is None
  assert matcher.find("blow-jobs").term == "blow job" and matcher.find("killed").term == "kill"


def _write(tmp_path, text, name="p.json"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


@pytest.mark.parametrize("text, message", [
    ('{"version": 1,\n "categories": {\n  "v": {"action": "delete", "checks": []}}}',
     "line 3: category 'v': action 'delete' is not one of block, blur, flag"),
    ('{"version": 1,\n "categories": {\n  "v": {"action": "block",\n   "checks": [{"type": "terms", "terms": []}]}}}',
     "line 4: category 'v': \"terms\" must be a non-empty list"),
    ('{"version": 1,\n "categories": {"v": {"action": "block", "checks": [\n  {"type": "frames",\n'
     '   "classifier": "toy_colour", "colour": "mauve"}]}}}', "line 4: category 'v': toy_colour needs \"colour\""),
    ('{"version": 1,\n "categories": {"v": {"action": "block", "checks": [\n'
     '  {"type": "command", "command": "no-such-guard-program"}]}}}', "line 3: category 'v': classifier program"),
    ('{"version": 1,\n "categories": {,}}', "line 2: not valid JSON"),
    ('{"version": 2, "categories": {}}', "line 1: \"version\" must be 1"),
])
def test_malformed_policy_names_file_line_and_problem(tmp_path, text, message):
  path = _write(tmp_path, text)
  with pytest.raises(policy.PolicyError) as e:
    policy.load(path)
  assert str(e.value).startswith(f"Safety policy {path} ") and message in str(e.value), str(e.value)


def _command_policy(tmp_path, script, timeout=5):
  program = tmp_path / "guard.py"
  program.write_text(script)
  command = f"{sys.executable} {program}"
  return policy.load(_write(tmp_path, json.dumps({"version": 1, "categories": {"guard": {"action": "block", "checks": [
      {"type": "command", "command": command, "timeout_s": timeout, "threshold": 0.5}]}}})))


def test_command_classifier_scores_and_fails_closed(tmp_path):
  scoring = _command_policy(tmp_path, "import json, sys\nprint(json.dumps({'score': 0.9 if 'bad' in sys.stdin.read() "
                                      "else 0.1}))\n")
  check = prompt_check.PromptChecker(scoring)
  assert check.check("a good dog") == decision.ALLOWED
  bad = check.check("a bad dog")
  assert bad.blocked and bad.score == pytest.approx(0.9)
  crashing = prompt_check.PromptChecker(_command_policy(tmp_path, "raise SystemExit(3)\n")).check("a good dog")
  assert crashing.blocked and crashing.score is None and "failed (exit 3)" in crashing.reason
  hanging = prompt_check.PromptChecker(_command_policy(tmp_path, "import time\ntime.sleep(30)\n", timeout=0.5))
  assert "no verdict within 0.5 s" in hanging.check("a good dog").reason
  chatty = prompt_check.PromptChecker(_command_policy(tmp_path, "print('looks fine to me')\n")).check("a dog")
  assert chatty.blocked and "no JSON verdict" in chatty.reason


def test_toy_no_red_policy_blocks_red_clips_and_passes_others():
  frames = FrameChecker(policy.load(TOY_NO_RED))
  red, _ = frames.check(_clip("red"))
  assert red.blocked and (red.stage, red.category, red.score) == ("frames", "red_objects", 1.0)
  for colour in ("orange", "magenta", "blue"):  # the nearest palette colours to red pass
    assert frames.check(_clip(colour))[0] == decision.ALLOWED, colour


def test_blur_action_blurs_only_offending_frames(tmp_path):
  blurring = policy.load(_write(tmp_path, json.dumps({"version": 1, "categories": {"red": {"action": "blur", "checks": [
      {"type": "frames", "classifier": "toy_colour", "colour": "red", "every": 2, "threshold": 0.5}]}}})))
  video = np.concatenate([_clip("blue", num_frames=4), _clip("red", num_frames=4)])
  verdict, written = FrameChecker(blurring).check(video)
  assert verdict.decision == "flagged" and verdict.category == "red"
  np.testing.assert_array_equal(written[:4], video[:4])
  np.testing.assert_array_equal(written[4:], blur(video[4:]))
  assert not np.array_equal(written[4:], video[4:])


def test_review_checks_inputs_before_compute(tmp_path):
  from vdit.media import video_io
  video_io.write_png(str(tmp_path / "red.png"), _clip("red")[0])
  video_io.write_png(str(tmp_path / "blue.png"), _clip("blue")[0])
  review = Review(policy.load(TOY_NO_RED))
  assert review.check_inputs({"image": [str(tmp_path / "red.png")]}).blocked
  assert review.check_inputs({"image": [str(tmp_path / "blue.png")], "connect": []}) == decision.ALLOWED
  assert Review(None).check_inputs({"image": [str(tmp_path / "red.png")]}) == decision.ALLOWED


def test_nudenet_runs_offline_on_frames():
  pytest.importorskip("nudenet")
  from vdit.safety import nudenet_frames
  scores = nudenet_frames.score_frames(np.stack([_clip("white", size=64)[0]] * 2), nudenet_frames.LABELS)
  assert scores.shape == (2,) and np.all((scores >= 0) & (scores < 0.5))  # a white disc is nobody
  loaded = policy.load(os.path.join(REPO, "configs", "safety", "nudenet.json"))
  assert FrameChecker(loaded).check(_clip("white", size=64))[0] == decision.ALLOWED
