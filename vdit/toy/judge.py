"""The toy judge: does each generated clip show the colour, shape and direction its prompt asked for?

Launch:
  python -m vdit.toy.judge --index=OUT/index.jsonl --held_out=DATA/held_out.json --out=FILE.json \
      [--real=DATA]   # also the judge's accuracy on the dataset's own clips

`index.jsonl` holds one JSON object per line with at least `prompt` and `path` (relative to the
index file's directory). Prompts that are not toy captions (`vdit.toy.spec`) are skipped
and listed under `skipped`. Accuracies of an empty split are null. Two-object captions ("a red
circle moving left and a blue square moving up", `vdit.toy.pair_judge`) are reported under
`two_objects`: per-object and per-pair accuracies, split into seen / held_out pairs.
"""
import json
import os
import tempfile
from typing import Optional

from absl import flags
import numpy as np

from vdit.toy import pair_judge
from vdit.toy import spec as toy_spec
from vdit.core import command
from vdit.core.errors import UserError
from vdit.data import dataset_files
from vdit.media import video_io, video_reader
# The readings, also used through this module (judge.frame_colours, judge.predict_shape, ...).
from vdit.toy.reading import foreground_mask, frame_colours, predict_colour, predict_direction, predict_shape


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
  mask = foreground_mask(frames)
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


def load_held_out(path: str) -> set:
  """The held-out combinations (colour, shape, direction) and pairs (`toy_spec.pair_key`) a
  dataset's held_out.json names."""
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"held-out file {path} does not exist; pass the dataset's held_out.json")
  with open(path) as f:
    data = json.load(f)
  combos = data.get("combinations") if isinstance(data, dict) else None
  if not isinstance(combos, list) or not all(isinstance(c, list) and len(c) == 3 for c in combos):
    raise UserError(f"{path}: expected {{\"combinations\": [[colour, shape, direction], ...]}}")
  pairs = data.get("pairs", [])  # two-object datasets only
  if not isinstance(pairs, list) or not all(
      isinstance(p, list) and len(p) == 2 and all(isinstance(c, list) and len(c) == 3 for c in p) for p in pairs):
    raise UserError(f"{path}: expected \"pairs\": [[[colour, shape, direction], [colour, shape, direction]], ...]")
  return {tuple(c) for c in combos} | {toy_spec.pair_key(p) for p in pairs}


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


def judge_prompt(frames, objects, held_out=frozenset()) -> dict:
  """One video's row: `judge_video` of a one-object caption (`toy_spec.parse_objects`), or
  `pair_judge.judge_objects` of a two-object one, and whether it is held out of training."""
  if len(objects) == 2:
    return {**pair_judge.judge_objects(frames, objects), "held_out": toy_spec.pair_key(objects) in held_out}
  colour, shape, direction = objects[0]
  return {"colour": colour, "shape": shape, "direction": direction, **judge_video(frames, colour, direction, shape),
          "held_out": objects[0] in held_out}


def _report(rows: list, skipped: list) -> dict:
  """The one-object summary, split into seen / held_out, and a "two_objects" one if any."""
  one = [r for r in rows if "objects" not in r]
  report = {
      **_summary(one),
      "seen": _summary([v for v in one if not v["held_out"]]),
      "held_out": _summary([v for v in one if v["held_out"]]),
      "videos": one,
      "skipped": skipped,
  }
  two = [r for r in rows if "objects" in r]
  if two:
    report["two_objects"] = {
        **pair_judge.summary(two),
        "seen": pair_judge.summary([v for v in two if not v["held_out"]]),
        "held_out": pair_judge.summary([v for v in two if v["held_out"]]),
        "videos": two,
    }
  return report


def judge_index(index_path: str, held_out_path: Optional[str] = None) -> dict:
  """Judges every toy-caption video listed in an index.jsonl; see the module docstring."""
  held_out = load_held_out(held_out_path) if held_out_path else set()
  base_dir = os.path.dirname(os.path.abspath(index_path))
  rows, skipped = [], []
  for line_no, entry in _read_index(index_path):
    prompt, rel_path = entry["prompt"], entry["path"]
    objects = toy_spec.parse_objects(prompt)
    if objects is None:
      skipped.append({"prompt": prompt, "path": rel_path})
      continue
    video_path = os.path.join(base_dir, rel_path)
    if not os.path.isfile(video_path):
      raise FileNotFoundError(
          f"{index_path}:{line_no}: video {video_path} does not exist (paths are relative to the "
          "index file's directory)")
    rows.append({"prompt": prompt, "path": rel_path,
                 **judge_prompt(video_reader.read_video(video_path), objects, held_out)})
  return _report(rows, skipped)


def judge_real_clips(data_dir: str, limit: int = 64, mp4_scale: int = 4) -> dict:
  """The judge on a toy dataset's own clips against their captions: its accuracy on real clips,
  to state beside a score on generated videos. Each clip goes through an mp4 at `mp4_scale`
  like `vdit.sample`'s videos (0: the raw frames). Same report as `judge_index`."""
  held_out_path = os.path.join(data_dir, "held_out.json")
  held_out = load_held_out(held_out_path) if os.path.isfile(held_out_path) else set()
  rows, skipped = [], []
  with tempfile.TemporaryDirectory() as scratch:
    for i, clip in enumerate(dataset_files.read_clips(data_dir, limit=limit)):
      objects = toy_spec.parse_objects(clip["caption"])
      if objects is None:
        skipped.append({"prompt": clip["caption"], "path": f"clip {i}"})
        continue
      frames = clip["frames"]
      if mp4_scale:
        path = os.path.join(scratch, f"{i}.mp4")
        video_io.write_mp4(path, frames, fps=8, scale=mp4_scale)
        frames = video_reader.read_video(path)
      rows.append({"prompt": clip["caption"], "path": f"clip {i}", **judge_prompt(frames, objects, held_out)})
  return _report(rows, skipped)


def define_flags():
  command.define_path("index", None, "index.jsonl listing generated videos and prompts.", required=True)
  command.define_path("held_out", None, "held_out.json naming held-out combinations (and pairs).")
  flags.DEFINE_string("out", None, "Also write the JSON report to this file.")
  command.define_path("real", None, "A toy dataset: also judge its own clips (as mp4s at scale 4, like the samples) "
                      "and report the judge's accuracy on them under real_clips.", kind="dir")
  flags.DEFINE_integer("num_real", 64, "Clips of --real to judge.", lower_bound=1)


def main(f):
  report = judge_index(f.index, f.held_out)
  if f.real:
    report["real_clips"] = judge_real_clips(f.real, f.num_real)
  report = json.dumps(report, indent=2)
  print(report)
  if f.out:
    with open(f.out, "w") as out:
      out.write(report + "\n")


if __name__ == "__main__":
  command.run(main, define_flags)
