"""A rule-based prompt expander for the toy grammar: rewrites short or loose prompts ("red ball
going left", "Blue box, upwards!") into the canonical captions the toy model was trained on
("a red circle moving left"), the way Sora rewrites user prompts into its training captions.
"""
import re

from vdit.toy import spec as toy_spec

_SYNONYMS = {
    "ball": "circle", "disc": "circle", "disk": "circle", "dot": "circle", "round": "circle",
    "box": "square", "block": "square", "cube": "square", "rectangle": "square",
    "pyramid": "triangle", "wedge": "triangle",
    "leftward": "left", "leftwards": "left", "west": "left",
    "rightward": "right", "rightwards": "right", "east": "right",
    "upward": "up", "upwards": "up", "rising": "up", "north": "up",
    "downward": "down", "downwards": "down", "falling": "down", "south": "down",
    "purple": "magenta", "pink": "magenta", "teal": "cyan", "aqua": "cyan", "gold": "yellow",
}


def expand(prompt: str) -> str:
  """The canonical toy caption when the prompt names a colour, a shape and a direction; the
  prompt unchanged otherwise."""
  words = [_SYNONYMS.get(w, w) for w in re.findall(r"[a-z]+", prompt.lower())]
  found = {}
  for word in words:
    for kind, vocabulary in (("colour", toy_spec.COLOURS), ("shape", toy_spec.SHAPES),
                             ("direction", toy_spec.DIRECTIONS)):
      if word in vocabulary:
        found.setdefault(kind, word)
  if len(found) < 3:
    return prompt
  return toy_spec.caption(found["colour"], found["shape"], found["direction"])
