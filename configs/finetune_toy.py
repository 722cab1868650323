"""LoRA fine-tuning settings for the README's toy model: teach it purple (`python -m vdit.finetune`).

  python -m data_prep.toy_world --output=runs/purple_data --colours=purple --num_clips=1024 --num_held_out=3
  python -m vdit.finetune --base=runs/toy --workdir=runs/toy_purple --config=configs/finetune_toy.py

Laid over the base's own config by vdit/config/finetune.py (keys: rank, alpha, targets, dropout,
data_dir, num_steps, batch_size, peak_lr, warmup_steps, log_every, checkpoint_every, sample_every,
ema_decay, base_step, eval_every, eval_config, eval_overrides); override any with --config.KEY=VALUE.
"""
from vdit.config.finetune import default_settings


def get_config():
  settings = default_settings()
  settings.data_dir = "runs/purple_data"
  settings.lock()
  return settings
