"""Toy world on CPU: coloured shapes moving in named directions, pixel space, trains in minutes.

Launch (the README demo does all of this):
  python -m data_prep.toy_world --output=runs/toy_data
  python -m vdit.main --config=configs/toy.py --workdir=runs/toy
  python -m vdit.sample --workdir=runs/toy --prompt="a red circle moving left" --out=runs/toy/samples

Arguments (`--config=configs/toy.py:steps=3000`): steps (training steps).
"""
from configs import base


def get_config(arg: str | None = None):
  args = base.parse_args(arg, steps=3000)
  config = base.default_config()
  config.data.dir = "runs/toy_data"
  config.data.num_frames = 8

  config.model.in_channels = 3
  config.model.patch_size = (2, 8, 8)  # 4x4x4 = 64 tokens per 8x32x32 clip
  config.model.dim = 128
  config.model.depth = 4
  config.model.num_heads = 4
  config.model.mlp_ratio = 3.0
  config.model.prediction = "x"  # pixel patches: x-prediction learns far faster (model/factory.py)
  # One model for every sampling mode (image-to-video, extend, connect, loop); text-to-video
  # adherence is unchanged by it (README numbers, measured with and without).
  config.model.frame_conditioning = True

  config.text.max_length = 16
  config.text.dim = 64
  # Word embeddings only: each word keeps its own meaning, which composes to held-out
  # (colour, shape, direction) combinations far better in a short run than a mixing encoder layer.
  config.text.depth = 0
  config.text.num_heads = 4
  config.text.mlp_ratio = 2.0

  config.train.num_steps = int(args["steps"])
  config.train.global_batch_size = 16
  config.train.log_every = 25
  config.train.checkpoint_every = 500
  config.train.sample_every = 0

  config.optim.peak_lr = 1.5e-3
  config.optim.warmup_steps = 100
  config.optim.ema_decay = 0.99

  # Layout and motion are decided at high noise; weight training toward it (t=1 is noise).
  config.diffusion.logit_mean = 0.8

  config.sample.steps = 20
  config.sample.cfg = 4.0
  # Guiding the given frames apart from the text holds extensions to the given motion: the seam's
  # move is 1.1x (backward) and 0.75x (forward) the given frames' moves, against 1.8x / 1.4x without
  # (vdit.eval.toy_modes, 16 videos).
  config.sample.frame_cfg = 4.0
  config.sample.prompts = ("a red circle moving left", "a blue square moving up")
  config.lock()
  return config
