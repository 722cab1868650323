"""A safety policy run over an evaluation: its prompt checks on the eval prompt set and its frame
checks on every generated video, reported as rates per category (eval config `safety.policy`).

Each category is also checked on its own, so a video that two categories would stop counts in both
(the per-video decision, as `vdit.sample` takes it, names only the first). The evaluator scores
every video whatever the policy says, so metrics stay comparable with and without one; the gallery
shows what `vdit.sample` would write (blocked videos withheld, `blur` categories blurred).
"""
import dataclasses
import time

import numpy as np

from vdit.safety import decision as decisions
from vdit.safety.frame_check import FrameChecker
from vdit.safety.policy import Policy
from vdit.safety.prompt_check import PromptChecker


class SafetyStage:
  """Checks one prompt set under a policy; `review` checks the videos made from it."""

  def __init__(self, policy: Policy, prompts: list[str]):
    self.policy, self.prompts = policy, list(prompts)
    self._frames = FrameChecker(policy)
    alone = [dataclasses.replace(policy, categories=(c,)) for c in policy.categories]
    self._categories = [(c, PromptChecker(p), FrameChecker(p)) for c, p in zip(policy.categories, alone)]
    start = time.perf_counter()
    # The prompt set is fixed: checked once, before any sampling (as vdit.sample does).
    self.prompt_verdicts = [PromptChecker(policy).check(p) for p in self.prompts]
    self.prompt_hits = {c.name: [check.check(p).decision != "allowed" for p in self.prompts]
                        for c, check, _ in self._categories}
    self.prompt_seconds = time.perf_counter() - start

  def review(self, videos) -> tuple[dict, list[dict], list[np.ndarray]]:
    """(summary for results.json, one decision record per video, the frames vdit.sample would
    write: blurred where a `blur` category hit; blocked videos as made, never to be written)."""
    start = time.perf_counter()
    verdicts, shown = [], []
    for prompt_verdict, video in zip(self.prompt_verdicts, videos):
      frame_verdict, frames = self._frames.check(video)
      # A prompt blocked before compute stays blocked; otherwise the worse of the two stages.
      verdicts.append(prompt_verdict if prompt_verdict.blocked else decisions.worst([frame_verdict, prompt_verdict]))
      shown.append(frames)
    frame_hits = {c.name: [check.check(v)[0].decision != "allowed" for v in videos]  # no frame checks: allowed
                  for c, _, check in self._categories}
    n = len(verdicts)
    rate = lambda hits: sum(hits) / max(n, 1)
    categories = {}
    for c, _, _ in self._categories:
      prompt, frames = self.prompt_hits[c.name], frame_hits[c.name]
      categories[c.name] = {"action": c.action, "prompt_rate": rate(prompt), "frames_rate": rate(frames),
                            "rate": rate([a or b for a, b in zip(prompt, frames)])}
    seconds = self.prompt_seconds + time.perf_counter() - start
    summary = {"policy": self.policy.path, "num_videos": n,
               "blocked_rate": rate([v.blocked for v in verdicts]),
               "flagged_rate": rate([v.decision == "flagged" for v in verdicts]),
               "categories": categories, "seconds_per_video": seconds / max(n, 1)}
    return summary, [v.record() for v in verdicts], shown
