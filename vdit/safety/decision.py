"""One safety decision per video, recorded in index.jsonl as its "safety" object."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Decision:
  decision: str  # allowed | blocked | flagged
  stage: str | None = None  # prompt | frames; None when nothing was hit
  category: str | None = None
  score: float | None = None
  reason: str | None = None  # what hit, in words (a term, a classifier's score, a failure)

  @property
  def blocked(self) -> bool:
    return self.decision == "blocked"

  def record(self) -> dict:
    return {"decision": self.decision, "stage": self.stage, "category": self.category,
            "score": None if self.score is None else round(float(self.score), 4), "reason": self.reason}


ALLOWED = Decision("allowed")


def from_hit(action: str, stage: str, category: str, score, reason: str) -> Decision:
  """A hit under a category's action: block blocks, flag and blur (its frames blurred) flag."""
  return Decision("blocked" if action == "block" else "flagged", stage, category, score, reason)


def worst(decisions) -> Decision:
  """The first blocking decision, else the first flag, else allowed."""
  decisions = list(decisions)
  for kind in ("blocked", "flagged"):
    for d in decisions:
      if d.decision == kind:
        return d
  return ALLOWED
