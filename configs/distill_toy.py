"""Distillation settings for the README's toy teacher (`python -m vdit.distill --config=configs/distill_toy.py`).

Laid over the teacher's own config by vdit/config/distill.py (keys: num_steps, batch_size, peak_lr,
warmup_steps, log_every, checkpoint_every, sample_every, sample_steps, guidance, mean_fraction,
data_dir); override any with --config.KEY=VALUE.
"""
from vdit.config.distill import default_settings


def get_config():
  settings = default_settings()
  settings.lock()
  return settings
