"""The toy world's vocabulary: colours, shapes, directions and the caption grammar.

Shared by the generator (`data_prep.toy_world`) and the judge (`vdit.toy.judge`), so a caption
written by one is always parsed the same way by the other.
"""
import re

import numpy as np

# Standard colour names with saturated RGB values, far apart so a judge can tell them apart.
COLOURS = {
    "red": (230, 25, 25),
    "green": (25, 200, 40),
    "blue": (30, 60, 240),
    "yellow": (240, 230, 30),
    "magenta": (230, 30, 230),
    "cyan": (30, 230, 230),
    "white": (245, 245, 245),
    "orange": (250, 140, 20),
}
# Colours the base world never shows: concepts for fine-tuning to teach (`data_prep.toy_world
# --colours=purple`). Far from every base colour and the background.
NEW_COLOURS = {"purple": (120, 20, 160)}
SHAPES = ("circle", "square", "triangle")
# Unit motion per direction in image coordinates (x to the right, y downwards).
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUND = (20, 20, 20)
SQUARE_HALF = 0.9  # square half-side / r: about the circle's area

_CAPTION_RE = re.compile(r"^\s*an? (\w+) (\w+) moving (\w+)\s*\.?\s*$")
_TWO_CAPTION_RE = re.compile(r"^\s*an? (\w+) (\w+) moving (\w+) and an? (\w+) (\w+) moving (\w+)\s*\.?\s*$")


def caption(colour: str, shape: str, direction: str) -> str:
  """The canonical caption, e.g. 'a red circle moving left', 'an orange square moving up'."""
  article = "an" if colour[0] in "aeiou" else "a"
  return f"{article} {colour} {shape} moving {direction}"


def parse_caption(text: str):
  """Returns (colour, shape, direction) for a toy caption, or None if it is not one."""
  match = _CAPTION_RE.match(text.lower())
  if not match:
    return None
  return known_object(*match.groups())


def objects_caption(objects) -> str:
  """The caption of one or two objects, e.g. 'a red circle moving left and a blue square moving up'."""
  return " and ".join(caption(*o) for o in objects)


def parse_objects(text: str):
  """Returns [(colour, shape, direction)] for a one- or two-object toy caption, or None if it is
  not one. Two objects must differ in colour: the colour is how the judge tells them apart."""
  one = parse_caption(text)
  if one is not None:
    return [one]
  match = _TWO_CAPTION_RE.match(text.lower())
  if not match:
    return None
  objects = [known_object(*match.groups()[:3]), known_object(*match.groups()[3:])]
  if None in objects or objects[0][0] == objects[1][0]:
    return None
  return objects


def pair_key(objects) -> tuple:
  """A pair's identity whatever order its caption names the two objects in."""
  return tuple(sorted(map(tuple, objects)))


def known_object(colour, shape, direction):
  """(colour, shape, direction) if each is in the vocabulary (new colours included), else None."""
  if colour not in COLOURS and colour not in NEW_COLOURS or shape not in SHAPES or direction not in DIRECTIONS:
    return None
  return colour, shape, direction


def all_combinations(colours=tuple(COLOURS)):
  return [(c, s, d) for c in colours for s in SHAPES for d in DIRECTIONS]


def rgb(colour: str) -> tuple[int, int, int]:
  return COLOURS[colour] if colour in COLOURS else NEW_COLOURS[colour]


def palette(colour: str) -> dict:
  """The colours a clip of `colour` is told apart from: the base world's, plus the new colour
  itself for a new-concept clip (so the base world is judged exactly as before)."""
  return COLOURS if colour in COLOURS else {**COLOURS, colour: NEW_COLOURS[colour]}


def shape_masks(shape: str, cx, cy, r: float, height: int, width: int) -> np.ndarray:
  """Filled-shape masks bool [T, H, W] for centres cx, cy [T] (pixel centres at +0.5); r is the
  circle's radius, the square's half-side / SQUARE_HALF, the triangle's half-height."""
  cx, cy = np.atleast_1d(np.asarray(cx, np.float32)), np.atleast_1d(np.asarray(cy, np.float32))
  ys = np.arange(height, dtype=np.float32)[None, :, None] + 0.5
  xs = np.arange(width, dtype=np.float32)[None, None, :] + 0.5
  dx = xs - cx[:, None, None]
  dy = ys - cy[:, None, None]
  if shape == "circle":
    return dx * dx + dy * dy <= r * r
  if shape == "square":
    half = SQUARE_HALF * r
    return (np.abs(dx) <= half) & (np.abs(dy) <= half)
  if shape == "triangle":
    # Upward isosceles triangle filling the 2r x 2r box (apex (0, -r), base y = r, half-width
    # r) so it is as visible as the other shapes at 32 px.
    return (dy <= r) & (dy >= 2 * np.abs(dx) - r)
  raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")


# Area of each shape as a multiple of r^2, and its centroid's offset below the centre in units of r.
SHAPE_AREA = {"circle": float(np.pi), "square": 4 * SQUARE_HALF**2, "triangle": 2.0}
SHAPE_CENTROID_OFFSET = {"circle": 0.0, "square": 0.0, "triangle": 1.0 / 3.0}
