"""A released Wan 2.1 text-to-video pipeline (diffusers layout) -> a vdit workdir that `vdit.sample`
and `vdit.evaluate` use like any trained one.

  PIPELINE/transformer/  *.safetensors + config.json  -> WORKDIR/checkpoints/0 (Orbax; weights only)
  PIPELINE/vae/          diffusion_pytorch_model.safetensors + config.json -> WORKDIR/vae.safetensors
  PIPELINE/text_encoder/ umT5-XXL, HF safetensors      -> read in place (config.text.t5_path)
  PIPELINE/tokenizer/    spiece.model                  -> read in place (config.text.tokenizer_path)
  WORKDIR/config.json    configs/wan_1p3b.py with the release's sizes and Wan's sampling defaults

Launch: python -m vdit.convert --from=wan2.1 --input=Wan2.1-T2V-1.3B-Diffusers --workdir=runs/wan_1p3b
Only safetensors and JSON are read (no pickle); nothing is downloaded.
"""
import json
import os

import jax
import numpy as np

from vdit.core import workdir_files
from vdit.core import checkpoint as ckpt_lib
from vdit.config import config_io
from vdit.config import wan as wan_config
from vdit.interop.wan import dit_weights as convert
from vdit.parallel import sharding
from vdit.model import factory
from vdit.core import weights
from vdit.diffusion import samplers
from vdit.interop.wan import vae_weights as convert_wan_vae

# Wan 2.1's text-to-video defaults (its generate.py at 480p): 81 frames at 16 fps, 50 steps, guidance 5.
WAN_SAMPLE = {"num_frames": 81, "height": 480, "width": 832, "steps": 50, "cfg": 5.0, "shift": 5.0}
WAN_TEXT_LENGTH = 512


def _require_file(path: str, what: str) -> str:
  if not os.path.isfile(path):
    raise weights.WeightsError(f"{what} {path!r} does not exist; --input must be a diffusers Wan 2.1 pipeline "
                               "folder (transformer/, vae/, text_encoder/, tokenizer/).")
  return path


def make_config(overrides: dict, *, vae_path: str, t5_path: str, tokenizer_path: str):
  """configs/wan_1p3b.py's config with the release's architecture and the encoders' paths."""
  from vdit.text import t5_weights
  config = wan_config.wan21_t2v_config()
  config.lock()
  t5_dim = t5_weights.read_config(os.path.join(t5_path, "config.json")).d_model
  if t5_dim != overrides["text.dim"]:
    raise weights.WeightsError(f"The transformer reads text of width {overrides['text.dim']} but the text encoder "
                               f"{t5_path!r} gives {t5_dim}; they are not from the same release.")
  with config.unlocked():
    for dotted, value in overrides.items():
      section, key = dotted.split(".")
      config[section][key] = value
    config.text.encoder, config.text.t5_path, config.text.tokenizer_path = "t5", t5_path, tokenizer_path
    config.text.max_length = WAN_TEXT_LENGTH
    config.latent.vae = vae_path
    for key, value in WAN_SAMPLE.items():
      config.sample[key] = value
    config.sample.sampler = "unipc" if "unipc" in samplers.SAMPLERS else "dpmpp_2m"
  return config


def _dit_name(path) -> str:
  """("dit", "blocks", "self_attn", ...) tree path -> the converter's "blocks.self_attn..." name."""
  return ".".join(str(getattr(k, "key", k)) for k in path[1:])


def params_tree(abstract: dict, dit_tensors: dict) -> dict:
  """The Generator's parameter tree ({"dit": ...}) filled with converted tensors, placed with the
  shardings of `abstract` (factory.abstract_params)."""
  missing = sorted(_dit_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(abstract)
                   if _dit_name(p) not in dit_tensors)
  if missing:
    raise weights.WeightsError(f"The converted transformer lacks {missing[:5]} ({len(missing)}).")
  return jax.tree_util.tree_map_with_path(
      lambda p, leaf: jax.device_put(np.asarray(dit_tensors[_dit_name(p)], leaf.dtype), leaf.sharding), abstract)


def build(pipeline_dir: str, workdir: str) -> str:
  """Writes WORKDIR (config.json, vae.safetensors, checkpoints/0); returns the config path."""
  transformer = os.path.join(pipeline_dir, "transformer")
  overrides = convert.read_config(_require_file(os.path.join(transformer, "config.json"), "Transformer config"))
  vae_dir = os.path.join(pipeline_dir, "vae")
  t5_path = os.path.abspath(os.path.join(pipeline_dir, "text_encoder"))
  tokenizer_path = _require_file(os.path.abspath(os.path.join(pipeline_dir, "tokenizer", "spiece.model")),
                                 "Tokenizer file")
  _require_file(os.path.join(t5_path, "config.json"), "Text encoder config")
  vae_path = os.path.abspath(os.path.join(workdir, workdir_files.VAE_FILE))
  config = make_config(overrides, vae_path=vae_path, t5_path=t5_path, tokenizer_path=tokenizer_path)
  if os.path.exists(os.path.join(workdir, config_io.CONFIG_FILE)):
    raise ckpt_lib.CheckpointError(f"Workdir {workdir!r} already holds a model; choose a new --workdir.")
  tensors = convert.convert_state_dict(convert.read_weights(transformer), overrides, f"Weights {transformer!r}")
  vae_weights = _require_file(os.path.join(vae_dir, "diffusion_pytorch_model.safetensors"), "VAE weights")
  os.makedirs(workdir, exist_ok=True)
  convert_wan_vae.convert_file(vae_weights, os.path.join(vae_dir, "config.json"), vae_path)

  mesh = sharding.make_mesh({"data": -1})
  params = params_tree(factory.abstract_params(config, mesh), tensors)
  del tensors
  checkpointer = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(workdir), async_save=False)
  checkpointer.save_weights(0, params, meta={"model_signature": config_io.model_signature(config),
                                             "source": {"release": "wan2.1", "input": os.path.abspath(pipeline_dir)}})
  checkpointer.close()
  config_io.save(config, workdir)  # last: a workdir with config.json is complete
  return os.path.join(workdir, config_io.CONFIG_FILE)


def describe(workdir: str) -> str:
  with open(os.path.join(workdir, config_io.CONFIG_FILE)) as f:
    config = json.load(f)
  s = config["sample"]
  return (f"vdit workdir {workdir}: DiT {config['model']['dim']}x{config['model']['depth']} (Wan 2.1), VAE "
          f"{config['latent']['vae']}, text encoder {config['text']['t5_path']}; samples {s['num_frames']}x"
          f"{s['height']}x{s['width']}, {s['steps']} {s['sampler']} steps, cfg {s['cfg']}.")
