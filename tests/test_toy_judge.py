"""Tests for the toy judge (vdit.toy.judge) on clips rendered here with numpy."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vdit.toy import spec as toy_spec
from vdit.media import video_io
from vdit.toy import judge as toy

_SIZE, _FRAMES, _HALF, _STEP = 32, 10, 4, 2  # frame size, length, shape half-size, px per frame
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _render(colour, shape, direction, step=_STEP):
  """One filled shape moving `step` px per frame through the frame centre."""
  dx, dy = toy_spec.DIRECTIONS[direction]
  frames = np.empty((_FRAMES, _SIZE, _SIZE, 3), np.uint8)
  frames[:] = toy_spec.BACKGROUND
  yy, xx = np.mgrid[:_SIZE, :_SIZE]
  for t in range(_FRAMES):
    cx = _SIZE / 2 + dx * step * (t - (_FRAMES - 1) / 2)
    cy = _SIZE / 2 + dy * step * (t - (_FRAMES - 1) / 2)
    if shape == "circle":
      inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= _HALF ** 2
    else:
      inside = (np.abs(xx - cx) <= _HALF) & (np.abs(yy - cy) <= _HALF)
    frames[t][inside] = toy_spec.COLOURS[colour]
  return frames


def _reverse(direction):
  return {"left": "right", "right": "left", "up": "down", "down": "up"}[direction]


def _next_colour(colour):
  names = list(toy_spec.COLOURS)
  return names[(names.index(colour) + 1) % len(names)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
  """Every colour moving every direction (shapes alternate), written once as mp4 at scale 4."""
  root = tmp_path_factory.mktemp("clips")
  combos = []
  for i, (colour, direction) in enumerate(
      (c, d) for c in toy_spec.COLOURS for d in toy_spec.DIRECTIONS):
    shape = ("square", "circle")[i % 2]
    rel_path = f"videos/{colour}_{shape}_{direction}.mp4"
    video_io.write_mp4(root / rel_path, _render(colour, shape, direction), fps=8, scale=4)
    combos.append((colour, shape, direction, rel_path))
  return root, combos


def _write_index(root, name, rows):
  path = root / name
  path.write_text("".join(json.dumps({"prompt": p, "path": v}) + "\n" for p, v in rows))
  return path


def test_correct_captions_score_perfect(clips):
  root, combos = clips
  index = _write_index(root, "right.jsonl",
                       [(toy_spec.caption(c, s, d), v) for c, s, d, v in combos])
  report = toy.judge_index(str(index))
  assert report["num_videos"] == len(combos) == 32
  wrong = [v for v in report["videos"] if not (v["colour_ok"] and v["direction_ok"])]
  assert not wrong
  assert report["both_accuracy"] == report["seen"]["both_accuracy"] == 1.0
  assert report["shape_accuracy"] == 1.0
  assert report["held_out"] == {"num_videos": 0, "colour_accuracy": None, "shape_accuracy": None,
                                "direction_accuracy": None, "both_accuracy": None}
  assert set(report) == {"num_videos", "colour_accuracy", "shape_accuracy", "direction_accuracy", "both_accuracy",
                         "seen", "held_out", "videos", "skipped"}  # no two_objects without two-object prompts


def test_swapped_shapes_score_zero_shape_accuracy(clips):
  root, combos = clips
  other = {"square": "circle", "circle": "triangle"}
  index = _write_index(root, "shapes.jsonl", [(toy_spec.caption(c, other[s], d), v) for c, s, d, v in combos])
  report = toy.judge_index(str(index))
  assert report["shape_accuracy"] == 0.0
  assert report["colour_accuracy"] == report["direction_accuracy"] == 1.0


def test_shapes_of_toy_world_clips_are_read_back():
  from vdit.toy import world as toy_world
  from vdit.data import dataset_files
  import tempfile
  with tempfile.TemporaryDirectory() as d:
    toy_world.generate(d, num_clips=96, num_frames=8, height=32, width=32, num_shards=1, split="eval")
    clips = dataset_files.read_clips(d)
  assert {c["shape"] for c in clips} == set(toy_spec.SHAPES)
  for c in clips:
    assert toy.predict_shape(toy.foreground_mask(c["frames"])) == c["shape"], c["caption"]


def test_swapped_colours_score_zero_colour_accuracy(clips):
  root, combos = clips
  index = _write_index(root, "swapped.jsonl",
                       [(toy_spec.caption(_next_colour(c), s, d), v) for c, s, d, v in combos])
  report = toy.judge_index(str(index))
  assert report["colour_accuracy"] == 0.0
  assert report["direction_accuracy"] == 1.0
  assert report["both_accuracy"] == 0.0


def test_reversed_directions_score_zero_direction_accuracy(clips):
  root, combos = clips
  index = _write_index(root, "reversed.jsonl",
                       [(toy_spec.caption(c, s, _reverse(d)), v) for c, s, d, v in combos])
  report = toy.judge_index(str(index))
  assert report["direction_accuracy"] == 0.0
  assert report["colour_accuracy"] == 1.0


def test_held_out_split(clips):
  root, combos = clips
  held = [list(combo[:3]) for combo in combos[:5]]
  held_out_path = root / "held_out.json"
  held_out_path.write_text(json.dumps({"combinations": held}))
  # Reverse the first held-out clip's caption so the split accuracies differ.
  rows = [(toy_spec.caption(c, s, _reverse(d) if i == 0 else d), v)
          for i, (c, s, d, v) in enumerate(combos)]
  index = _write_index(root, "split.jsonl", rows)
  report = toy.judge_index(str(index), str(held_out_path))
  # The reversed caption names a different combination, so only 4 remain held out.
  assert report["held_out"]["num_videos"] == 4
  assert report["seen"]["num_videos"] == 28
  assert [v["held_out"] for v in report["videos"][:6]] == [False, True, True, True, True, False]
  assert report["held_out"]["both_accuracy"] == 1.0
  assert report["seen"]["direction_accuracy"] == pytest.approx(27 / 28)


def test_static_clip_predicts_none():
  frames = _render("green", "square", "left", step=0)
  verdict = toy.judge_video(frames, "green", "left")
  assert verdict["pred_direction"] == "none" and not verdict["direction_ok"]
  assert verdict["pred_colour"] == "green" and verdict["colour_ok"]


def test_empty_clip_predicts_none_for_both():
  frames = np.broadcast_to(np.array(toy_spec.BACKGROUND, np.uint8), (6, 16, 16, 3))
  verdict = toy.judge_video(frames, "red", "up")
  assert verdict == {"pred_colour": "none", "pred_direction": "none",
                     "colour_ok": False, "direction_ok": False}


def test_judge_is_resolution_independent():
  frames = _render("orange", "circle", "up")
  big = frames.repeat(4, axis=1).repeat(4, axis=2)
  assert toy.judge_video(frames, "orange", "up") == toy.judge_video(big, "orange", "up")


def test_non_toy_prompts_are_skipped(clips):
  root, combos = clips
  index = _write_index(root, "mixed.jsonl",
                       [("a cat playing piano", combos[0][3]),
                        (toy_spec.caption(*combos[1][:3]), combos[1][3])])
  report = toy.judge_index(str(index))
  assert report["num_videos"] == 1
  assert report["skipped"] == [{"prompt": "a cat playing piano", "path": combos[0][3]}]


def test_missing_index_raises(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    toy.judge_index(str(tmp_path / "nope.jsonl"))


def test_missing_video_raises(tmp_path):
  index = _write_index(tmp_path, "index.jsonl", [("a red circle moving left", "gone.mp4")])
  with pytest.raises(FileNotFoundError, match="gone.mp4"):
    toy.judge_index(str(index))


def test_unknown_colour_rejected():
  with pytest.raises(ValueError, match="violet"):
    toy.judge_video(_render("red", "square", "left"), "violet", "left")


def test_new_colour_is_judged_against_the_base_palette_plus_itself():
  """Purple (a fine-tuning concept, never in the base world) is read as purple, and a base colour
  is still read with the base palette alone, so base-world scores do not move."""
  from vdit.toy import world
  purple = world.render_clip("purple", "circle", "left", start=(20, 16), speed=1.5, radius=5, num_frames=8,
                             height=32, width=32)
  assert toy.judge_video(purple, "purple", "left")["colour_ok"]
  assert toy.judge_video(purple, "magenta", "left")["pred_colour"] != "purple"
  assert toy_spec.parse_caption("a purple triangle moving up") == ("purple", "triangle", "up")


def test_cli_prints_and_writes_report(clips, tmp_path):
  root, combos = clips
  index = _write_index(root, "cli.jsonl", [(toy_spec.caption(*combos[0][:3]), combos[0][3])])
  out = tmp_path / "report.json"
  result = subprocess.run(
      [sys.executable, "-m", "vdit.toy.judge", f"--index={index}", f"--out={out}"],
      cwd=_REPO, capture_output=True, text=True, check=True)
  assert json.loads(result.stdout) == json.loads(out.read_text())
  assert json.loads(out.read_text())["both_accuracy"] == 1.0


def test_blended_edges_keep_their_colour():
  """A shape whose pixels are the colour blended over the background (soft edges, blur) is read
  as that colour: half-covered yellow is nearer orange in RGB, but it is still yellow."""
  frames = np.zeros((6, 32, 32, 3), np.float32) + np.array(toy_spec.BACKGROUND, np.float32)
  for colour in ("yellow", "cyan", "magenta"):
    rgb = np.array(toy_spec.COLOURS[colour], np.float32)
    clip = frames.copy()
    for t in range(6):
      x = 4 + 3 * t
      clip[t, 10:20, x:x + 8] = toy_spec.BACKGROUND + 0.5 * (rgb - toy_spec.BACKGROUND)  # soft rim
      clip[t, 13:17, x + 2:x + 6] = rgb  # solid core
    result = toy.judge_video(np.round(clip).astype(np.uint8), colour, "right")
    assert result["pred_colour"] == colour and result["direction_ok"], result
