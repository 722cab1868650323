"""Renders and writes the toy world: captioned clips of one coloured shape moving in a straight line.

Every clip shows a filled circle, square or triangle on the plain background, moving left, right,
up or down and staying fully inside the frame; its caption is `toy_spec.caption(...)`. A few
(colour, shape, direction) combinations are held out of training so an evaluation can test
composition: each held-out combination's colour-shape, colour-direction and shape-direction pairs
all still appear in training.

Output directory:
  train-{i:05d}-of-{n:05d}.array_record  clip records (vdit.data.records)
  held_out.json  {"combinations": [[colour, shape, direction], ...], "captions": [...]}
  metadata.json  written last; readers treat its presence as "dataset complete".

Written by the data job `python -m data_prep.toy_world --output=/tmp/toy --num_clips=2048`. The
two-object world (`vdit.toy.two_objects`, `--objects=2`) uses the motion sampler and writer here.
"""
import os

import numpy as np

from vdit.core.errors import UserError
from vdit.toy import spec as toy_spec
from vdit.data import dataset_files, records

# Every shape fits in the 2r x 2r box around its centre, so keeping that box in frame suffices.
_MARGIN = 0.5  # Pixels kept clear between the shape and the frame edge.
_MIN_SPEED = 0.5  # px/frame at 32 px; below this the direction is hard to see.


def choose_held_out(num_held_out: int, rng: np.random.Generator,
                    colours=tuple(toy_spec.COLOURS)) -> list[tuple[str, str, str]]:
  """Picks combinations to hold out, keeping every pair of their attributes in training (in a world
  of new colours only, the base model knows shape x direction: the pairs with the colour count)."""
  combos = toy_spec.all_combinations(colours)
  base_world = any(c in toy_spec.COLOURS for c in colours)
  order = rng.permutation(len(combos))
  # Training count of every (colour, shape), (colour, direction), (shape, direction) pair.
  pair_counts = {}
  for c, s, d in combos:
    for pair in ((0, c, s), (1, c, d), (2, s, d)):
      pair_counts[pair] = pair_counts.get(pair, 0) + 1
  held_out = []
  for i in order:
    if len(held_out) == num_held_out:
      break
    c, s, d = combos[i]
    pairs = ((0, c, s), (1, c, d), (2, s, d))[:3 if base_world else 2]
    if all(pair_counts[p] > 1 for p in pairs):
      for p in pairs:
        pair_counts[p] -= 1
      held_out.append(combos[i])
  if len(held_out) < num_held_out:
    raise UserError(
        f"Cannot hold out {num_held_out} combinations while keeping every attribute pair in "
        f"training (managed {len(held_out)}); lower num_held_out.")
  return sorted(held_out)


def render_clip(colour, shape, direction, *, start, speed, radius, num_frames, height, width):
  """Renders one clip as uint8 [T, H, W, 3]; start is the (x, y) centre at frame 0."""
  ux, uy = toy_spec.DIRECTIONS[direction]
  t = np.arange(num_frames, dtype=np.float32)
  cx = start[0] + ux * speed * t
  cy = start[1] + uy * speed * t
  masks = toy_spec.shape_masks(shape, cx, cy, radius, height, width)
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  frames[:] = toy_spec.BACKGROUND
  frames[masks] = toy_spec.rgb(colour)
  return frames


def sample_motion(rng, direction, *, num_frames, height, width, radius_range=None):
  """Random radius, speed and start keeping the shape inside the frame for the whole clip.

  radius_range: (low, high) in pixels; default (size / 8, size / 6), size the shorter side."""
  size = min(height, width)
  scale = size / 32
  radius = rng.uniform(*(radius_range or (size / 8, size / 6)))
  ux, uy = toy_spec.DIRECTIONS[direction]
  along = width if ux else height  # Frame extent along the motion axis.
  across = height if ux else width
  room = along - 2 * (radius + _MARGIN)
  # Long clips in small frames get slower shapes rather than shapes leaving the frame.
  speed = min(rng.uniform(1.0, 2.0) * scale, room / max(num_frames - 1, 1))
  low = radius + _MARGIN
  travel = speed * (num_frames - 1)
  # Position along the axis at the trailing end of the path, then flip for negative directions.
  lead = low + rng.uniform() * max(room - travel, 0.0)  # max: float round-off when clamped.
  along_start = lead if (ux + uy) > 0 else along - lead
  across_start = rng.uniform(low, across - low)
  start = (along_start, across_start) if ux else (across_start, along_start)
  return start, speed, radius


def check_request(*, split: str, num_clips: int, num_shards: int, num_frames: int, height: int, width: int):
  """Raises a UserError for a split, clip count or clip size no toy world can be drawn with."""
  if split not in ("train", "eval"):
    raise UserError(f"split={split!r}; choose 'train' or 'eval'.")
  if num_clips < 1 or not 1 <= num_shards <= num_clips:
    raise UserError(f"Need num_clips >= 1 and 1 <= num_shards <= num_clips, got "
                    f"num_clips={num_clips}, num_shards={num_shards}.")
  if num_frames < 2:
    raise UserError(f"num_frames must be >= 2 to show motion, got {num_frames}.")
  size = min(height, width)
  worst_room = size - 2 * (size / 6 + _MARGIN)  # Largest radius, shortest axis.
  if worst_room / (num_frames - 1) < _MIN_SPEED * size / 32:
    raise UserError(
        f"{num_frames} frames of {height}x{width} leave no room for visible motion; use fewer "
        "frames or a larger frame.")


def generate(output_dir: str, *, num_clips: int = 2048, num_frames: int = 12, height: int = 32,
             width: int = 32, fps: int = 8, seed: int = 0, num_held_out: int = 8,
             num_shards: int = 4, split: str = "train", colours=tuple(toy_spec.COLOURS),
             replay: float = 0.0, replay_held_out=()) -> dict:
  """Writes a toy dataset to output_dir and returns its metadata (also in metadata.json).

  split="train" draws clips of the combinations not held out; split="eval" draws clips of every
  combination (held-out ones included) from a separate random stream of the same seed: a
  reference and validation set for `vdit.evaluate` that no training clip duplicates. `colours`:
  the world's colours (default the base world's; e.g. ("purple",), a new concept to fine-tune on).
  `replay`: the share of training clips drawn from the base world's combinations except
  `replay_held_out` (its held-out ones), so fine-tuning on them keeps the base world as it was
  (DreamBooth's prior preservation).
  """
  unknown = [c for c in colours if c not in toy_spec.COLOURS and c not in toy_spec.NEW_COLOURS]
  if unknown or not colours:
    raise UserError(f"colours {unknown or '(none)'}: choose from {sorted(toy_spec.COLOURS)} or the new concepts "
                    f"{sorted(toy_spec.NEW_COLOURS)}.")
  if not 0.0 <= replay < 1.0:
    raise UserError(f"replay={replay} must be in [0, 1): the share of base-world clips.")
  check_request(split=split, num_clips=num_clips, num_shards=num_shards, num_frames=num_frames,
                height=height, width=width)
  held_rng, train_rng, eval_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
  held_out = choose_held_out(num_held_out, held_rng, colours)
  train_combos = [c for c in toy_spec.all_combinations(colours) if c not in held_out]
  clip_rng = train_rng if split == "train" else eval_rng
  combos = train_combos if split == "train" else toy_spec.all_combinations(colours)

  # Every combination of the split appears equally often (within one), in shuffled order.
  if replay and split == "train":
    replayed = [c for c in toy_spec.all_combinations() if c not in set(map(tuple, replay_held_out))]
    num_replayed = int(round(num_clips * replay))
    ids = np.concatenate([np.resize(np.arange(len(combos)), num_clips - num_replayed),
                          len(combos) + np.resize(np.arange(len(replayed)), num_replayed)])
    combos = combos + replayed
    combo_ids = clip_rng.permutation(ids)
  else:
    combo_ids = clip_rng.permutation(np.resize(np.arange(len(combos)), num_clips))
  clips = []
  for combo_id in combo_ids:
    colour, shape, direction = combos[combo_id]
    start, speed, radius = sample_motion(
        clip_rng, direction, num_frames=num_frames, height=height, width=width)
    frames = render_clip(colour, shape, direction, start=start, speed=speed, radius=radius,
                         num_frames=num_frames, height=height, width=width)
    clips.append(records.encode_clip(
        frames, toy_spec.caption(colour, shape, direction),
        colour=colour, shape=shape, direction=direction))

  held_out_doc = {
      "combinations": [list(c) for c in held_out],
      "captions": [toy_spec.caption(*c) for c in held_out],
  }
  return write_dataset(output_dir, clips, held_out_doc, num_frames=num_frames, height=height, width=width,
                       fps=fps, num_shards=num_shards, details={
                           "seed": seed,
                           "split": split,
                           "num_held_out": num_held_out,
                           "num_train_combinations": len(train_combos),
                           "colours": list(colours),
                           "replay": replay if split == "train" else 0.0,
                       })


def write_dataset(output_dir: str, clips: list, held_out_doc: dict, *, num_frames: int, height: int,
                  width: int, fps: int, num_shards: int, details: dict) -> dict:
  """Writes encoded clips as shards, held_out.json and, last, metadata.json (the common keys, then
  `details`); returns the metadata."""
  os.makedirs(output_dir, exist_ok=True)
  metadata_path = os.path.join(output_dir, "metadata.json")
  # A stale metadata.json would vouch for shards we are about to replace.
  if os.path.exists(metadata_path):
    os.remove(metadata_path)
  num_clips = len(clips)
  shards = []
  bounds = np.linspace(0, num_clips, num_shards + 1).astype(int)
  for i in range(num_shards):
    name = f"train-{i:05d}-of-{num_shards:05d}.array_record"
    dataset_files.write_shard(os.path.join(output_dir, name), clips[bounds[i]:bounds[i + 1]])
    shards.append(name)

  dataset_files.write_json(os.path.join(output_dir, "held_out.json"), held_out_doc)
  metadata = {
      "format": dataset_files.FORMAT,
      "version": dataset_files.VERSION,
      "record_format_version": records.FORMAT_VERSION,
      "codec": "raw",
      "num_clips": num_clips,
      "fps": fps,
      "buckets": [{
          "name": dataset_files.bucket_name(num_frames, height, width),
          "num_frames": num_frames, "height": height, "width": width, "num_clips": num_clips,
          "shards": shards, "clips_per_shard": np.diff(bounds).tolist()}],
      "captions_kind": "toy",
      "generator": "data_prep.toy_world",
      **details,
  }
  dataset_files.write_json(metadata_path, metadata)
  return metadata
