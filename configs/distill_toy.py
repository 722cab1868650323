"""Distillation settings for the README's toy teacher (`python -m vdit.distill --config=configs/distill_toy.py`).

Laid over the teacher's own config by vdit/config/distill.py (keys: num_steps, batch_size, peak_lr,
warmup_steps, log_every, checkpoint_every, sample_every, sample_steps, guidance, mean_fraction,
data_dir, eval_every, eval_config, eval_overrides, dmd_weight); override any with --config.KEY=VALUE. Evaluate the
student as it trains (the README demo's eval split and feature network):
  --config.eval_every=500 --config.eval_config=configs/evals/toy.py \
  --config.eval_overrides=reference_dir=runs/toy_eval_data,features.path=runs/toy_features.safetensors
"""
from vdit.config.distill import default_settings


def get_config():
  settings = default_settings()
  settings.lock()
  return settings
