"""Weight files (the one module that imports safetensors): flat name -> array, plus string metadata.

Networks that load weights a user gives by path (feature networks for evals, pretrained
encoders) go through here, so every such file is safetensors (never pickle) and every mismatch
is one `WeightsError` naming the file, the tensor and what was expected.
"""
import os

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file
from vdit.core.errors import UserError


class WeightsError(UserError):
  pass


def save(path: str, tensors: dict, metadata: dict | None = None) -> None:
  """Writes {name: array} (and {str: str} metadata) to a safetensors file, atomically."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  save_file({k: np.array(v, order="C") for k, v in tensors.items()}, tmp,  # keeps 0-d shapes
            metadata={k: str(v) for k, v in (metadata or {}).items()})
  os.replace(tmp, path)


def load(path: str) -> tuple[dict, dict]:
  """Returns ({name: np.ndarray}, metadata) of a safetensors file; WeightsError if unreadable."""
  if not os.path.isfile(path):
    raise WeightsError(f"Weights file {path!r} does not exist; pass the path of a .safetensors file.")
  try:
    with safe_open(path, framework="numpy") as f:
      metadata = dict(f.metadata() or {})
    return load_file(path), metadata
  except (SafetensorError, OSError, ValueError) as e:
    raise WeightsError(f"Weights file {path!r} is not a readable safetensors file ({e}).") from None


def module_tensors(module) -> dict:
  """{'a.b.kernel': array} for every nnx.Param of a module."""
  from flax import nnx  # here: commands that only read and write files start without JAX
  state = nnx.state(module, nnx.Param)
  return {".".join(map(str, path)): np.asarray(var.get_value()) for path, var in nnx.to_flat_state(state)}


def load_into(module, tensors: dict, source: str) -> None:
  """Assigns tensors to a module's parameters by name; names, shapes and dtypes must match exactly.

  Raises:
    WeightsError: naming `source`, the missing/unexpected tensors or the first shape/dtype mismatch.
  """
  from flax import nnx
  state = nnx.state(module, nnx.Param)
  flat = list(nnx.to_flat_state(state))
  expected = {".".join(map(str, path)): var for path, var in flat}
  missing = sorted(set(expected) - set(tensors))
  unexpected = sorted(set(tensors) - set(expected))
  if missing or unexpected:
    raise WeightsError(f"{source}: tensors do not match the network: missing {missing[:5]}"
                       f"{' ...' if len(missing) > 5 else ''} ({len(missing)}), unexpected "
                       f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} ({len(unexpected)}).")
  for name, var in expected.items():
    value, want = tensors[name], var.get_value()
    if tuple(value.shape) != tuple(want.shape):
      raise WeightsError(f"{source}: tensor {name!r} has shape {tuple(value.shape)}, the network "
                         f"expects {tuple(want.shape)}.")
    if np.dtype(value.dtype) != np.dtype(want.dtype):
      raise WeightsError(f"{source}: tensor {name!r} has dtype {value.dtype}, the network expects "
                         f"{want.dtype}.")
  for name, var in expected.items():
    var.set_value(np.asarray(tensors[name]))
  nnx.update(module, state)
