"""Reads what a toy clip shows: its foreground, the colours, shape and direction of motion.

The judges (`vdit.toy.judge` for one object, `vdit.toy.pair_judge` for two) compare these
readings with a caption.
"""
import numpy as np

from vdit.toy import spec as toy_spec

# A pixel is foreground when its RGB lies this far (Euclidean) from BACKGROUND; every palette
# colour is over 200 away, so codec ringing and blended edges stay on the right side.
_FOREGROUND_DISTANCE = 60.0
# Motion below this fraction of the frame over the whole clip counts as static.
_MIN_DISPLACEMENT = 0.05
NONE = "none"  # the reading when there is nothing to read (no foreground, no clear motion)

_BACKGROUND = np.array(toy_spec.BACKGROUND, np.float32)


def foreground_mask(frames_thw3: np.ndarray) -> np.ndarray:
  diff = frames_thw3.astype(np.float32) - _BACKGROUND
  return np.linalg.norm(diff, axis=-1) > _FOREGROUND_DISTANCE


def _blend_residuals(frames_thw3: np.ndarray, mask_thw: np.ndarray, palette: dict) -> np.ndarray:
  """[P, K]: how far each masked pixel lies from the best blend bg + a (c - bg), a in [0, 1], of
  each palette colour c ({name: rgb}, K colours in order). Soft or blurred edges (a < 1) darken a
  colour toward the background, which a nearest-RGB rule misreads (half-covered yellow is nearer
  orange); the blend reads them as the colour they are."""
  pixels = frames_thw3[mask_thw].astype(np.float32) - _BACKGROUND  # [P, 3]
  directions = np.array(list(palette.values()), np.float32) - _BACKGROUND  # [K, 3]
  alpha = np.clip(pixels @ directions.T / np.sum(directions**2, axis=-1), 0.0, 1.0)  # [P, K]
  return np.linalg.norm(pixels[:, None, :] - alpha[..., None] * directions[None], axis=-1)


def predict_colour(frames_thw3: np.ndarray, mask_thw: np.ndarray, palette=toy_spec.COLOURS) -> str:
  """The palette colour that best explains the foreground as that colour blended over the
  background: the smallest median blend residual. 'none' without foreground. `palette`: {name: rgb}."""
  if not mask_thw.any():
    return NONE
  residual = _blend_residuals(frames_thw3, mask_thw, palette)
  return tuple(palette)[int(np.argmin(np.median(residual, axis=0)))]


def pixel_colours(frames_thw3: np.ndarray, mask_thw: np.ndarray, palette: dict) -> np.ndarray:
  """int [T, H, W]: the index in `palette` ({name: rgb}) of the colour whose blend best explains
  each masked pixel, -1 off the mask. Tells two objects of different colours apart."""
  labels = np.full(mask_thw.shape, -1, np.int64)
  if mask_thw.any():
    labels[mask_thw] = np.argmin(_blend_residuals(frames_thw3, mask_thw, palette), axis=-1)
  return labels


def frame_colours(frames_thw3: np.ndarray) -> list[str]:
  """The palette colour each frame shows ('none' for a frame without foreground)."""
  frames_thw3 = np.asarray(frames_thw3)
  return [predict_colour(frame[None], mask[None]) for frame, mask in zip(frames_thw3, foreground_mask(frames_thw3))]


def predict_shape(mask_thw: np.ndarray) -> str:
  """Circle, square or triangle: the shape whose template, placed at each frame's foreground
  centroid and sized to its area, overlaps the foreground best (IoU), by majority over frames.

  Fitting whole templates is robust to the ragged edges and stray pixels of generated frames,
  which upset bounding-box ratios.
  """
  votes = []
  height, width = mask_thw.shape[1:]
  for mask in mask_thw:
    ys, xs = np.nonzero(mask)
    if ys.size < 4:
      continue
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    best, best_iou = NONE, -1.0
    for shape in toy_spec.SHAPES:
      r = np.sqrt(ys.size / toy_spec.SHAPE_AREA[shape])
      template = toy_spec.shape_masks(shape, cx, cy - toy_spec.SHAPE_CENTROID_OFFSET[shape] * r, r, height, width)[0]
      iou = np.sum(template & mask) / np.sum(template | mask)
      if iou > best_iou:
        best, best_iou = shape, iou
    votes.append(best)
  if not votes:
    return NONE
  names, counts = np.unique(votes, return_counts=True)
  return str(names[np.argmax(counts)])


def predict_direction(mask_thw: np.ndarray) -> str:
  """Direction of the foreground centroid's least-squares track, or 'none' if it barely moves."""
  num_frames, height, width = mask_thw.shape
  ts, xs, ys = [], [], []
  for t in range(num_frames):
    y, x = np.nonzero(mask_thw[t])
    if x.size:
      ts.append(t)
      xs.append(x.mean())
      ys.append(y.mean())
  if len(ts) < 2:
    return NONE
  ts = np.asarray(ts, np.float64)
  span = ts[-1] - ts[0]
  # Slope (pixels per frame) times the clip length, over the frame size: resolution-independent.
  dx = np.polyfit(ts, xs, 1)[0] * span / width
  dy = np.polyfit(ts, ys, 1)[0] * span / height
  if max(abs(dx), abs(dy)) < _MIN_DISPLACEMENT:
    return NONE
  if abs(dx) >= abs(dy):
    return "right" if dx > 0 else "left"
  return "down" if dy > 0 else "up"
