"""Wan 2.1 T2V-1.3B exactly (model.variant="wan": dim 1536, 30 blocks, 12 heads, FFN 8960, 1x2x2
patches over the 16-channel Wan VAE latent; frozen umT5-XXL text of width 4096, 512 tokens) for a
GPU/TPU pod: training from cached latents and text embeddings, or sampling the converted release.

Sample the released weights (README "Pretrained Wan 2.1"):
  python -m vdit.convert --from=wan2.1 --input=Wan2.1-T2V-1.3B-Diffusers --workdir=runs/wan_1p3b
  python -m vdit.sample --workdir=runs/wan_1p3b --prompt="..." --out=runs/wan_1p3b/samples

Train (every host runs the same command; see launch/ and README "Multi-host"), after caching:
  python -m vdit.interop.wan.vae_weights --input=PIPE/vae/diffusion_pytorch_model.safetensors \
      --config=PIPE/vae/config.json --output=wan_vae.safetensors
  python -m data_prep.cache_latents --data=/data/clips --vae=wan_vae.safetensors --output=/data/latents \
      --t5=PIPE/text_encoder --tokenizer=PIPE/tokenizer/spiece.model --text_length=512
  python -m vdit.main --config=configs/wan_1p3b.py:vae=wan_vae.safetensors,t5=PIPE/text_encoder,\
tokenizer=PIPE/tokenizer/spiece.model --workdir=gs://BUCKET/runs/wan_1p3b --config.data.dir=/data/latents

Arguments: frames (latent frames per training clip, 21 = 81 pixel frames), vae (VAE weights file),
t5 / tokenizer (the text encoder folder and spiece.model, used to sample during training and after).
"""


from configs import base
from vdit.config.wan import wan21_t2v_config


def get_config(arg: str | None = None):
  args = base.parse_args(arg, frames=21, vae="", t5="", tokenizer="")
  config = wan21_t2v_config(frames=int(args["frames"]), vae=args["vae"], t5=args["t5"], tokenizer=args["tokenizer"])
  config.lock()
  return config
