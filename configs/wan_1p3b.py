"""Wan 2.1 T2V-1.3B exactly (model.variant="wan": dim 1536, 30 blocks, 12 heads, FFN 8960, 1x2x2
patches over the 16-channel Wan VAE latent; frozen umT5-XXL text of width 4096, 512 tokens) for a
GPU/TPU pod: training from cached latents and text embeddings, or sampling the converted release.

Sample the released weights (README "Pretrained Wan 2.1"):
  python -m vdit.convert --from=wan2.1 --input=Wan2.1-T2V-1.3B-Diffusers --workdir=runs/wan_1p3b
  python -m vdit.sample --workdir=runs/wan_1p3b --prompt="..." --out=runs/wan_1p3b/samples

Train (every host runs the same command; see launch/ and README "Multi-host"), after caching:
  python -m vdit.vae.convert_wan_vae --input=PIPE/vae/diffusion_pytorch_model.safetensors \
      --config=PIPE/vae/config.json --output=wan_vae.safetensors
  python -m data_prep.cache_latents --data=/data/clips --vae=wan_vae.safetensors --output=/data/latents \
      --t5=PIPE/text_encoder --tokenizer=PIPE/tokenizer/spiece.model --text_length=512
  python -m vdit.main --config=configs/wan_1p3b.py:vae=wan_vae.safetensors,t5=PIPE/text_encoder,\
tokenizer=PIPE/tokenizer/spiece.model --workdir=gs://BUCKET/runs/wan_1p3b --config.data.dir=/data/latents

Arguments: frames (latent frames per training clip, 21 = 81 pixel frames), vae (VAE weights file),
t5 / tokenizer (the text encoder folder and spiece.model, used to sample during training and after).
"""
from configs import base


def get_config(arg: str | None = None):
  args = base.parse_args(arg, frames=21, vae="", t5="", tokenizer="")
  config = base.default_config()
  config.mesh.data = 1
  config.mesh.fsdp = -1
  config.data.num_frames = int(args["frames"])
  config.latent.vae = args["vae"]

  config.model.variant = "wan"
  config.model.in_channels = 16
  config.model.patch_size = (1, 2, 2)
  config.model.dim = 1536
  config.model.depth = 30
  config.model.num_heads = 12
  config.model.mlp_ratio = 8960 / 1536
  config.model.remat = "full"
  config.model.dtype = "bfloat16"

  config.text.encoder = "t5"
  config.text.t5_path = args["t5"]
  config.text.tokenizer_path = args["tokenizer"]
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
  config.lock()
  return config
