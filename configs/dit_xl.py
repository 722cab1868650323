"""DiT-XL-like video model (dim 1152, 28 blocks, 16 heads; ~0.7B DiT params) for a GPU/TPU pod.

Trains on prepared data in pixel space today (in_channels=3, 1xPxP patches); a VAE
latent config swaps in_channels/patch size when latents are cached.

Launch (every host runs the same command; see launch/ and README "Multi-host"):
  python -m vdit.main --config=configs/dit_xl.py --workdir=gs://BUCKET/runs/dit_xl \
      --config.data.dir=/data/clips --config.mesh.fsdp=-1 --config.mesh.data=1

Arguments (`configs/dit_xl.py:frames=16,patch=2`): frames per clip, spatial patch size.
"""
from configs import base


def get_config(arg: str | None = None):
  args = base.parse_args(arg, frames=16, patch=2)
  config = base.default_config()
  config.mesh.data = 1
  config.mesh.fsdp = -1
  config.data.num_frames = int(args["frames"])

  p = int(args["patch"])
  config.model.in_channels = 3
  config.model.patch_size = (1, p, p)
  config.model.dim = 1152
  config.model.depth = 28
  config.model.num_heads = 16
  config.model.mlp_ratio = 4.0
  config.model.remat = "full"
  config.model.dtype = "bfloat16"

  config.text.max_length = 128
  config.text.dim = 768
  config.text.depth = 6
  config.text.num_heads = 12

  config.train.num_steps = 400_000
  config.train.global_batch_size = 256
  config.train.checkpoint_every = 2000
  config.optim.peak_lr = 1e-4
  config.optim.warmup_steps = 2000
  config.lock()
  return config
