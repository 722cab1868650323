"""The toy judge for two-object captions: is each object there in its colour, shape and direction?

Each foreground pixel goes to the palette colour whose blend best explains it
(`reading.pixel_colours`); the palette is the base world's plus any new colour the caption names.
An object is found when its colour covers between _MIN_OBJECT_FRACTION and _MAX_OBJECT_FRACTION
of the frame in most frames (a blob, not stray pixels nor a wash over the frame) and is among the
clip's `len(objects)` largest such colours (a clip splashed with every colour does not find them
all). Its shape and direction are read on its own pixels; an object
not found has neither ('none', wrong). The pair is right when both objects are.
"""
from typing import Optional

import numpy as np

from vdit.toy import reading
from vdit.toy import spec as toy_spec

# An object of the two-object world covers 2.5% (a triangle of r = size/9) to 6.5% (a square of
# r = size/7) of the frame; a fifth of the least tells a blob from stray or edge pixels, four
# times the most from a haze of colour over the frame (an untrained model's grey reads as white).
_MIN_OBJECT_FRACTION = 0.005
_MAX_OBJECT_FRACTION = 0.25


def judge_objects(frames, objects) -> dict:
  """Scores one clip against the objects its caption names.

  Args:
    frames: uint8 [T, H, W, 3] RGB.
    objects: [(colour, shape, direction)] of different colours (`toy_spec.parse_objects`).
  Returns:
    {"objects": [{colour, shape, direction, pred_shape, pred_direction, colour_ok, shape_ok,
    direction_ok}], "pred_colours": the colours found, largest first, "pair_colour_direction_ok",
    "pair_all_ok"}.
  """
  colours = [c for c, _, _ in objects]
  if len(set(colours)) != len(colours):
    raise ValueError(f"objects {objects} share a colour; the judge tells objects apart by colour")
  palette = {}
  for colour, shape, direction in objects:
    if toy_spec.known_object(colour, shape, direction) is None:
      raise ValueError(f"unknown object {(colour, shape, direction)}; expected a colour of "
                       f"{sorted(toy_spec.COLOURS)} or {sorted(toy_spec.NEW_COLOURS)}, a shape of "
                       f"{toy_spec.SHAPES} and a direction of {sorted(toy_spec.DIRECTIONS)}")
    palette.update(toy_spec.palette(colour))
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be [T, H, W, 3], got {frames.shape}")
  labels = reading.pixel_colours(frames, reading.foreground_mask(frames), palette)
  found = found_colours(labels, palette)[:len(objects)]
  verdicts = []
  for k, (colour, shape, direction) in enumerate(objects):
    mask = labels == tuple(palette).index(colour)
    present = colour in found
    verdict = {"colour": colour, "shape": shape, "direction": direction,
               "pred_shape": reading.predict_shape(mask) if present else reading.NONE,
               "pred_direction": reading.predict_direction(mask) if present else reading.NONE,
               "colour_ok": present}
    verdict["shape_ok"] = verdict["pred_shape"] == shape
    verdict["direction_ok"] = verdict["pred_direction"] == direction
    verdicts.append(verdict)
  return {
      "objects": verdicts,
      "pred_colours": found,
      "pair_colour_direction_ok": all(v["colour_ok"] and v["direction_ok"] for v in verdicts),
      "pair_all_ok": all(v["colour_ok"] and v["shape_ok"] and v["direction_ok"] for v in verdicts),
  }


def found_colours(labels_thw: np.ndarray, palette: dict) -> list[str]:
  """The palette colours covering _MIN_OBJECT_FRACTION to _MAX_OBJECT_FRACTION of the frame in
  the median frame, largest (pixels over the clip) first."""
  num_frames, height, width = labels_thw.shape
  counts = np.stack([np.sum(labels_thw == k, axis=(1, 2)) for k in range(len(palette))])  # [K, T]
  median = np.median(counts, axis=1) / (height * width)
  present = (median >= _MIN_OBJECT_FRACTION) & (median <= _MAX_OBJECT_FRACTION)
  order = np.argsort(-counts.sum(axis=1), kind="stable")
  return [tuple(palette)[k] for k in order if present[k]]


def _accuracy(hits: list) -> Optional[float]:
  return sum(hits) / len(hits) if hits else None


def summary(videos: list) -> dict:
  """Accuracies over judged two-object videos: per object (each video's two count apart) and per pair."""
  objects = [o for v in videos for o in v["objects"]]
  return {
      "num_videos": len(videos),
      "object_colour_accuracy": _accuracy([o["colour_ok"] for o in objects]),
      "object_shape_accuracy": _accuracy([o["shape_ok"] for o in objects]),
      "object_direction_accuracy": _accuracy([o["direction_ok"] for o in objects]),
      "object_colour_direction_accuracy": _accuracy([o["colour_ok"] and o["direction_ok"] for o in objects]),
      "pair_colour_direction_accuracy": _accuracy([v["pair_colour_direction_ok"] for v in videos]),
      "pair_all_accuracy": _accuracy([v["pair_all_ok"] for v in videos]),
  }
