"""The toy world's vocabulary: colours, shapes, directions and the caption grammar.

Shared by the generator (`data_prep.toy_world`) and the judge (`vdit.eval.toy`), so a caption
written by one is always parsed the same way by the other.
"""
import re

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
SHAPES = ("circle", "square", "triangle")
# Unit motion per direction in image coordinates (x to the right, y downwards).
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUND = (20, 20, 20)

_CAPTION_RE = re.compile(r"^\s*an? (\w+) (\w+) moving (\w+)\s*\.?\s*$")


def caption(colour: str, shape: str, direction: str) -> str:
  """The canonical caption, e.g. 'a red circle moving left', 'an orange square moving up'."""
  article = "an" if colour[0] in "aeiou" else "a"
  return f"{article} {colour} {shape} moving {direction}"


def parse_caption(text: str):
  """Returns (colour, shape, direction) for a toy caption, or None if it is not one."""
  match = _CAPTION_RE.match(text.lower())
  if not match:
    return None
  colour, shape, direction = match.groups()
  if colour not in COLOURS or shape not in SHAPES or direction not in DIRECTIONS:
    return None
  return colour, shape, direction


def all_combinations():
  return [(c, s, d) for c in COLOURS for s in SHAPES for d in DIRECTIONS]
