"""A LoRA fine-tuning run's config: its base's, with the adapter and training settings laid over it.

The settings (`default_settings`, or a file such as configs/finetune_toy.py) choose the adapters
(rank, alpha, targets, dropout), the data (usually new: the subject, style or motion to teach) and
how long and fast to train; model, text and diffusion stay the base's, so the adapters sit on
exactly the network the base's checkpoint holds.
"""
import os

import ml_collections

from vdit.config.distill import lay_over
from vdit.core.errors import ConfigError


def default_settings() -> ml_collections.ConfigDict:
  """Adapters that teach the README's toy model a new colour in about two CPU minutes (1.4% of its
  DiT's parameters: cross-attention, where text meets video); wider targets or ranks for subjects,
  styles or motions."""
  return ml_collections.ConfigDict({
      "rank": 4, "alpha": 4.0, "targets": ("cross_attn",), "dropout": 0.0,
      "data_dir": "",  # the data to learn from; "": the base's config.data.dir
      "num_steps": 1500, "batch_size": 0,  # 0: the base's train.global_batch_size
      "peak_lr": 6e-3, "warmup_steps": 20, "log_every": 50, "checkpoint_every": 500, "sample_every": 0,
      "ema_decay": 0.99,  # of the adapters (the base's own decay may be tuned for far longer runs)
      "base_step": 0,  # the base checkpoint to adapt; 0: its latest
      # Periodic evaluation (base + adapters) every eval_every steps (0: none); "": the base's eval
      # config and overrides.
      "eval_every": 0, "eval_config": "", "eval_overrides": "",
  })


def finetune_config(base, base_workdir: str, settings, base_step: int) -> ml_collections.ConfigDict:
  """The fine-tuning run's config (unlocked) from the base's upgraded config.json, the settings and
  the base checkpoint step chosen (recorded, so a resumed run adapts the same weights)."""
  if base.lora.rank:
    raise ConfigError(f"--base={base_workdir} is itself a LoRA fine-tuning workdir; fine-tune its base, or merge "
                      "its adapter first (python -m vdit.finetune merge).")
  if settings.rank < 1 or settings.num_steps < 1:
    raise ConfigError(f"fine-tuning settings: rank={settings.rank} and num_steps={settings.num_steps} must be >= 1.")
  config = base.copy_and_resolve_references()
  with config.unlocked():
    lora = config.lora
    lora.rank, lora.alpha, lora.dropout = int(settings.rank), float(settings.alpha), float(settings.dropout)
    lora.targets = tuple(settings.targets)
    config.finetune.base = os.path.abspath(base_workdir)
    config.finetune.base_step = int(base_step)
    lay_over(config, settings, "--base")
    config.optim.ema_decay = float(settings.ema_decay)
    config.optim.weight_decay = 0.0  # decay would pull B, not the update's size, towards zero
  return config
