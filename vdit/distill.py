"""Few-step distillation: a student of a trained teacher workdir that samples in 1-4 network passes.

  python -m vdit.distill --teacher=runs/toy --workdir=runs/toy_student [--config=configs/distill_toy.py] \
      [--config.num_steps=3000 ...]
  python -m vdit.sample --workdir=runs/toy_student --prompt="a red circle moving left" --steps=1

The student starts from the teacher's EMA weights (plus a zero-initialised step-length embedding)
and learns the teacher's classifier-free-guided flow as a mean flow (vdit/training/distill_step.py:
one jax.jvp through the student per step, guidance folded in), on the teacher's data, sharded and
resumable like training (rerun the same command). The student workdir records that it is one, so
`vdit.sample` and evaluations take mean-flow steps without guidance: one network pass per step.
Without --config the settings of vdit/config/distill.py (the toy teacher's) apply.
"""
from ml_collections import config_flags

from vdit.core import command


def define_flags():
  command.define_path("teacher", None, "The teacher: a trained workdir (vdit.main, or a converted Wan 2.1 "
                      "release from vdit.convert).", kind="dir", required=True)
  command.define_output_dir("workdir", None, "The student's workdir (created if missing; rerun to resume).",
                            required=True)
  config_flags.DEFINE_config_file("config", None, "Distillation settings file (configs/distill_toy.py); default: "
                                  "vdit/config/distill.py's.", lock_config=True)


def main(f):
  import os
  from vdit.core import logs
  from vdit.core.errors import UserError
  from vdit.parallel import distributed
  logs.quiet_library_logs()
  if os.path.abspath(f.teacher) == os.path.abspath(f.workdir):
    raise UserError(f"--workdir={f.workdir} is the teacher's workdir; give the student its own directory.")
  distributed.maybe_initialize()
  from vdit.config import config_io, distill, experiment
  from vdit.training import dit_trainer
  teacher = config_io.load(f.teacher)  # a directory that is no workdir is one error line
  config = distill.student_config(teacher, f.teacher, f.config or distill.default_settings())
  dit_trainer.train_and_evaluate(config, f.workdir, dit_trainer.Teacher(
      workdir=f.teacher, config=experiment.freeze(config_io.for_inference(teacher)),
      guidance=config.distill.guidance))


if __name__ == "__main__":
  command.run(main, define_flags)
