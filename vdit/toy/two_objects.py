"""The two-object toy world: clips of two coloured shapes, each moving its own way.

Caption: `toy_spec.objects_caption`, e.g. "a red circle moving left and a blue square moving up".
The two colours always differ (the judge tells the objects apart by colour); both shapes stay in
frame and apart (their 2r x 2r boxes never come within _GAP px of each other) in every frame. A
few pairs are held out of training: every (colour, shape, direction) combination still appears
in training as part of other pairs (given num_clips >= 96, a clip per combination), so an
evaluation tests the composition of two known objects, not an unknown one. The eval split draws half its
clips from the held-out pairs, half like training.

Output: as `vdit.toy.world`, with
  held_out.json  {"combinations": [], "pairs": [[[c, s, d], [c, s, d]], ...], "captions": [...]}
  metadata.json  also "objects": 2 and "num_train_pairs"; clip meta "objects": [[c, s, d], [c, s, d]].

Written by `python -m data_prep.toy_world --output=/tmp/toy_two --objects=2`.
"""
import numpy as np

from vdit.core.errors import UserError
from vdit.data import records
from vdit.toy import spec as toy_spec
from vdit.toy import world

# Two shapes share a frame, so both are smaller than the one-object world's size/8..size/6.
_RADIUS_RANGE = (1 / 9, 1 / 7)  # times the shorter side: 3.6 to 4.6 px at 32 px
_GAP = 1.0  # px at 32 px kept between the two shapes' boxes, so their pixels never touch
_MAX_TRIES = 1000  # layouts tried per clip before the frame counts as too small


def all_pairs() -> list[tuple]:
  """Every pair of combinations with different colours, each once (as `toy_spec.pair_key`)."""
  combos = toy_spec.all_combinations()
  return [(a, b) for i, a in enumerate(combos) for b in combos[i + 1:] if a[0] != b[0]]


def choose_held_out_pairs(num_held_out: int, rng: np.random.Generator) -> list[tuple]:
  """Random pairs to hold out, each of whose objects keeps a training partner."""
  pairs = all_pairs()
  held_out = sorted(pairs[i] for i in rng.choice(len(pairs), size=min(num_held_out, len(pairs)), replace=False))
  partners = {}
  for pair in set(pairs) - set(held_out):
    for combo in pair:
      partners[combo] = partners.get(combo, 0) + 1
  if len(held_out) < num_held_out or any(partners.get(c, 0) == 0 for pair in held_out for c in pair):
    raise UserError(f"Cannot hold out {num_held_out} pairs of {len(pairs)} while every object keeps a "
                    "training partner; lower num_held_out.")
  return held_out


def sample_layout(rng, directions, *, num_frames: int, height: int, width: int) -> list:
  """(start, speed, radius) per object: each in frame for the whole clip, none near another."""
  size = min(height, width)
  radius_range = (_RADIUS_RANGE[0] * size, _RADIUS_RANGE[1] * size)
  t = np.arange(num_frames)
  for _ in range(_MAX_TRIES):
    motions = [world.sample_motion(rng, d, num_frames=num_frames, height=height, width=width,
                                   radius_range=radius_range) for d in directions]
    centres = [np.array(start)[:, None] + np.array(toy_spec.DIRECTIONS[d])[:, None] * speed * t
               for d, (start, speed, _) in zip(directions, motions)]  # [2, T] each
    if _apart(centres, [r for _, _, r in motions], _GAP * size / 32):
      return motions
  raise UserError(f"Could not place two shapes apart in {num_frames} frames of {height}x{width} "
                  f"({_MAX_TRIES} tries); use a larger frame or fewer frames.")


def _apart(centres, radii, gap: float) -> bool:
  """Whether the 2r x 2r boxes around the centres [2, T] keep `gap` apart along x or y every frame."""
  for i in range(len(centres)):
    for j in range(i + 1, len(centres)):
      reach = radii[i] + radii[j] + gap
      separated = np.any(np.abs(centres[i] - centres[j]) >= reach, axis=0)
      if not separated.all():
        return False
  return True


def render_objects(objects, motions, *, num_frames: int, height: int, width: int) -> np.ndarray:
  """Renders every (colour, shape, direction) object with its (start, speed, radius): uint8 [T, H, W, 3]."""
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  frames[:] = toy_spec.BACKGROUND
  t = np.arange(num_frames, dtype=np.float32)
  for (colour, shape, direction), (start, speed, radius) in zip(objects, motions):
    ux, uy = toy_spec.DIRECTIONS[direction]
    masks = toy_spec.shape_masks(shape, start[0] + ux * speed * t, start[1] + uy * speed * t, radius, height, width)
    frames[masks] = toy_spec.rgb(colour)
  return frames


def _seen_pair(rng, first, held_out: set) -> list:
  """`first` and a random partner of another colour, not a held-out pair, in random caption order."""
  combos = toy_spec.all_combinations()
  while True:
    second = combos[rng.integers(len(combos))]
    if second[0] != first[0] and toy_spec.pair_key((first, second)) not in held_out:
      return [first, second] if rng.random() < 0.5 else [second, first]


def draw_objects(rng, held_out_pairs, *, split: str, num_clips: int) -> list[list]:
  """The objects of every clip: training pairs each combination leads equally often (within one);
  an eval split draws half its clips from the held-out pairs (each equally often)."""
  held_out = set(held_out_pairs)
  num_held = num_clips // 2 if split == "eval" and held_out_pairs else 0
  combos = toy_spec.all_combinations()
  firsts = rng.permutation(np.resize(np.arange(len(combos)), num_clips - num_held))
  clips = [_seen_pair(rng, combos[i], held_out) for i in firsts]
  for i in rng.permutation(np.resize(np.arange(len(held_out_pairs)), num_held)):
    pair = list(held_out_pairs[i])
    clips.append(pair if rng.random() < 0.5 else pair[::-1])
  return [clips[i] for i in rng.permutation(len(clips))]


def generate(output_dir: str, *, num_clips: int = 2048, num_frames: int = 12, height: int = 32,
             width: int = 32, fps: int = 8, seed: int = 0, num_held_out: int = 8, num_shards: int = 4,
             split: str = "train") -> dict:
  """Writes a two-object toy dataset to output_dir and returns its metadata (also in metadata.json).

  The random streams are those of `world.generate` for the same seed: held-out choice, train
  clips, eval clips; so an eval split never repeats a training clip.
  """
  world.check_request(split=split, num_clips=num_clips, num_shards=num_shards, num_frames=num_frames,
                      height=height, width=width)
  held_rng, train_rng, eval_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
  held_out = choose_held_out_pairs(num_held_out, held_rng)
  clip_rng = train_rng if split == "train" else eval_rng
  clips = []
  for objects in draw_objects(clip_rng, held_out, split=split, num_clips=num_clips):
    motions = sample_layout(clip_rng, [d for _, _, d in objects], num_frames=num_frames, height=height, width=width)
    frames = render_objects(objects, motions, num_frames=num_frames, height=height, width=width)
    clips.append(records.encode_clip(frames, toy_spec.objects_caption(objects), objects=[list(o) for o in objects]))
  held_out_doc = {
      "combinations": [],  # every single combination is in training; only pairs are held out
      "pairs": [[list(a), list(b)] for a, b in held_out],
      "captions": [toy_spec.objects_caption(pair) for pair in held_out],
  }
  return world.write_dataset(output_dir, clips, held_out_doc, num_frames=num_frames, height=height, width=width,
                             fps=fps, num_shards=num_shards, details={
                                 "seed": seed,
                                 "split": split,
                                 "objects": 2,
                                 "num_held_out": num_held_out,
                                 "num_train_combinations": len(toy_spec.all_combinations()),
                                 "num_train_pairs": len(all_pairs()) - len(held_out),
                                 "colours": list(toy_spec.COLOURS),
                             })
