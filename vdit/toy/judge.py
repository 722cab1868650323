"""The toy judge: does each generated clip show the colour, shape and direction its prompt asked for?

Launch:
  python -m vdit.toy.judge --index=OUT/index.jsonl --held_out=DATA/held_out.json --out=FILE.json

`index.jsonl` holds one JSON object per line with at least `prompt` and `path` (relative to the
index file's directory). Prompts that are not toy captions (`vdit.toy.spec`) are skipped
and listed under `skipped`. Accuracies of an empty split are null.
"""
import json
import os
from typing import Optional

from absl import flags
import numpy as np

from vdit.toy import spec as toy_spec
from vdit.core import command
from vdit.core.errors import UserError
from vdit.media import video_reader

# A pixel is foreground when its RGB lies this far (Euclidean) from BACKGROUND; every palette
# colour is over 200 away, so codec ringing and blended edges stay on the right side.
_FOREGROUND_DISTANCE = 60.0
# Motion below this fraction of the frame over the whole clip counts as static.
_MIN_DISPLACEMENT = 0.05
_NONE = "none"

_BACKGROUND = np.array(toy_spec.BACKGROUND, np.float32)


def _foreground_mask(frames_thw3: np.ndarray) -> np.ndarray:
  diff = frames_thw3.astype(np.float32) - _BACKGROUND
  return np.linalg.norm(diff, axis=-1) > _FOREGROUND_DISTANCE


def predict_colour(frames_thw3: np.ndarray, mask_thw: np.ndarray, palette=toy_spec.COLOURS) -> str:
  """The palette colour that best explains the foreground as that colour blended over the background.

  Each foreground pixel p is fitted as bg + a (c - bg) with a in [0, 1] for every palette colour c;
  the colour with the smallest median residual wins. Soft or blurred edges (a < 1) darken a colour
  toward the background, which a nearest-RGB rule misreads (half-covered yellow is nearer orange);
  the blend model reads them as the colour they are. 'none' without foreground. `palette`: {name: rgb}.
  """
  if not mask_thw.any():
    return _NONE
  names = tuple(palette)
  pixels = frames_thw3[mask_thw].astype(np.float32) - _BACKGROUND  # [P, 3]
  directions = np.array([palette[n] for n in names], np.float32) - _BACKGROUND  # [K, 3]
  alpha = np.clip(pixels @ directions.T / np.sum(directions**2, axis=-1), 0.0, 1.0)  # [P, K]
  residual = np.linalg.norm(pixels[:, None, :] - alpha[..., None] * directions[None], axis=-1)
  return names[int(np.argmin(np.median(residual, axis=0)))]


def frame_colours(frames_thw3: np.ndarray) -> list[str]:
  """The palette colour each frame shows ('none' for a frame without foreground)."""
  frames_thw3 = np.asarray(frames_thw3)
  return [predict_colour(frame[None], mask[None]) for frame, mask in zip(frames_thw3, _foreground_mask(frames_thw3))]


def predict_shape(mask_thw: np.ndarray) -> str:
  """Circle, square or triangle: the shape whose template, placed at each frame's foreground
  centroid and sized to its area, overlaps the foreground best (IoU), by majority over frames.

  Fitting whole templates is robust to the ragged edges and stray pixels of generated frames,
  which upset bounding-box ratios.
  """
  votes = []
  height, width = mask_thw.shape[1:]
  for mask in mask_thw:
    ys, xs = np.nonzero(mask)
    if ys.size < 4:
      continue
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    best, best_iou = _NONE, -1.0
    for shape in toy_spec.SHAPES:
      r = np.sqrt(ys.size / toy_spec.SHAPE_AREA[shape])
      template = toy_spec.shape_masks(shape, cx, cy - toy_spec.SHAPE_CENTROID_OFFSET[shape] * r, r, height, width)[0]
      iou = np.sum(template & mask) / np.sum(template | mask)
      if iou > best_iou:
        best, best_iou = shape, iou
    votes.append(best)
  if not votes:
    return _NONE
  names, counts = np.unique(votes, return_counts=True)
  return str(names[np.argmax(counts)])


def predict_direction(mask_thw: np.ndarray) -> str:
  """Direction of the foreground centroid's least-squares track, or 'none' if it barely moves."""
  num_frames, height, width = mask_thw.shape
  ts, xs, ys = [], [], []
  for t in range(num_frames):
    y, x = np.nonzero(mask_thw[t])
    if x.size:
      ts.append(t)
      xs.append(x.mean())
      ys.append(y.mean())
  if len(ts) < 2:
    return _NONE
  ts = np.asarray(ts, np.float64)
  span = ts[-1] - ts[0]
  # Slope (pixels per frame) times the clip length, over the frame size: resolution-independent.
  dx = np.polyfit(ts, xs, 1)[0] * span / width
  dy = np.polyfit(ts, ys, 1)[0] * span / height
  if max(abs(dx), abs(dy)) < _MIN_DISPLACEMENT:
    return _NONE
  if abs(dx) >= abs(dy):
    return "right" if dx > 0 else "left"
  return "down" if dy > 0 else "up"


def judge_video(frames, colour: str, direction: str, shape: Optional[str] = None) -> dict:
  """Scores one clip against the colour, direction (and shape, if given) its caption asked for.

  Args:
    frames: uint8 [T, H, W, 3] RGB.
    colour: a `toy_spec.COLOURS` or `toy_spec.NEW_COLOURS` name (judged against toy_spec.palette(colour)).
    direction: a `toy_spec.DIRECTIONS` name.
    shape: a `toy_spec.SHAPES` name, or None to leave shape unscored.
  Returns:
    {"pred_colour", "pred_direction", "colour_ok", "direction_ok"} (+ "pred_shape", "shape_ok"
    with a shape); a prediction is 'none' (always wrong) when no foreground or no clear motion is
    found.
  """
  if colour not in toy_spec.COLOURS and colour not in toy_spec.NEW_COLOURS:
    raise ValueError(f"unknown colour {colour!r}; expected one of {sorted(toy_spec.COLOURS)} or "
                     f"{sorted(toy_spec.NEW_COLOURS)}")
  if direction not in toy_spec.DIRECTIONS:
    raise ValueError(
        f"unknown direction {direction!r}; expected one of {sorted(toy_spec.DIRECTIONS)}")
  if shape is not None and shape not in toy_spec.SHAPES:
    raise ValueError(f"unknown shape {shape!r}; expected one of {toy_spec.SHAPES}")
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be [T, H, W, 3], got {frames.shape}")
  mask = _foreground_mask(frames)
  pred_colour = predict_colour(frames, mask, toy_spec.palette(colour))
  pred_direction = predict_direction(mask)
  verdict = {
      "pred_colour": pred_colour,
      "pred_direction": pred_direction,
      "colour_ok": pred_colour == colour,
      "direction_ok": pred_direction == direction,
  }
  if shape is not None:
    verdict["pred_shape"] = predict_shape(mask)
    verdict["shape_ok"] = verdict["pred_shape"] == shape
  return verdict


def _load_held_out(path: str) -> set:
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"held-out file {path} does not exist; pass the dataset's held_out.json")
  with open(path) as f:
    data = json.load(f)
  combos = data.get("combinations") if isinstance(data, dict) else None
  if not isinstance(combos, list) or not all(isinstance(c, list) and len(c) == 3 for c in combos):
    raise UserError(f"{path}: expected {{\"combinations\": [[colour, shape, direction], ...]}}")
  return {tuple(c) for c in combos}


def _read_index(index_path: str) -> list:
  if not os.path.isfile(index_path):
    raise FileNotFoundError(f"index file {index_path} does not exist; pass --index=OUT/index.jsonl")
  entries = []
  with open(index_path) as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        entry = json.loads(line)
      except json.JSONDecodeError as e:
        raise UserError(f"{index_path}:{line_no}: not valid JSON ({e})") from e
      if not isinstance(entry, dict) or "prompt" not in entry or "path" not in entry:
        raise UserError(f"{index_path}:{line_no}: each line needs 'prompt' and 'path' keys")
      entries.append((line_no, entry))
  return entries


def _accuracy(hits: list) -> Optional[float]:
  return sum(hits) / len(hits) if hits else None


def _summary(videos: list) -> dict:
  return {
      "num_videos": len(videos),
      "colour_accuracy": _accuracy([v["colour_ok"] for v in videos]),
      "shape_accuracy": _accuracy([v["shape_ok"] for v in videos]),
      "direction_accuracy": _accuracy([v["direction_ok"] for v in videos]),
      "both_accuracy": _accuracy([v["colour_ok"] and v["direction_ok"] for v in videos]),
  }


def judge_index(index_path: str, held_out_path: Optional[str] = None) -> dict:
  """Judges every toy-caption video listed in an index.jsonl; see the module docstring."""
  held_out = _load_held_out(held_out_path) if held_out_path else set()
  base_dir = os.path.dirname(os.path.abspath(index_path))
  videos, skipped = [], []
  for line_no, entry in _read_index(index_path):
    prompt, rel_path = entry["prompt"], entry["path"]
    parsed = toy_spec.parse_caption(prompt)
    if parsed is None:
      skipped.append({"prompt": prompt, "path": rel_path})
      continue
    colour, shape, direction = parsed
    video_path = os.path.join(base_dir, rel_path)
    if not os.path.isfile(video_path):
      raise FileNotFoundError(
          f"{index_path}:{line_no}: video {video_path} does not exist (paths are relative to the "
          "index file's directory)")
    verdict = judge_video(video_reader.read_video(video_path), colour, direction, shape)
    videos.append({"prompt": prompt, "path": rel_path, "colour": colour, "shape": shape, "direction": direction,
                   **verdict, "held_out": parsed in held_out})
  return {
      **_summary(videos),
      "seen": _summary([v for v in videos if not v["held_out"]]),
      "held_out": _summary([v for v in videos if v["held_out"]]),
      "videos": videos,
      "skipped": skipped,
  }


def define_flags():
  command.define_path("index", None, "index.jsonl listing generated videos and prompts.", required=True)
  command.define_path("held_out", None, "held_out.json naming held-out combinations.")
  flags.DEFINE_string("out", None, "Also write the JSON report to this file.")


def main(f):
  report = json.dumps(judge_index(f.index, f.held_out), indent=2)
  print(report)
  if f.out:
    with open(f.out, "w") as out:
      out.write(report + "\n")


if __name__ == "__main__":
  command.run(main, define_flags)
