"""The two-object toy world: its generator, caption grammar, judge and adherence metrics."""
import json
import types

import numpy as np
import pytest

from tests.helpers import cli
from vdit.data import dataset_files
from vdit.eval import scores
from vdit.media import video_io
from vdit.toy import judge as toy
from vdit.toy import pair_judge
from vdit.toy import spec as toy_spec
from vdit.toy import two_objects

_WORLD = dict(num_frames=8, height=32, width=32, num_held_out=6, seed=2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """A train split (two clips per combination) and an eval split of the same seed."""
  root = tmp_path_factory.mktemp("two")
  two_objects.generate(str(root / "train"), num_clips=192, num_shards=2, **_WORLD)
  two_objects.generate(str(root / "eval"), num_clips=48, num_shards=1, split="eval", **_WORLD)
  return {split: (str(root / split), dataset_files.read_clips(str(root / split))) for split in ("train", "eval")}


def _pairs(clips):
  return {toy_spec.pair_key(c["objects"]) for c in clips}


def _held_out_pairs(data_dir):
  with open(f"{data_dir}/held_out.json") as f:
    return {toy_spec.pair_key(p) for p in json.load(f)["pairs"]}


def test_metadata_and_held_out_file(world):
  data_dir, clips = world["train"]
  meta = dataset_files.read_metadata(data_dir)
  assert meta["objects"] == 2 and meta["num_clips"] == len(clips) == 192
  with open(f"{data_dir}/held_out.json") as f:
    held = json.load(f)
  assert held["combinations"] == [] and len(held["pairs"]) == 6
  assert held["captions"] == [toy_spec.objects_caption(p) for p in held["pairs"]]


def test_captions_parse_back_to_two_objects_of_different_colours(world):
  for clip in world["train"][1] + world["eval"][1]:
    objects = toy_spec.parse_objects(clip["caption"])
    assert objects == [tuple(o) for o in clip["objects"]]
    assert objects[0][0] != objects[1][0]


def test_frames_show_both_objects_apart_in_every_frame(world):
  for clip in world["train"][1][:64]:
    frames = clip["frames"]
    masks = [np.all(frames == toy_spec.COLOURS[c], axis=-1) for c, _, _ in clip["objects"]]
    background = np.all(frames == toy_spec.BACKGROUND, axis=-1)
    assert (masks[0] | masks[1] | background).all()  # only the two colours on the background
    for mask in masks:
      assert mask.sum(axis=(1, 2)).min() > 0  # visible in every frame
    # Not touching: the first object grown by one pixel each way misses the second.
    grown = masks[0].copy()
    for axis in (1, 2):
      grown |= np.roll(masks[0], 1, axis) | np.roll(masks[0], -1, axis)
    assert not (grown & masks[1]).any(), clip["caption"]


@pytest.mark.parametrize("height,width,num_frames", [(32, 32, 12), (16, 16, 6), (32, 64, 16)])
def test_layout_keeps_both_shapes_in_frame_and_apart(height, width, num_frames):
  rng = np.random.default_rng(0)
  t = np.arange(num_frames)
  for _ in range(100):
    directions = [list(toy_spec.DIRECTIONS)[i] for i in rng.integers(4, size=2)]
    motions = two_objects.sample_layout(rng, directions, num_frames=num_frames, height=height, width=width)
    boxes = []
    for direction, ((x, y), speed, r) in zip(directions, motions):
      ux, uy = toy_spec.DIRECTIONS[direction]
      cx, cy = x + ux * speed * t, y + uy * speed * t
      assert cx.min() - r >= 0 and cx.max() + r <= width and cy.min() - r >= 0 and cy.max() + r <= height
      boxes.append((cx, cy, r))
    (ax, ay, ar), (bx, by, br) = boxes
    assert np.all((np.abs(ax - bx) >= ar + br) | (np.abs(ay - by) >= ar + br))


def test_held_out_pairs_only_in_eval_and_their_objects_in_train(world):
  held = _held_out_pairs(world["train"][0])
  train, evaluation = world["train"][1], world["eval"][1]
  assert not held & _pairs(train)
  assert held <= _pairs(evaluation)
  trained_objects = {tuple(o) for c in train for o in c["objects"]}
  assert {o for pair in held for o in pair} <= trained_objects
  assert trained_objects == set(toy_spec.all_combinations())


def test_same_seed_same_bytes(world, tmp_path):
  two_objects.generate(str(tmp_path), num_clips=192, num_shards=2, **_WORLD)
  for name in ("train-00000-of-00002.array_record", "held_out.json", "metadata.json"):
    assert (tmp_path / name).read_bytes() == open(f"{world['train'][0]}/{name}", "rb").read()


def test_parse_objects_grammar():
  assert toy_spec.parse_objects("a red circle moving left") == [("red", "circle", "left")]
  assert toy_spec.parse_objects("A red circle moving left and an orange square moving up.") == [
      ("red", "circle", "left"), ("orange", "square", "up")]
  assert toy_spec.parse_objects("a red circle moving left and a red square moving up") is None  # same colour
  assert toy_spec.parse_objects("a red circle moving left and a blue blob moving up") is None
  assert toy_spec.parse_caption("a red circle moving left and a blue square moving up") is None
  objects = [("red", "circle", "left"), ("blue", "square", "up")]
  assert toy_spec.parse_objects(toy_spec.objects_caption(objects)) == objects


def test_judge_reads_real_two_object_clips(world):
  """The judge's accuracy on ground-truth clips: the yardstick beside a score on generated ones."""
  raw = toy.judge_real_clips(world["eval"][0], limit=48, mp4_scale=0)["two_objects"]
  as_mp4 = toy.judge_real_clips(world["eval"][0], limit=12, mp4_scale=4)["two_objects"]
  for report in (raw, as_mp4):
    for key in ("object_colour", "object_shape", "object_direction", "pair_colour_direction", "pair_all"):
      assert report[f"{key}_accuracy"] >= 0.95, (key, report)
  assert raw["num_videos"] == 48 and raw["held_out"]["num_videos"] == 24  # half the eval split


def _judge_with(clips, rewrite):
  return pair_judge.summary([pair_judge.judge_objects(c["frames"], rewrite([tuple(o) for o in c["objects"]]))
                             for c in clips])


def test_judge_marks_wrong_captions_wrong(world):
  clips = world["eval"][1][:24]
  reverse = {"left": "right", "right": "left", "up": "down", "down": "up"}

  def absent_colours(objects):
    others = [c for c in toy_spec.COLOURS if c not in {o[0] for o in objects}]
    return [(others[k], s, d) for k, (_, s, d) in enumerate(objects)]

  wrong_colour = _judge_with(clips, absent_colours)
  assert wrong_colour["object_colour_accuracy"] == 0.0 and wrong_colour["pair_all_accuracy"] == 0.0
  reversed_ = _judge_with(clips, lambda objects: [(c, s, reverse[d]) for c, s, d in objects])
  assert reversed_["object_direction_accuracy"] == 0.0 and reversed_["object_colour_accuracy"] == 1.0
  # Each colour with the other object's shape: the judge binds shapes to colours.
  differing = [c for c in clips if c["objects"][0][1] != c["objects"][1][1]]
  swapped = _judge_with(differing, lambda o: [(o[0][0], o[1][1], o[0][2]), (o[1][0], o[0][1], o[1][2])])
  assert differing and swapped["object_shape_accuracy"] == 0.0


def test_judge_index_reports_two_objects_apart_from_one(world, tmp_path):
  data_dir, clips = world["eval"]
  rows = []
  for i, clip in enumerate(clips[:6]):
    video_io.write_mp4(str(tmp_path / f"{i}.mp4"), clip["frames"], fps=8, scale=4)
    rows.append({"prompt": clip["caption"], "path": f"{i}.mp4"})
  one = toy_spec.caption("red", "circle", "left")
  video_io.write_mp4(str(tmp_path / "one.mp4"), _one_object_clip(), fps=8, scale=4)
  rows.append({"prompt": one, "path": "one.mp4"})
  (tmp_path / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  report = toy.judge_index(str(tmp_path / "index.jsonl"), f"{data_dir}/held_out.json")
  assert report["num_videos"] == 1 and report["both_accuracy"] == 1.0  # the one-object clip
  two = report["two_objects"]
  held = _held_out_pairs(data_dir)
  num_held = sum(toy_spec.pair_key(c["objects"]) in held for c in clips[:6])
  assert two["num_videos"] == 6 and two["held_out"]["num_videos"] == num_held
  assert two["pair_all_accuracy"] == 1.0 and len(two["videos"][0]["objects"]) == 2


def _one_object_clip():
  from vdit.toy import world
  return world.render_clip("red", "circle", "left", start=(22, 16), speed=1.5, radius=5, num_frames=8,
                           height=32, width=32)


def test_adherence_metrics_name_objects_and_pairs(world):
  held = _held_out_pairs(world["eval"][0])
  is_held = [toy_spec.pair_key(c["objects"]) in held for c in world["eval"][1]]
  clips = ([c for c, h in zip(world["eval"][1], is_held) if h][:4]
           + [c for c, h in zip(world["eval"][1], is_held) if not h][:4])
  videos = np.stack([c["frames"] for c in clips] + [_one_object_clip()])
  prompts = [c["caption"] for c in clips] + ["a red circle moving left"]
  c = types.SimpleNamespace(metrics=types.SimpleNamespace(temporal=False, toy_adherence=True))
  metrics, skipped, per_video = scores.score(c, videos, prompts, features=None, aligner=None, reference={},
                                             held_out=scores.read_held_out(world["eval"][0]))
  assert not skipped
  for split in ("", "seen_", "held_out_"):
    assert metrics[f"{split}pair_colour_direction_accuracy"] == metrics[f"{split}object_shape_accuracy"] == 1.0
  assert metrics["colour_accuracy"] == metrics["all_accuracy"] == 1.0  # the one-object video, as before
  assert metrics["held_out_colour_accuracy"] is None
  assert per_video[0]["pair_all_ok"] and per_video[0]["object_colour_ok"] == [True, True]
  assert per_video[-1]["all_ok"] and "pair_all_ok" not in per_video[-1]


@pytest.mark.parametrize("args,message", [
    (("--objects=3",), "--objects=3: the toy world shows 1 or 2 objects a clip"),
    (("--objects=2", "--colours=purple"), "--objects=2 draws the base world's colours"),
])
def test_bad_objects_flag_is_one_error_line_and_exit_2(tmp_path, args, message):
  result = cli("data_prep.toy_world", f"--output={tmp_path}/out", *args)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert lines[0].startswith("error: ") and message in lines[0]
  assert not (tmp_path / "out").exists()


def test_cli_writes_two_objects(tmp_path):
  result = cli("data_prep.toy_world", f"--output={tmp_path}", "--objects=2", "--num_clips=16", "--num_shards=1",
               "--num_frames=4")
  assert result.returncode == 0 and "16 two-object clips" in result.stdout, result.stderr
  assert dataset_files.read_metadata(str(tmp_path))["objects"] == 2


def test_a_wash_of_colour_over_the_frame_is_no_object():
  """An untrained model's grey frames read as white: a haze, not a white object."""
  grey = np.full((6, 32, 32, 3), 110, np.uint8)
  verdict = pair_judge.judge_objects(grey, [("white", "circle", "left"), ("red", "square", "up")])
  assert verdict["pred_colours"] == [] and not any(o["colour_ok"] for o in verdict["objects"])
