"""Data job: writes an evaluation prompt list for a toy dataset (vdit.toy.prompts.eval_prompts).

  python -m data_prep.toy_prompts --data=runs/toy_data --out=runs/toy/prompts.txt [--num_seen=8 --repeats=2]

A two-object dataset (`data_prep.toy_world --objects=2`) gets two-object prompts: every held-out
pair plus `num_seen` pairs of the training distribution.
"""
import os

from absl import flags

from vdit.core import command
from vdit.core.errors import UserError
from vdit.toy.prompts import eval_prompts


def define_flags():
  command.define_path("data", None, "Toy dataset directory (with held_out.json).", kind="dir", required=True)
  flags.DEFINE_string("out", None, "Output prompts file.", required=True)
  flags.DEFINE_integer("num_seen", 8, "How many seen combinations (or pairs) to add.", lower_bound=0)
  flags.DEFINE_integer("repeats", 2, "Videos per prompt.", lower_bound=1)


def main(f):
  if not os.path.isfile(os.path.join(f.data, "held_out.json")):
    raise UserError(f"--data={f.data} has no held_out.json; pass a toy dataset (python -m data_prep.toy_world).")
  prompts = eval_prompts(f.data, f.num_seen, f.repeats)
  os.makedirs(os.path.dirname(os.path.abspath(f.out)), exist_ok=True)
  with open(f.out, "w") as out:
    out.write("\n".join(prompts) + "\n")
  print(f"Wrote {len(prompts)} prompts to {f.out}")


if __name__ == "__main__":
  command.run(main, define_flags)
