"""Training entry point.

  python -m vdit.main --config=configs/toy.py --workdir=runs/toy [--config.train.num_steps=100]

Rerunning the same command resumes from the workdir's latest checkpoint.
"""

from absl import app, flags
from ml_collections import config_flags

from vdit.parallel import distributed
from vdit.core import logs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/NAME.py[:args]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the run's config.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logs.quiet_library_logs()
  distributed.maybe_initialize()
  from vdit.training import dit_trainer as train  # after distributed init: importing jax-heavy modules is fine, using devices is not
  from vdit.core.errors import exit_on_user_error
  exit_on_user_error(lambda: train.train_and_evaluate(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  app.run(main)
