"""Spacetime patches: video [B, T, H, W, C] <-> tokens [B, N, pt*ph*pw*C] on a (nt, nh, nw) grid."""


def grid_shape(video_shape, patch_size) -> tuple[int, int, int]:
  """Token grid (nt, nh, nw) for a video of shape [..., T, H, W, C]; sizes must divide evenly."""
  t, h, w = video_shape[-4:-1]
  pt, ph, pw = patch_size
  if t % pt or h % ph or w % pw:
    raise ValueError(f"Video size (T={t}, H={h}, W={w}) is not divisible by the patch size {tuple(patch_size)}; "
                     "choose frames/height/width that are multiples of it.")
  return t // pt, h // ph, w // pw


def patchify(x, patch_size):
  """[B, T, H, W, C] -> [B, nt*nh*nw, pt*ph*pw*C], tokens in t-major order."""
  b, _, _, _, c = x.shape
  nt, nh, nw = grid_shape(x.shape, patch_size)
  pt, ph, pw = patch_size
  x = x.reshape(b, nt, pt, nh, ph, nw, pw, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, nt * nh * nw, pt * ph * pw * c)


def unpatchify(tokens, grid, patch_size, channels):
  """Inverse of `patchify`: [B, N, pt*ph*pw*C] -> [B, T, H, W, C]."""
  b = tokens.shape[0]
  nt, nh, nw = grid
  pt, ph, pw = patch_size
  x = tokens.reshape(b, nt, nh, nw, pt, ph, pw, channels)
  x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, nt * pt, nh * ph, nw * pw, channels)
