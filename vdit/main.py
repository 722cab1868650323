"""Training entry point: a DiT config trains the video model, a VAE config (configs/vae_*.py) the VAE.

  python -m vdit.main --config=configs/toy.py --workdir=runs/toy [--config.train.num_steps=100]
  python -m vdit.main --config=configs/vae_toy.py --workdir=runs/toy_vae   # -> runs/toy_vae/vae.safetensors

Rerunning the same command resumes from the workdir's latest checkpoint.
"""
from absl import flags
from ml_collections import config_flags

from vdit.core import command


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/NAME.py[:args]).",
                                  lock_config=True)
  command.define_output_dir("workdir", None, "Directory for checkpoints, logs and the run's config.json "
                            "(created if missing).")
  flags.mark_flags_as_required(["config", "workdir"])


def is_vae_config(config) -> bool:
  """A VAE trainer config (vdit.training.vae_config) has a `vae` section and no `model` one."""
  return hasattr(config, "vae") and not hasattr(config, "model")


def main(f):
  from vdit.core import logs
  from vdit.parallel import distributed
  logs.quiet_library_logs()
  distributed.maybe_initialize()
  # The trainers load here, after the flags are checked (importing jax before distributed init is
  # fine; using devices is not).
  if is_vae_config(f.config):
    from vdit.training import vae_trainer
    vae_trainer.train_vae(f.config, f.workdir)
  else:
    from vdit.training import dit_trainer
    dit_trainer.train_and_evaluate(f.config, f.workdir)


if __name__ == "__main__":
  command.run(main, define_flags)
