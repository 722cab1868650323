"""Wan 2.1 T2V-1.3B and -14B exactly, as configs: `configs/wan_1p3b.py`, `configs/wan_14b.py` and a
converted release's workdir (vdit.interop.wan.workdir) all start from it."""
from vdit.config import schema

# size -> (dim, blocks, heads, FFN width), as the released transformers' configs give them.
SIZES = {"1.3B": (1536, 30, 12, 8960), "14B": (5120, 40, 40, 13824)}


def wan21_t2v_config(*, frames: int = 21, vae: str = "", t5: str = "", tokenizer: str = "", size: str = "1.3B"):
  """Wan 2.1 T2V-1.3B (dim 1536, 30 blocks, 12 heads, FFN 8960; `size`="14B": 5120, 40, 40, 13824), 1x2x2
  patches over 16-channel latents, frozen umT5 text of width 4096 x 512 tokens, with Wan's training and
  sampling settings. Unlocked."""
  dim, depth, heads, ffn = SIZES[size]
  config = schema.default_config()
  config.mesh.data = 1
  config.mesh.fsdp = -1
  config.data.num_frames = frames
  config.latent.vae = vae

  config.model.variant = "wan"
  config.model.in_channels = 16
  config.model.patch_size = (1, 2, 2)
  config.model.dim = dim
  config.model.depth = depth
  config.model.num_heads = heads
  config.model.mlp_ratio = ffn / dim
  config.model.remat = "full"
  config.model.dtype = "bfloat16"

  config.text.encoder = "t5"
  config.text.t5_path = t5
  config.text.tokenizer_path = tokenizer
  config.text.max_length = 512
  config.text.dim = 4096
  config.text.caption_dropout = 0.1

  config.diffusion.shift = 5.0  # Wan's sampling/training shift at 480p
  config.sample.shift = 5.0
  config.sample.sampler = "unipc"
  config.sample.steps = 50
  config.sample.cfg = 5.0
  config.train.num_steps = 200_000
  config.train.global_batch_size = 128
  config.train.checkpoint_every = 1000
  config.optim.peak_lr = 1e-4
  config.optim.warmup_steps = 1000
  return config
