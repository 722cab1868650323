"""The safety stages as `vdit.sample` runs them: the policy read and checked before any compute,
conditioning inputs and prompts (with their expanded captions) checked before the model runs, each
generated video checked before it is written. Every video gets one Decision, recorded in
index.jsonl; a blocked one is reported in one line and nothing of it is written.
"""
import sys

import numpy as np

from vdit.safety import decision as decisions
from vdit.safety import policy as policies
from vdit.safety.frame_check import FrameChecker
from vdit.safety.prompt_check import PromptChecker

OFF = "none"  # --safety_policy=none: no checks (a warning says so)


class Review:
  """One sampling run's safety stages under a policy (None: every video allowed, nothing checked)."""

  def __init__(self, policy: policies.Policy | None):
    self.policy = policy
    self._prompts = PromptChecker(policy) if policy else None
    self._frames = FrameChecker(policy) if policy else None

  @classmethod
  def from_flag(cls, value: str | None) -> "Review":
    """--safety_policy: a path, empty for the shipped default, or `none` (warned)."""
    if value == OFF:
      print("warning: --safety_policy=none: prompts, inputs and videos are not checked.", file=sys.stderr)
      return cls(None)
    return cls(policies.load(value or policies.default_path()))

  @property
  def c2pa_prompt(self) -> bool:
    return self.policy is None or self.policy.c2pa_prompt

  def check_inputs(self, inputs: dict) -> decisions.Decision:
    """Conditioning files ({flag: [paths]}) through the frame checks: a forbidden input image blocks
    every prompt, whatever they say. Flags and blurs on an input count as flags (outputs are still
    checked)."""
    if not (self._frames and self._frames.categories):
      return decisions.ALLOWED
    from vdit.media import video_reader
    found = []
    for flag, paths in inputs.items():
      for path in filter(None, paths):
        verdict, _ = self._frames.check(video_reader.read_video(path), what=f"--{flag} input {path}")
        if verdict.blocked:
          return verdict
        if verdict.decision == "flagged":
          found.append(verdict)
    return decisions.worst(found)

  def check_prompt(self, prompt: str, caption: str) -> decisions.Decision:
    return self._prompts.check(prompt, caption) if self._prompts else decisions.ALLOWED

  def check_video(self, frames: np.ndarray) -> tuple[decisions.Decision, np.ndarray]:
    if not (self._frames and self._frames.categories):
      return decisions.ALLOWED, frames
    return self._frames.check(frames)


def report(index: int, prompt: str, verdict: decisions.Decision) -> None:
  """One line on stderr per blocked or flagged video."""
  if verdict.decision == "allowed":
    return
  what = "nothing of it was written" if verdict.blocked else "written and recorded as flagged"
  print(f"{verdict.decision}: video {index:03d} (prompt {prompt!r}): category {verdict.category} at the "
        f"{verdict.stage} stage, {verdict.reason}; {what}.", file=sys.stderr)
