"""NudeNet's detector as a frame classifier: the optional `safety` extra (`pip install -e '.[safety]'`),
whose wheel carries its ONNX model, run on the CPU with onnxruntime; nothing is downloaded.

The one module that imports nudenet.
"""
import functools

import numpy as np

# The detector's classes (nudenet 3.x, 320n model).
LABELS = ("FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
          "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
          "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
          "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED")


def unavailable() -> str | None:
  """Why the classifier cannot run here (with the fix), or None."""
  try:
    import nudenet  # noqa: F401
  except ImportError as e:
    return f"the nudenet frame classifier needs the safety extra ({e}); pip install -e '.[safety]' or drop the check"
  return None


@functools.cache
def _detector():
  from nudenet import NudeDetector
  return NudeDetector()


def score_frames(frames: np.ndarray, labels) -> np.ndarray:
  """Per frame of uint8 [N, H, W, 3] RGB: the highest detection score among `labels` (0 if none)."""
  detector, wanted = _detector(), set(labels)
  scores = []
  for frame in np.asarray(frames):
    # NudeNet reads arrays as OpenCV does files: BGR.
    found = detector.detect(np.ascontiguousarray(frame[..., ::-1]))
    scores.append(max((d["score"] for d in found if d["class"] in wanted), default=0.0))
  return np.asarray(scores, np.float32)
