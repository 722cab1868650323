"""Converts Wan 2.1's VAE in diffusers layout (`AutoencoderKLWan`) to vdit's WanVAE weight file.

Launch (the files of e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers/vae):
  python -m vdit.interop.wan.vae_weights --input=diffusion_pytorch_model.safetensors \
      --config=config.json --output=vae.safetensors

The output is safetensors with vdit names and channels-last kernels plus the architecture as JSON
metadata, loaded by `vdit.vae.wan_vae.load(path)`. Only safetensors is read (no pickle); the original
Wan repository's `Wan2.1_VAE.pth` must first be turned into the diffusers layout.
"""
import os
from typing import TYPE_CHECKING

from absl import flags
import numpy as np

from vdit.core import command, weights
from vdit.core.errors import ConfigError
from vdit.interop.wan import diffusers_config

if TYPE_CHECKING:  # imported where used: `--help` and flag errors answer without importing JAX
  from vdit.vae import wan_vae

# diffusers module names -> vdit ones (the rest of the path is the same).
_RENAMES = ((".upsamplers.0.", ".upsampler."), (".resample.1.", ".conv."))
_LEAVES = {"weight": "kernel", "gamma": "scale"}
# diffusers config keys that do not change the architecture vdit builds.
_IGNORED_CONFIG_KEYS = {"dropout", "clip_output"}
_UNSUPPORTED = {"is_residual": (False, None), "patch_size": (None, 1)}  # Wan 2.2's VAE: not built


def _listing(names) -> str:
  names = sorted(names)
  return f"{names[:8]}{' ...' if len(names) > 8 else ''} ({len(names)})"


def config_from_diffusers(cfg: dict, source: str = "config") -> "wan_vae.WanVAEConfig":
  """WanVAEConfig from diffusers' AutoencoderKLWan config.json contents.

  Raises:
    ConfigError: naming `source` and the unknown key or the unsupported value.
  """
  from vdit.vae import wan_vae
  cfg = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in _IGNORED_CONFIG_KEYS}
  for key, allowed in _UNSUPPORTED.items():
    value = cfg.pop(key, allowed[0])
    if value not in allowed:
      raise ConfigError(f"{source}: {key}={value!r} (Wan 2.2's VAE) is not supported; vdit builds Wan 2.1's.")
  factors = {k: cfg.pop(k, None) for k in ("scale_factor_temporal", "scale_factor_spatial")}
  fields = set(wan_vae.WanVAEConfig.__dataclass_fields__)
  unknown = sorted(set(cfg) - fields)
  if unknown:
    raise ConfigError(f"{source}: unknown AutoencoderKLWan config keys {unknown}; known: {sorted(fields)}.")
  config = wan_vae.WanVAEConfig(**cfg)
  for key, have in (("scale_factor_temporal", config.temporal_factor), ("scale_factor_spatial", config.spatial_factor)):
    if factors[key] is not None and factors[key] != have:
      raise ConfigError(f"{source}: {key}={factors[key]} but the architecture gives {have}.")
  return config


def vdit_name(name: str) -> str:
  """vdit name of a diffusers tensor name (`...conv1.weight` -> `...conv1.kernel`)."""
  for old, new in _RENAMES:
    name = name.replace(old, new)
  stem, _, leaf = name.rpartition(".")
  return f"{stem}.{_LEAVES.get(leaf, leaf)}"


def vdit_value(name: str, value: np.ndarray) -> np.ndarray:
  """Conv weights [O, I, (T,) H, W] -> [(T,) H, W, I, O]; RMS norm gammas [C, 1, 1(, 1)] -> [C]."""
  value = np.asarray(value, np.float32)
  if name.endswith(".weight") and value.ndim in (4, 5):
    return np.ascontiguousarray(value.transpose(*range(2, value.ndim), 1, 0))
  if name.endswith(".gamma"):
    return value.reshape(-1)
  return value


def to_diffusers(tensors: dict) -> dict:
  """vdit WanVAE tensors -> diffusers names and layout (the inverse of vdit_name/vdit_value, with norm
  gammas kept flat [C], which the converter accepts): writes diffusers-layout files for tests."""
  inverse = {new: old for old, new in _LEAVES.items()}
  out = {}
  for name, value in tensors.items():
    stem, _, leaf = name.rpartition(".")
    for old, new in _RENAMES:
      stem = f"{stem}.".replace(new, old)[:-1]
    value = np.asarray(value, np.float32)
    if leaf == "kernel" and value.ndim in (4, 5):
      value = np.ascontiguousarray(value.transpose(value.ndim - 1, value.ndim - 2, *range(value.ndim - 2)))
    out[f"{stem}.{inverse.get(leaf, leaf)}"] = value
  return out


def convert_state_dict(tensors: dict, config: "wan_vae.WanVAEConfig", source: str = "checkpoint") -> dict:
  """Maps a diffusers AutoencoderKLWan state dict ({name: array}) to vdit WanVAE tensors (float32).

  Raises:
    weights.WeightsError: naming `source`, listing unknown and missing names and every shape mismatch.
  """
  from vdit.vae import wan_vae
  expected = wan_vae.tensor_shapes(config)
  converted, unknown, mismatched = {}, [], []
  for name, value in tensors.items():
    target = vdit_name(name)
    if target not in expected:
      unknown.append(name)
      continue
    value = vdit_value(name, value)
    if value.shape != expected[target]:
      mismatched.append(f"{name} {tuple(np.shape(tensors[name]))} -> {target} {value.shape}, expected "
                        f"{expected[target]}")
    converted[target] = value
  missing = sorted(set(expected) - set(converted))
  if unknown or missing or mismatched:
    hint = (" The names look like the original Wan repository's checkpoint; convert it to the diffusers layout "
            "first." if any(n.startswith(("encoder.downsamples", "decoder.upsamples")) for n in unknown) else "")
    raise weights.WeightsError(
        f"{source} does not match AutoencoderKLWan({config}): unknown names {_listing(unknown)}, missing (vdit "
        f"names) {_listing(missing)}, shape mismatches {mismatched[:5]}{' ...' if len(mismatched) > 5 else ''} "
        f"({len(mismatched)}); check that --config is the config.json next to the weights.{hint}")
  return converted


def read_config(path: str) -> "wan_vae.WanVAEConfig":
  cfg = diffusers_config.read(path, "the VAE's")
  if cfg.get("_class_name", "AutoencoderKLWan") != "AutoencoderKLWan":
    raise ConfigError(f"Config file {path!r} is not an AutoencoderKLWan config (_class_name={cfg['_class_name']!r}).")
  return config_from_diffusers(cfg, f"Config file {path!r}")


def convert_file(input_path: str, config_path: str, output_path: str) -> "wan_vae.WanVAEConfig":
  """Reads a diffusers VAE (safetensors + config.json), writes the vdit file; returns its config."""
  from vdit.vae import wan_vae
  config = read_config(config_path)
  tensors, _ = weights.load(input_path)
  converted = convert_state_dict(tensors, config, f"Weights file {input_path!r}")
  weights.save(output_path, converted, {"format": wan_vae.FORMAT, "config": config.to_json(),
                                        "source": os.path.basename(input_path)})
  return config


def define_flags():
  command.define_path("input", None, "diffusers AutoencoderKLWan weights (.safetensors).", required=True)
  command.define_path("config", None, "its diffusers config.json.", required=True)
  flags.DEFINE_string("output", None, "output .safetensors for vdit.vae.wan_vae.load.", required=True)


def main(f):
  config = convert_file(f.input, f.config, f.output)
  print(f"Wrote {f.output} ({config}).")


if __name__ == "__main__":
  command.run(main, define_flags)
