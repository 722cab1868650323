"""Model FLOPs of the generator per training step, and the hardware peaks that turn them into MFU.

Every matmul contributes 2·m·n·k FLOPs (one multiply and one add per term). With B clips per
batch, N video tokens per clip (t·h·w patches), L text tokens, model width D, MLP width F,
text width E, text MLP width G and P = pt·ph·pw·C values per patch:

  DiT, per clip:
    patch embed           2·N·(P + pt·ph·pw·[frame_conditioning])·D
    text projection       2·L·(E·D + D·D)              (text MLP E -> D -> D)
    time embedding        2·S·(256·D + D·D + D·6D)     (MLP 256 -> D -> D, then the 6 modulations;
                                                        S = 1 time per clip, or one per temporal
                                                        patch with frame conditioning)
    per block (x depth):
      self-attention      2·N·D·3D + 2·N·D·D           (Q, K, V; output projection)
                          + 4·N·N·D                    (QK^T and AV over all heads: 2·2·H·N·N·D/H)
      cross-attention     2·N·D·D + 2·L·D·2D + 2·N·D·D (Q from video; K, V from text; output)
                          + 4·N·L·D
      MLP                 2·N·D·F·2
    final layer           2·N·D·P
  text encoder, per clip, per layer:
                          2·L·E·4E + 4·L·L·E + 2·L·E·G·2

forward = B × (DiT + text encoder); a training step = 3 × forward (the backward pass costs
twice the forward: gradients with respect to activations and to weights). Rematerialisation
is not counted (the MFU convention: recomputed FLOPs are overhead, not model FLOPs), nor are
elementwise ops, norms, softmax or the optimizer. Classifier-free guidance exists only at
sampling time, so a training step has one forward per clip.
"""
# The timestep's sinusoidal embedding width (vdit.model.dit.DiT's freq_dim).
_FREQ_DIM = 256


def _attention(n: int, m: int, dim: int) -> float:
  """Score and value matmuls of one attention of n queries over m keys (all heads together)."""
  return 4.0 * n * m * dim


def dit_forward_flops(model_config, text_dim: int, video_shape, text_length: int) -> float:
  """Matmul FLOPs of one DiT forward on video_shape [B, T, H, W, C] with text_length text tokens."""
  m = model_config
  b, t, h, w, c = video_shape
  pt, ph, pw = m.patch_size
  if t % pt or h % ph or w % pw:
    raise ValueError(f"Video {t}x{h}x{w} is not divisible by the patch size {tuple(m.patch_size)}.")
  n = (t // pt) * (h // ph) * (w // pw)
  d, length = m.dim, text_length
  f = int(d * m.mlp_ratio)
  patch_values = pt * ph * pw * c
  frame_conditioning = bool(m.frame_conditioning)
  times = t // pt if frame_conditioning else 1
  patch_in = patch_values + pt * ph * pw * int(frame_conditioning)

  embed = 2.0 * n * patch_in * d + 2.0 * length * (text_dim * d + d * d)
  embed += 2.0 * times * (_FREQ_DIM * d + d * d + d * 6 * d)
  self_attn = 2.0 * n * d * 4 * d + _attention(n, n, d)
  cross_attn = 2.0 * n * d * 2 * d + 2.0 * length * d * 2 * d + _attention(n, length, d)
  mlp = 2.0 * n * d * f * 2
  head = 2.0 * n * d * patch_values
  return b * (embed + m.depth * (self_attn + cross_attn + mlp) + head)


def text_encoder_flops(text_config, batch_size: int, text_length: int) -> float:
  """Matmul FLOPs of the text encoder on [batch_size, text_length] tokens (the embedding is a lookup).
  A frozen encoder (text.encoder="t5") runs outside the step, on cached embeddings: 0."""
  if text_config.encoder != "trainable":
    return 0.0
  e, length = text_config.dim, text_length
  g = int(e * text_config.mlp_ratio)
  layer = 2.0 * length * e * 4 * e + _attention(length, length, e) + 2.0 * length * e * g * 2
  return batch_size * text_config.depth * layer


def forward_flops(config, video_shape) -> float:
  """Matmul FLOPs of one generator forward (text encoder + DiT) on a batch of video_shape [B, T, H, W, C]."""
  length = config.text.max_length
  return (text_encoder_flops(config.text, video_shape[0], length)
          + dit_forward_flops(config.model, config.text.dim, video_shape, length))


def train_step_flops(config, video_shape) -> float:
  """Model FLOPs of one training step on a global batch of video_shape: 3 x forward (no remat)."""
  return 3.0 * forward_flops(config, video_shape)


# Dense bf16 peak FLOP/s per JAX device (one chip; a megacore v4/v5p chip is one device), from the
# vendors' spec sheets (NVIDIA: SXM parts, without sparsity). Matched in order against the
# lower-cased `device.device_kind`, so more specific names come first.
_PEAK_BF16_FLOPS = (
    (("v6 lite", "v6e"), "tpu_v6e", 918e12),
    (("v5 lite", "v5e", "v5litepod"), "tpu_v5e", 197e12),
    (("v5p", "tpu v5"), "tpu_v5p", 459e12),
    (("tpu v4",), "tpu_v4", 275e12),
    (("b200",), "b200", 2250e12),
    (("gh200",), "gh200", 989e12),
    (("h200",), "h200", 989e12),
    (("h100",), "h100", 989e12),
    (("a100",), "a100", 312e12),
)


def device_family(device_kind: str) -> str | None:
  """'TPU v5 lite' -> 'tpu_v5e', 'NVIDIA H100 80GB HBM3' -> 'h100'; None for unknown kinds (CPU)."""
  kind = device_kind.lower()
  for patterns, family, _ in _PEAK_BF16_FLOPS:
    if any(p in kind for p in patterns):
      return family
  return None


def peak_flops_per_device(device_kind: str) -> float | None:
  """Dense bf16 peak FLOP/s of one device of this kind (`jax.devices()[0].device_kind`), or None."""
  family = device_family(device_kind)
  return next((peak for _, name, peak in _PEAK_BF16_FLOPS if name == family), None)


def mfu(flops_per_step: float, step_seconds: float, num_devices: int, peak: float | None) -> float | None:
  """Model FLOPs utilisation: achieved model FLOP/s over the devices' peak; None without a peak."""
  if not peak:
    return None
  return flops_per_step / step_seconds / (num_devices * peak)


def tflops_per_device(flops_per_step: float, step_seconds: float, num_devices: int) -> float:
  """Achieved model TFLOP/s per device."""
  return flops_per_step / step_seconds / num_devices / 1e12
