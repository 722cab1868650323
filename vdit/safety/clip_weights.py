"""CLIP checkpoints as transformers writes them (`CLIPModel.save_pretrained`): a folder with config.json
and model.safetensors -> `ClipModel`, and back (`save`, for tests and tools).

transformers' names are vdit's with `.weight` for the leaf (`kernel`, `scale`, `embedding` here);
Linear weights [out, in] are transposed to [in, out] and the patch convolution [D, 3, p, p] becomes
[p, p, 3, D]. Floating tensors are read as float32. Keys config.json leaves out take transformers'
defaults (ViT-B/32's sizes), as transformers does. Every mismatch is one `WeightsError` naming the
file and the tensor or key.
"""
import json
import os

import numpy as np
from flax import nnx

from vdit.core import weights
from vdit.core.weights import WeightsError
from vdit.safety.clip_model import ACTIVATIONS, ClipConfig, ClipModel, TowerConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# transformers' defaults for keys a config.json may leave out (CLIPTextConfig, CLIPVisionConfig).
_TEXT_DEFAULTS = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                  "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                  "layer_norm_eps": 1e-5, "eos_token_id": 49407}
_VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                    "num_channels": 3, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu",
                    "layer_norm_eps": 1e-5}
_BUFFERS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")  # older files hold them


def read_config(path: str) -> ClipConfig:
  """ClipConfig from a transformers CLIP config.json; WeightsError naming the file and key if not one."""
  try:
    with open(path, encoding="utf-8") as f:
      d = json.load(f)
  except (OSError, ValueError) as e:
    raise WeightsError(f"CLIP config {path!r} is not readable JSON ({e}).") from None
  fail = lambda problem: WeightsError(f"CLIP config {path!r}: {problem}; pass the folder CLIPModel.save_pretrained "
                                      "wrote.")
  if not isinstance(d, dict) or d.get("model_type", "clip") != "clip":
    raise fail(f"model_type is {d.get('model_type') if isinstance(d, dict) else None!r}, not 'clip'")
  text = {**_TEXT_DEFAULTS, **(d.get("text_config") or {})}
  vision = {**_VISION_DEFAULTS, **(d.get("vision_config") or {})}
  for tower, values in (("text_config", text), ("vision_config", vision)):
    if values["hidden_act"] not in ACTIVATIONS:
      raise fail(f"{tower}.hidden_act {values['hidden_act']!r} is not one of {', '.join(ACTIVATIONS)}")
    if values["hidden_size"] % values["num_attention_heads"]:
      raise fail(f"{tower}.hidden_size {values['hidden_size']} is not a multiple of num_attention_heads")
  size, patch = vision["image_size"], vision["patch_size"]
  if not isinstance(size, int) or not isinstance(patch, int) or size % patch or vision["num_channels"] != 3:
    raise fail(f"vision_config needs a square integer image_size divisible by patch_size and 3 channels, got "
               f"image_size={size!r}, patch_size={patch!r}, num_channels={vision['num_channels']!r}")
  tower = lambda v: TowerConfig(v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"],
                                v["num_attention_heads"], float(v["layer_norm_eps"]), v["hidden_act"])
  return ClipConfig(tower(text), tower(vision), d.get("projection_dim", 512), text["vocab_size"],
                    text["max_position_embeddings"], text["eos_token_id"], size, patch)


def config_dict(cfg: ClipConfig) -> dict:
  """The config.json transformers' CLIPConfig reads back as `cfg`."""
  tower = lambda t: {"hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
                     "num_hidden_layers": t.num_layers, "num_attention_heads": t.num_heads,
                     "layer_norm_eps": t.layer_norm_eps, "hidden_act": t.hidden_act}
  return {"model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": cfg.projection_dim,
          "text_config": {**tower(cfg.text), "vocab_size": cfg.vocab_size,
                          "max_position_embeddings": cfg.max_positions, "eos_token_id": cfg.eos_token_id},
          "vision_config": {**tower(cfg.vision), "image_size": cfg.image_size, "patch_size": cfg.patch_size,
                            "num_channels": 3}}


def _hf_name(name: str) -> str:
  stem, leaf = name.rsplit(".", 1) if "." in name else ("", name)
  return f"{stem}.weight" if leaf in ("kernel", "scale", "embedding") else name


def _to_hf(name: str, value: np.ndarray) -> np.ndarray:
  if name.endswith(".kernel"):
    return value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)  # [p, p, 3, D] -> [D, 3, p, p]
  return value


def _from_hf(name: str, value: np.ndarray) -> np.ndarray:
  if name.endswith(".kernel"):
    return value.T if value.ndim == 2 else value.transpose(2, 3, 1, 0)
  return value


def to_hf_tensors(model: ClipModel) -> dict:
  """{transformers name: array} of a model's parameters."""
  return {_hf_name(n): _to_hf(n, v) for n, v in weights.module_tensors(model).items()}


def save(model: ClipModel, directory: str) -> None:
  """config.json + model.safetensors, as transformers' CLIPModel.save_pretrained lays them out."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as f:
    json.dump(config_dict(model.config), f, indent=2)
  weights.save(os.path.join(directory, WEIGHTS_FILE), to_hf_tensors(model))


def load(directory: str) -> ClipModel:
  """The CLIP of a save_pretrained folder. Built abstractly, so no random init before the weights."""
  cfg = read_config(os.path.join(directory, CONFIG_FILE))
  path = os.path.join(directory, WEIGHTS_FILE)
  hf, _ = weights.load(path)
  model = nnx.eval_shape(lambda: ClipModel(cfg, nnx.Rngs(0)))
  tensors, used = {}, set(_BUFFERS)
  for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    name = ".".join(map(str, path))
    hf_name = _hf_name(name)
    if hf_name in hf:
      value = hf[hf_name]
      tensors[name] = _from_hf(name, value.astype(np.float32) if value.dtype.kind == "f" else value)
      used.add(hf_name)
  tensors.update({n: v for n, v in hf.items() if n not in used})  # reported as unexpected
  weights.load_into(model, tensors, source=path)
  return model
