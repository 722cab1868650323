"""Data job: writes an evaluation prompt list for a toy dataset (vdit.toy.prompts.eval_prompts).

  python -m data_prep.toy_prompts --data=runs/toy_data --out=runs/toy/prompts.txt [--num_seen=8 --repeats=2]
"""
import os

from absl import app, flags

from vdit.toy.prompts import eval_prompts


def main(argv):
  del argv
  prompts = eval_prompts(flags.FLAGS.data, flags.FLAGS.num_seen, flags.FLAGS.repeats)
  os.makedirs(os.path.dirname(os.path.abspath(flags.FLAGS.out)), exist_ok=True)
  with open(flags.FLAGS.out, "w") as f:
    f.write("\n".join(prompts) + "\n")
  print(f"Wrote {len(prompts)} prompts to {flags.FLAGS.out}")


if __name__ == "__main__":
  flags.DEFINE_string("data", None, "Toy dataset directory (with held_out.json).", required=True)
  flags.DEFINE_string("out", None, "Output prompts file.", required=True)
  flags.DEFINE_integer("num_seen", 8, "How many seen combinations to add.")
  flags.DEFINE_integer("repeats", 2, "Videos per prompt.")
  app.run(main)
