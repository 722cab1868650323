"""Causal 3D convolutions as 2D ones for XLA:CPU (used by vdit.vae.wan_vae.CausalConv3d)."""
import jax
import jax.numpy as jnp


def conv3d_as_2d(x, kernel, stride, pad_hw):
  """The same (time-unpadded) 3D convolution as one 2D convolution over frames, the kernel's time
  taps folded into its input channels. XLA:CPU runs 3D convolutions ~6x slower than this; on
  accelerators the native one is used (this copies the input once per time tap)."""
  kt, kh, kw, cin, cout = kernel.shape
  b, t = x.shape[:2]
  frames = (t - kt) // stride[0] + 1
  taps = [x[:, j:j + stride[0] * (frames - 1) + 1:stride[0]] for j in range(kt)]
  stacked = jnp.concatenate(taps, axis=-1) if kt > 1 else taps[0]
  stacked = stacked.reshape(b * frames, *stacked.shape[2:])
  kernel_2d = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kt * cin, cout)
  y = jax.lax.conv_general_dilated(stacked, kernel_2d, stride[1:], [(p, p) for p in pad_hw],
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y.reshape(b, frames, *y.shape[1:])
