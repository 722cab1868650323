"""Frame checks: a policy's frame classifiers over every k-th frame of a video, before it is written
(and over conditioning inputs before any compute), and the `blur` action on offending frames.

A frame classifier maps uint8 [N, H, W, 3] frames to scores in [0, 1]. Built in: `toy_colour`, the
toy world's concept check, reading each frame's colour as the toy judge does (vdit.toy.judge:
score 1 for a frame showing the policy's colour), `nudenet` (vdit.safety.nudenet_frames) and
`clip`, concept prompts against a CLIP model given by path (vdit.safety.clip_frames).
"""
import numpy as np

from vdit.safety import decision as decisions
from vdit.safety.policy import FramesCheck, Policy
from vdit.toy import judge as toy_judge


def score_frames(check: FramesCheck, frames: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
  """Scores in [0, 1] per frame, and per frame what scored (the concept), where the classifier says."""
  if check.classifier == "toy_colour":
    return np.array([float(c == check.colour) for c in toy_judge.frame_colours(frames)], np.float32), None
  if check.classifier == "clip":
    from vdit.safety import clip_frames
    return clip_frames.scorer(check.model, check.concepts).score(frames)
  from vdit.safety import nudenet_frames
  return nudenet_frames.score_frames(frames, check.labels), None


def blur(frames: np.ndarray) -> np.ndarray:
  """A box blur an eighth of the frame wide (a few pixels on toy frames): content no longer legible."""
  radius = max(1, min(frames.shape[1:3]) // 8)
  out = frames.astype(np.float32)
  for axis in (1, 2):
    padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(4)], mode="edge")
    sums = np.cumsum(padded, axis=axis)
    sums = np.concatenate([np.zeros_like(np.take(sums, [0], axis=axis)), sums], axis=axis)
    n = out.shape[axis]
    out = (np.take(sums, np.arange(2 * radius + 1, n + 2 * radius + 1), axis=axis)
           - np.take(sums, np.arange(n), axis=axis)) / (2 * radius + 1)
  return np.clip(out.round(), 0, 255).astype(np.uint8)


class FrameChecker:
  """Runs every frame check of a policy on a video; `check` returns the decision and the frames to
  write (blurred where a `blur` category hit)."""

  def __init__(self, policy: Policy):
    self.categories = [c for c in policy.categories if c.of(FramesCheck)]
    for category in self.categories:  # models load now, so a bad weights file stops the run before any compute
      for check in category.of(FramesCheck):
        if check.classifier == "clip":
          from vdit.safety import clip_frames
          clip_frames.scorer(check.model, check.concepts)

  def check(self, frames: np.ndarray, what: str = "video") -> tuple[decisions.Decision, np.ndarray]:
    frames = np.asarray(frames)
    found = []
    for category in self.categories:
      for check in category.of(FramesCheck):
        picked = np.arange(0, len(frames), check.every)
        scores, labels = score_frames(check, frames[picked])
        top = int(np.argmax(scores))
        if scores[top] < check.threshold:
          continue
        label = f" ({labels[top]!r})" if labels else ""
        reason = (f"{check.classifier} scored {scores[top]:.2f}{label} on frame {picked[top]} of the {what} "
                  f"(threshold {check.threshold:g})")
        hit = decisions.from_hit(category.action, "frames", category.name, float(scores[top]), reason)
        if hit.blocked:
          return hit, frames
        if category.action == "blur":
          frames = frames.copy()
          for i in picked[scores >= check.threshold]:  # a checked frame stands for those up to the next one
            frames[i:i + check.every] = blur(frames[i:i + check.every])
        found.append(hit)
    return decisions.worst(found), frames
