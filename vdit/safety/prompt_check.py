"""Prompt checks, before any compute: each category's listed terms (vdit.safety.text_match), vdit's
offline prompt classifier (vdit.safety.prompt_classifier) and external classifier commands (a guard
model behind a program: prompt on stdin, JSON verdict on stdout). A command that fails, hangs or
answers nonsense blocks the prompt: it fails closed.
"""
import json
import math
import shlex
import subprocess

from vdit.safety import decision as decisions
from vdit.safety import prompt_classifier
from vdit.safety.policy import ClassifierCheck, CommandCheck, Policy, TermsCheck
from vdit.safety.text_match import TermMatcher


def run_command(check: CommandCheck, prompt: str) -> tuple[float | None, str]:
  """The command's score for `prompt`, or (None, why it gave none)."""
  try:
    done = subprocess.run(shlex.split(check.command), input=prompt, capture_output=True, text=True,
                          timeout=check.timeout_s)
  except subprocess.TimeoutExpired:
    return None, f"classifier {check.command!r} gave no verdict within {check.timeout_s:g} s"
  except OSError as e:
    return None, f"classifier {check.command!r} could not run ({e.strerror})"
  if done.returncode != 0:
    return None, f"classifier {check.command!r} failed (exit {done.returncode}): {done.stderr.strip()[-200:]}"
  try:
    verdict = json.loads(done.stdout)
  except json.JSONDecodeError:
    return None, f"classifier {check.command!r} printed no JSON verdict ({done.stdout.strip()[:80]!r})"
  if isinstance(verdict, dict) and isinstance(verdict.get("flagged"), bool):
    return float(verdict["flagged"]), f"classifier {check.command!r} flagged it"
  score = verdict.get("score") if isinstance(verdict, dict) else verdict
  if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
    return None, f"classifier {check.command!r} printed no score ({done.stdout.strip()[:80]!r})"
  return float(score), f"classifier {check.command!r} scored {score:.3g}"


class PromptChecker:
  """Checks prompts (and their expanded captions) against every category of a policy."""

  def __init__(self, policy: Policy):
    self.policy = policy
    self._matchers = {c.name: TermMatcher([t for check in c.of(TermsCheck) for t in check.terms],
                                          policy.allowed_phrases) for c in policy.categories}
    # Loaded now, so an unreadable weights file is one line before any compute.
    for c in policy.categories:
      for check in c.of(ClassifierCheck):
        prompt_classifier.load(check.weights)

  def check(self, *texts: str) -> decisions.Decision:
    """The worst decision over every category and every text (a prompt and its caption)."""
    found = []
    for category in self.policy.categories:
      hit = self._category(category, texts)
      if hit:
        found.append(hit)
        if hit.blocked:
          break  # a blocked prompt needs no more classifier calls
    return decisions.worst(found)

  def _category(self, category, texts):
    for text in dict.fromkeys(texts):  # a caption equal to its prompt is checked once
      match = self._matchers[category.name].find(text)
      if match:
        return decisions.from_hit(category.action, "prompt", category.name, 1.0,
                                  f"term {match.term!r} (as {match.text!r})")
      for check in category.of(ClassifierCheck):
        score = float(prompt_classifier.load(check.weights).scores([text])[0])
        if score >= check.threshold:
          return decisions.from_hit(category.action, "prompt", category.name, score,
                                    f"prompt classifier scored {score:.2f} (threshold {check.threshold:g})")
      for check in category.of(CommandCheck):
        score, reason = run_command(check, text)
        if score is None:  # fails closed whatever the category's action
          return decisions.Decision("blocked", "prompt", category.name, None, reason)
        if score >= check.threshold:
          return decisions.from_hit(category.action, "prompt", category.name, score, reason)
    return None
