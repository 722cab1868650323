"""A few-step student's config: its teacher's, with the distillation settings laid over it.

The settings (`default_settings`, or a file such as configs/distill_toy.py) say how long and how
fast to distil and how the student samples; everything else (model, text, data, mesh) is the
teacher's, so the student starts from the teacher's weights and trains on the teacher's data.
"""
import os

import ml_collections
from absl import logging

from vdit.core.errors import ConfigError

FORWARD_MODE_KERNELS = ("xla", "blockwise")  # jax.jvp through attention: the fused kernels define only a VJP


def default_settings() -> ml_collections.ConfigDict:
  """Distillation of the README's toy teacher in a few CPU minutes; scale num_steps up for larger ones."""
  return ml_collections.ConfigDict({
      "num_steps": 1500, "batch_size": 0,  # 0: the teacher's train.global_batch_size
      "peak_lr": 1e-4, "warmup_steps": 50, "log_every": 50, "checkpoint_every": 500, "sample_every": 0,
      "sample_steps": 4,  # the student's default vdit.sample --steps (any count works: mean-flow steps)
      "guidance": 0.0,  # the teacher's guidance folded into the student; 0: the teacher's sample.cfg
      "mean_fraction": 0.5,  # share of clips trained on a step to an earlier time (the rest: the velocity)
      "dmd_weight": 0.0,  # > 0: a distribution-matching (DMD) regulariser on one-step samples, this weight
      "data_dir": "",  # "": the teacher's config.data.dir
      # Periodic evaluation of the student (vdit.eval on its EMA weights, at its own sampling
      # settings) every eval_every steps (0: none); "": the teacher's eval config and overrides.
      "eval_every": 0, "eval_config": "", "eval_overrides": "",
  })


def lay_over(config, settings, base_flag: str) -> None:
  """The settings every run derived from a trained workdir shares (distillation, fine-tuning): its
  length, logging, checkpoints, batch, learning rate, data and periodic evaluation; it starts at step 0."""
  tr = config.train
  tr.num_steps, tr.log_every = settings.num_steps, settings.log_every
  tr.checkpoint_every, tr.sample_every = settings.checkpoint_every, settings.sample_every
  tr.global_batch_size = settings.batch_size or tr.global_batch_size
  tr.restore_step = 0
  config.optim.peak_lr, config.optim.warmup_steps = settings.peak_lr, settings.warmup_steps
  config.data.dir = settings.data_dir or config.data.dir
  set_periodic_eval(config, settings, base_flag)


def set_periodic_eval(config, settings, base_flag: str) -> None:
  """The derived run's periodic evaluation from its settings (eval_every, eval_config, eval_overrides),
  falling back on the config it came from for the eval config and overrides."""
  e = config.eval
  e.every_steps = int(settings.eval_every)
  e.config = settings.eval_config or e.config
  e.overrides = settings.eval_overrides or e.overrides
  if e.every_steps and not e.config:
    raise ConfigError(f"--config.eval_every={e.every_steps} needs an eval config, and the {base_flag} workdir names "
                      "none: add --config.eval_config=configs/evals/toy.py (and --config.eval_overrides=...).")


def student_config(teacher, teacher_workdir: str, settings) -> ml_collections.ConfigDict:
  """The student's config (unlocked) from the teacher's upgraded config.json and the settings."""
  if teacher.model.interval_conditioning:
    raise ConfigError(f"--teacher={teacher_workdir} is itself a few-step student; distil from the model it came "
                      "from (its config.json names it under distill.teacher).")
  if (settings.guidance < 0 or not 0.0 <= settings.mean_fraction <= 1.0 or settings.num_steps < 1
      or settings.dmd_weight < 0):
    raise ConfigError("distillation settings: guidance and dmd_weight must be >= 0, mean_fraction in [0, 1], "
                      "num_steps >= 1.")
  config = teacher.copy_and_resolve_references()
  with config.unlocked():
    m = config.model
    m.interval_conditioning = True
    if m.attention not in FORWARD_MODE_KERNELS:
      logging.warning("Distilling with model.attention='blockwise' instead of %r: the student is differentiated "
                      "forward-mode (jax.jvp), which fused kernels do not support.", m.attention)
      m.attention = "blockwise"
    config.distill.teacher = os.path.abspath(teacher_workdir)
    config.distill.guidance = float(settings.guidance or teacher.sample.cfg)
    config.distill.mean_fraction = float(settings.mean_fraction)
    config.distill.dmd_weight = float(settings.dmd_weight)
    lay_over(config, settings, "--teacher")
    s = config.sample
    s.steps, s.cfg, s.sampler, s.cache, s.guidance_interval = settings.sample_steps, 1.0, "euler", "none", (0.0, 1.0)
    s.frame_cfg = 0.0
  return config
