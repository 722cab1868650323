"""Wan-2.1-1.3B-shaped video DiT (dim 1536, 30 blocks, 12 heads, FFN 8960, 1x2x2 patches over a
16-channel latent; text width 4096 as umT5-XXL gives) for a GPU/TPU pod.

Until pretrained encoders land (VAE, umT5), the built-in text encoder runs at width 4096 and the
model trains on pixels/latents given by `config.data.dir`.

Launch (every host runs the same command; see launch/ and README "Multi-host"):
  python -m vdit.main --config=configs/wan_1p3b.py --workdir=gs://BUCKET/runs/wan_1p3b \
      --config.data.dir=/data/latents --config.mesh.fsdp=-1 --config.mesh.data=1

Arguments (`configs/wan_1p3b.py:frames=21`): latent frames per clip.
"""
from configs import base


def get_config(arg: str | None = None):
  args = base.parse_args(arg, frames=21)
  config = base.default_config()
  config.mesh.data = 1
  config.mesh.fsdp = -1
  config.data.num_frames = int(args["frames"])

  config.model.in_channels = 16
  config.model.patch_size = (1, 2, 2)
  config.model.dim = 1536
  config.model.depth = 30
  config.model.num_heads = 12
  config.model.mlp_ratio = 8960 / 1536
  config.model.remat = "full"
  config.model.dtype = "bfloat16"

  config.text.max_length = 512
  config.text.dim = 4096
  config.text.depth = 2
  config.text.num_heads = 32
  config.text.mlp_ratio = 2.0

  config.diffusion.shift = 5.0  # Wan's sampling/training shift at 480p
  config.sample.shift = 5.0
  config.train.num_steps = 200_000
  config.train.global_batch_size = 128
  config.train.checkpoint_every = 1000
  config.optim.peak_lr = 1e-4
  config.optim.warmup_steps = 1000
  config.lock()
  return config
