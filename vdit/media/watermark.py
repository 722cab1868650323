"""An invisible watermark for generated videos and images, and its detector.

  python -m vdit.watermark detect FILE [FILE ...]     # the detector as a command

Embedding adds a key-seeded +-1 pattern on a 16x16 grid, smoothly upsampled to the frame and
scaled to +-3 grey levels (about 38.6 dB PSNR), to every frame. The pattern lives at the frame's
own scale, so resizing keeps it, and at low frequency, so lossy re-encoding keeps it.

Detection averages a file's frames (the fixed pattern adds up, moving content averages out),
measures each grid cell's mean brightness, high-passes the cell grid (cell minus the mean of its
4 neighbours, which cancels smooth content) and counts sign agreements with the equally
high-passed pattern. Signs, not values, so a few cells on strong edges cannot outvote the rest.
The score, (agreements - disagreements) / sqrt(cells compared), is about N(0, 1) on unmarked
content and far above the threshold on marked files.
"""
import numpy as np

GRID = 16
AMPLITUDE = 3.0  # grey levels
THRESHOLD = 4.0  # score above which a file is called watermarked
DEFAULT_KEY = 20261122


def _pattern(key: int) -> np.ndarray:
  return np.random.default_rng(key).choice([-1.0, 1.0], size=(GRID, GRID))


def _upsample(cells: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear upsampling of the cell grid to height x width (cell centres at their pixel centres)."""
  ys = np.clip((np.arange(height) + 0.5) * GRID / height - 0.5, 0, GRID - 1)
  xs = np.clip((np.arange(width) + 0.5) * GRID / width - 0.5, 0, GRID - 1)
  y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
  y1, x1 = np.minimum(y0 + 1, GRID - 1), np.minimum(x0 + 1, GRID - 1)
  wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
  top = cells[y0][:, x0] * (1 - wx) + cells[y0][:, x1] * wx
  bottom = cells[y1][:, x0] * (1 - wx) + cells[y1][:, x1] * wx
  return top * (1 - wy) + bottom * wy


def embed(frames: np.ndarray, key: int = DEFAULT_KEY) -> np.ndarray:
  """uint8 [T, H, W, 3] -> the same frames carrying the watermark."""
  frames = np.asarray(frames)
  mark = AMPLITUDE * _upsample(_pattern(key), frames.shape[1], frames.shape[2])
  return np.clip(frames.astype(np.float32) + mark[None, :, :, None], 0, 255).round().astype(np.uint8)


def _cell_means(image: np.ndarray) -> np.ndarray:
  """Mean of a [H, W] image over each of the GRID x GRID cells (edges split by rounding)."""
  rows = np.linspace(0, image.shape[0], GRID + 1).round().astype(int)
  cols = np.linspace(0, image.shape[1], GRID + 1).round().astype(int)
  sums = np.add.reduceat(np.add.reduceat(image, rows[:-1], axis=0), cols[:-1], axis=1)
  return sums / np.outer(np.diff(rows), np.diff(cols))


def _high_pass(cells: np.ndarray) -> np.ndarray:
  padded = np.pad(cells, 1, mode="edge")
  neighbours = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]) / 4
  return cells - neighbours


def score(frames: np.ndarray, key: int = DEFAULT_KEY) -> float:
  """Detection score of uint8 [T, H, W, 3] frames (any size): ~N(0, 1) when unmarked."""
  grey = np.asarray(frames, np.float32).mean(axis=(0, 3))  # frames, then channels
  # Below a hundredth of a grey level a cell is flat: its sign would be float noise.
  cells = np.sign(np.round(_high_pass(_cell_means(grey)).ravel(), 2))
  pattern = np.sign(_high_pass(_pattern(key)).ravel())
  compared = np.count_nonzero(cells * pattern)
  return 0.0 if compared == 0 else float(cells @ pattern / np.sqrt(compared))


def detect(frames: np.ndarray, key: int = DEFAULT_KEY) -> tuple[bool, float]:
  value = score(frames, key)
  return value > THRESHOLD, value
