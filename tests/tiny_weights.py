"""Tiny random weight files for tests: a causal 3D VAE (vdit format, or diffusers layout) and a umT5
encoder in Hugging Face layout with a sentencepiece model (T5 ids: pad 0, eos 1, unk 2)."""
import dataclasses
import json
import os

import numpy as np

from vdit.core import weights
from vdit.vae import wan_vae
from vdit.interop.wan import vae_weights as convert_wan_vae

_VAE = dict(base_dim=8, z_dim=4, dim_mult=(1, 1, 1, 1), num_res_blocks=1, attn_scales=(),
            temperal_downsample=(False, True, True), latents_mean=(0.1, -0.2, 0.3, 0.0),
            latents_std=(1.5, 0.5, 2.0, 1.0))


def vae_tensors(seed):
  config = wan_vae.WanVAEConfig(**_VAE)
  rng = np.random.default_rng(seed)
  tensors = {}
  for name, shape in wan_vae.tensor_shapes(config).items():
    scale = 1 / np.sqrt(np.prod(shape[:-1])) if name.endswith("kernel") else 0.1
    tensors[name] = (float(name.endswith("scale")) + scale * rng.standard_normal(shape)).astype(np.float32)
  return config, tensors


def vae_file(path, seed):
  """A vdit-format VAE file (vdit.vae.wan_vae.load reads it)."""
  config, tensors = vae_tensors(seed)
  weights.save(str(path), tensors, {"format": wan_vae.FORMAT, "config": config.to_json()})
  return str(path)


def diffusers_vae_folder(folder, seed):
  """The same VAE in diffusers' AutoencoderKLWan layout: diffusion_pytorch_model.safetensors + config.json."""
  config, tensors = vae_tensors(seed)
  os.makedirs(folder, exist_ok=True)
  weights.save(os.path.join(folder, "diffusion_pytorch_model.safetensors"), convert_wan_vae.to_diffusers(tensors))
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump({"_class_name": "AutoencoderKLWan", **dataclasses.asdict(config)}, f)
  return str(folder)


def t5_files(folder):
  """folder/{config.json, model.safetensors, spiece.model}: umT5 of width 16; returns (folder, spiece path)."""
  import sentencepiece as spm
  from flax import nnx
  from vdit.text import t5, t5_weights
  cfg = t5.T5Config(vocab_size=64, d_model=16, d_kv=8, num_heads=2, d_ff=32, num_layers=1,
                    relative_attention_num_buckets=8, relative_attention_max_distance=16,
                    feed_forward_proj="gated-gelu", model_type="umt5")
  os.makedirs(folder, exist_ok=True)
  model = t5.T5Encoder(cfg, rngs=nnx.Rngs(0))
  weights.save(os.path.join(folder, "model.safetensors"), t5_weights.to_hf_tensors(model))
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump({**{k: getattr(cfg, k) for k in ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff", "num_layers",
                                             "relative_attention_num_buckets", "relative_attention_max_distance",
                                             "feed_forward_proj", "layer_norm_epsilon", "model_type")},
               "dropout_rate": 0.0, "is_encoder_decoder": True}, f)
  corpus = [f"a {c} {s} moving {d}" for c in ("red", "green", "blue") for s in ("circle", "square")
            for d in ("left", "right", "up", "down")] * 4
  spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=os.path.join(folder, "spiece"),
                                 vocab_size=28, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                 minloglevel=2)
  return folder, os.path.join(folder, "spiece.model")


