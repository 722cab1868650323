"""Wan 2.1 T2V-14B exactly (model.variant="wan": dim 5120, 40 blocks, 40 heads, FFN 13824, 1x2x2
patches over the 16-channel Wan VAE latent; frozen umT5-XXL text) for a TPU/GPU pod. Used as
configs/wan_1p3b.py is (same arguments; see its docstring for caching and training); its fit on
TPU slices is in the README's fit table (benchmarks/fit_table.py), e.g.:

  python -m vdit.compile_check --config=configs/wan_14b.py --topology=tpu:v5p:4x4x4 \
      --num_frames=21 --height=90 --width=160 --config.model.attention=splash

Arguments: frames (latent frames per training clip, 21 = 81 pixel frames), vae, t5, tokenizer.
"""
from configs import base
from vdit.config.wan import wan21_t2v_config


def get_config(arg: str | None = None):
  args = base.parse_args(arg, frames=21, vae="", t5="", tokenizer="")
  config = wan21_t2v_config(frames=int(args["frames"]), vae=args["vae"], t5=args["t5"], tokenizer=args["tokenizer"],
                            size="14B")
  config.lock()
  return config
