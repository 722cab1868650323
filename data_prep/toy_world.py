"""Data job: writes the toy world (vdit.toy.world) as a dataset.

  python -m data_prep.toy_world --output=/tmp/toy --num_clips=2048 [--split=eval]
  python -m data_prep.toy_world --output=/tmp/toy_two --objects=2   # two objects a clip (vdit.toy.two_objects)
  python -m data_prep.toy_world --output=runs/purple_data --colours=purple --num_held_out=3 \
      --replay=0.5 --replay_from=runs/toy_data   # a new concept, half the clips from the base world
"""
import json
import os

from absl import flags

from vdit.toy import spec as toy_spec

from vdit.core import command
from vdit.core.errors import UserError
from vdit.toy import two_objects
from vdit.toy.world import generate


def define_flags():
  flags.DEFINE_string("output", None, "Directory to write the dataset to.", required=True)
  flags.DEFINE_integer("num_clips", 2048, "Number of clips.", lower_bound=1)
  flags.DEFINE_integer("num_frames", 12, "Frames per clip.", lower_bound=1)
  flags.DEFINE_integer("height", 32, "Frame height in pixels.", lower_bound=1)
  flags.DEFINE_integer("width", 32, "Frame width in pixels.", lower_bound=1)
  flags.DEFINE_integer("fps", 8, "Frames per second recorded in metadata.", lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Seed for held-out choice and clip sampling.")
  flags.DEFINE_integer("num_held_out", 8, "Combinations (with --objects=2: pairs) held out of training.",
                       lower_bound=0)
  flags.DEFINE_integer("num_shards", 4, "Number of ArrayRecord shards.", lower_bound=1)
  flags.DEFINE_enum("split", "train", ["train", "eval"], "train: held-out combinations excluded; "
                    "eval: every combination (--objects=2: half the clips of held-out pairs), clips drawn apart from "
                    "the training ones (same --seed).")
  flags.DEFINE_float("replay", 0.0, "Share of clips from the base world (with new --colours: keeps the base world "
                     "while fine-tuning).", lower_bound=0.0, upper_bound=0.99)
  command.define_path("replay_from", None, "With --replay: the base world's dataset (its held_out.json is kept out).",
                      kind="dir")
  flags.DEFINE_list("colours", list(toy_spec.COLOURS), "The world's colours: the base world's (default), or "
                    f"new concepts for fine-tuning ({', '.join(toy_spec.NEW_COLOURS)}).")
  flags.DEFINE_integer("objects", 1, "Objects a clip: 1, or 2 (each its own colour, shape and direction; "
                       "pairs held out of training).")


def main(f):
  if f.objects == 2:
    return _two_objects(f)
  if f.objects != 1:
    raise UserError(f"--objects={f.objects}: the toy world shows 1 or 2 objects a clip.")
  replay_held_out = ()
  if f.replay:
    path = os.path.join(f.replay_from or "", "held_out.json")
    if not f.replay_from or not os.path.isfile(path):
      raise UserError(f"--replay needs --replay_from=DIR, the base world's dataset with its held_out.json (got "
                      f"{f.replay_from!r}); its held-out combinations stay out of the replayed clips.")
    with open(path) as held:
      replay_held_out = [tuple(c) for c in json.load(held)["combinations"]]
  meta = generate(f.output, num_clips=f.num_clips, num_frames=f.num_frames, height=f.height,
                  width=f.width, fps=f.fps, seed=f.seed, num_held_out=f.num_held_out,
                  num_shards=f.num_shards, split=f.split, colours=tuple(f.colours), replay=f.replay,
                  replay_held_out=replay_held_out)
  print(f"Wrote {meta['num_clips']} clips of {meta['buckets'][0]['name']} (frames x height x "
        f"width) in {len(meta['buckets'][0]['shards'])} shards to {f.output} "
        f"({meta['split']} split, {meta['num_held_out']} combinations held out of training).")


def _two_objects(f):
  if f.replay or f.colours != list(toy_spec.COLOURS):
    raise UserError("--objects=2 draws the base world's colours; drop --colours and --replay.")
  meta = two_objects.generate(f.output, num_clips=f.num_clips, num_frames=f.num_frames, height=f.height,
                              width=f.width, fps=f.fps, seed=f.seed, num_held_out=f.num_held_out,
                              num_shards=f.num_shards, split=f.split)
  print(f"Wrote {meta['num_clips']} two-object clips of {meta['buckets'][0]['name']} (frames x height x "
        f"width) in {len(meta['buckets'][0]['shards'])} shards to {f.output} "
        f"({meta['split']} split, {meta['num_held_out']} pairs held out of training).")


if __name__ == "__main__":
  command.run(main, define_flags)
