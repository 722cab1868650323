"""Data job: writes the toy world (vdit.toy.world) as a dataset.

  python -m data_prep.toy_world --output=/tmp/toy --num_clips=2048 [--split=eval]
"""
from absl import flags

from vdit.core import command
from vdit.toy.world import generate


def define_flags():
  flags.DEFINE_string("output", None, "Directory to write the dataset to.", required=True)
  flags.DEFINE_integer("num_clips", 2048, "Number of clips.", lower_bound=1)
  flags.DEFINE_integer("num_frames", 12, "Frames per clip.", lower_bound=1)
  flags.DEFINE_integer("height", 32, "Frame height in pixels.", lower_bound=1)
  flags.DEFINE_integer("width", 32, "Frame width in pixels.", lower_bound=1)
  flags.DEFINE_integer("fps", 8, "Frames per second recorded in metadata.", lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Seed for held-out choice and clip sampling.")
  flags.DEFINE_integer("num_held_out", 8, "Combinations held out of training.", lower_bound=0)
  flags.DEFINE_integer("num_shards", 4, "Number of ArrayRecord shards.", lower_bound=1)
  flags.DEFINE_enum("split", "train", ["train", "eval"], "train: held-out combinations excluded; "
                    "eval: every combination, clips drawn apart from the training ones (same --seed).")


def main(f):
  meta = generate(f.output, num_clips=f.num_clips, num_frames=f.num_frames, height=f.height,
                  width=f.width, fps=f.fps, seed=f.seed, num_held_out=f.num_held_out,
                  num_shards=f.num_shards, split=f.split)
  print(f"Wrote {meta['num_clips']} clips of {meta['buckets'][0]['name']} (frames x height x "
        f"width) in {len(meta['buckets'][0]['shards'])} shards to {f.output} "
        f"({meta['split']} split, {meta['num_held_out']} combinations held out of training).")


if __name__ == "__main__":
  command.run(main, define_flags)
