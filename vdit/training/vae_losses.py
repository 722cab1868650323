"""Loss terms for training the video VAE; library functions with plain arguments (no config).

  total = l1 |x - x'| + l2 (x - x')^2 + kl KL(q(z|x) || N(0, I)) + perceptual d(phi(x), phi(x'))
          + adversarial [step >= start] (-D(x'))

Every term is a mean over elements, so weights carry over between clip sizes. The perceptual
distance compares a frozen frame network's activations (the toy feature network,
vdit/eval/toy_features.py) frame by frame, LPIPS-style: each layer's features are unit-normalised
over channels before the squared distance, so every layer counts alike whatever its scale. The
discriminator is a small 3D-conv patch GAN trained from scratch with the hinge loss.
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from vdit.core import weights
from vdit.eval import toy_features


@dataclasses.dataclass(frozen=True)
class LossWeights:
  l1: float = 1.0
  l2: float = 0.0
  kl: float = 1e-6
  perceptual: float = 0.0  # 0: no perceptual network is loaded
  adversarial: float = 0.0  # 0: no discriminator is built
  adversarial_start_step: int = 0  # the generator term and discriminator updates begin here


def reconstruction_loss(x, recon, *, l1: float, l2: float):
  """l1 * mean |x - recon| + l2 * mean (x - recon)^2 over every element."""
  error = recon.astype(jnp.float32) - x.astype(jnp.float32)
  return l1 * jnp.mean(jnp.abs(error)) + l2 * jnp.mean(jnp.square(error))


def kl_loss(mean, logvar):
  """KL(N(mean, exp(logvar)) || N(0, 1)) per latent element, averaged (not summed)."""
  return 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)


def psnr(x, recon):
  """Per-clip PSNR in dB [B] of videos in [-1, 1] (recon clipped first); the peak is the range."""
  error = jnp.square(jnp.clip(recon, -1.0, 1.0) - x).reshape(x.shape[0], -1).mean(axis=1)
  return 10.0 * jnp.log10(4.0 / jnp.maximum(error, 1e-10))


# ------------------------------------------------------------------------------------ perceptual


def load_perceptual(path: str) -> toy_features.ToyEncoder:
  """The frozen frame network from a toy-features weight file (WeightsError if it is not one).

  Like toy_features.load, but filling a shape-only network: eager random init costs seconds on CPU.
  """
  tensors, metadata = weights.load(path)
  if metadata.get("format") != toy_features.FORMAT:
    raise weights.WeightsError(f"Perceptual weights {path!r} have format {metadata.get('format')!r}, expected "
                               f"{toy_features.FORMAT!r}; train a toy feature network with "
                               "python -m vdit.eval.train_toy_features.")
  sizes = {k: int(metadata[k]) for k in ("vocab_size", "dim", "width")}
  model = nnx.eval_shape(lambda: toy_features.ToyEncoder(**sizes, rngs=nnx.Rngs(0)))
  weights.load_into(model, tensors, f"Perceptual weights {path!r}")
  return model


def _frame_activations(encoder: toy_features.ToyEncoder, video_bthwc):
  """Each conv layer's activations of every frame ([B*T, h, w, c] each), as in frame_embeddings."""
  b, t, h, w, c = video_bthwc.shape
  x = video_bthwc.reshape(b * t, h, w, c)
  size = toy_features.INPUT_SIZE
  if (h, w) != (size, size):
    x = jax.image.resize(x, (b * t, size, size, c), "bilinear")
  outs = []
  for conv in encoder.convs:
    x = nnx.gelu(conv(x))
    outs.append(x)
  return outs


def perceptual_loss(encoder: toy_features.ToyEncoder, x, recon):
  """Sum over layers of the mean squared distance of channel-normalised activations, per frame."""
  unit = lambda f: f * jax.lax.rsqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True) + 1e-10)
  total = 0.0
  for fx, fr in zip(_frame_activations(encoder, x), _frame_activations(encoder, recon)):
    total += jnp.mean(jnp.sum(jnp.square(unit(fx) - unit(fr)), axis=-1))
  return total


# --------------------------------------------------------------------------------- adversarial


class PatchDiscriminator(nnx.Module):
  """3D-conv patch discriminator: video [B, T, H, W, C] in [-1, 1] -> logits [B, t, h, w].

  Each layer halves H and W (and T from the second layer on) with a (3, 4, 4) kernel; GroupNorm
  rather than BatchNorm, so a logit depends on its own clip only whatever the sharding.
  """

  def __init__(self, *, in_channels: int = 3, base_dim: int = 32, num_layers: int = 3, rngs: nnx.Rngs):
    convs, norms, cin = [], [], in_channels
    for i in range(num_layers):
      cout = base_dim * 2 ** min(i, 3)
      convs.append(nnx.Conv(cin, cout, (3, 4, 4), strides=(1 if i == 0 else 2, 2, 2), padding="SAME",
                            rngs=rngs))
      norms.append(nnx.GroupNorm(cout, num_groups=min(8, cout), rngs=rngs) if i else None)
      cin = cout
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    self.head = nnx.Conv(cin, 1, (3, 3, 3), padding="SAME", rngs=rngs)

  def __call__(self, video):
    x = video.astype(jnp.float32)
    for conv, norm in zip(self.convs, self.norms):
      x = conv(x)
      x = jax.nn.leaky_relu(norm(x) if norm is not None else x, 0.2)
    return self.head(x)[..., 0]


def discriminator_hinge_loss(real_logits, fake_logits):
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def generator_hinge_loss(fake_logits):
  return -jnp.mean(fake_logits)
