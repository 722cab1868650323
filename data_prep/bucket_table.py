"""The ingest bucket table: which (frames, height, width) a source file's clips become.

A source keeps its aspect ratio as closely as the table allows: its frame size is the table
entry of nearest aspect ratio (log scale), the largest such entry that needs no upscaling (else
the smallest), then resized to cover it and centre-cropped. Clip lengths come from the table's
frame counts; stills become 1-frame clips.
"""
import dataclasses
import math
import re
from vdit.core.errors import UserError

_SIZE_RE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")


class BucketTableError(UserError):
  """The configured bucket table is malformed."""


@dataclasses.dataclass(frozen=True)
class BucketTable:
  sizes: tuple[tuple[int, int], ...]  # (height, width)
  frame_counts: tuple[int, ...]  # video clip lengths, ascending
  max_upscale: float  # a source needing more than this to cover a size is too small
  max_crop_fraction: float  # a source losing more of its area than this to the crop is dropped

  @classmethod
  def from_config(cls, ingest) -> "BucketTable":
    """From config.ingest (a ConfigDict or a plain dict of its values)."""
    sizes = []
    for text in ingest["sizes"]:
      match = _SIZE_RE.match(str(text))
      if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise BucketTableError(f"config.ingest.sizes entry {text!r} is not 'HEIGHTxWIDTH' with "
                               "positive integers (e.g. '256x448').")
      sizes.append((int(match.group(1)), int(match.group(2))))
    counts = sorted({int(n) for n in ingest["frame_counts"]})
    if not sizes or not counts or counts[0] < 2:
      raise BucketTableError(
          f"config.ingest needs at least one size and frame counts >= 2 (got sizes="
          f"{list(ingest['sizes'])}, frame_counts={list(ingest['frame_counts'])}); stills are always "
          "1-frame clips.")
    if ingest["max_upscale"] < 1 or not 0 <= ingest["max_crop_fraction"] < 1:
      raise BucketTableError("config.ingest.max_upscale must be >= 1 and max_crop_fraction in "
                             "[0, 1).")
    return cls(tuple(sizes), tuple(counts), float(ingest["max_upscale"]),
               float(ingest["max_crop_fraction"]))

  def choose_size(self, height: int, width: int) -> tuple[tuple[int, int] | None, str]:
    """The (height, width) for a source of this display size, or (None, drop reason)."""
    if height < 1 or width < 1:
      return None, "too_small"
    aspect = math.log(width / height)
    best = min(abs(aspect - math.log(w / h)) for h, w in self.sizes)
    matching = sorted((h * w, (h, w)) for h, w in self.sizes
                      if abs(aspect - math.log(w / h)) <= best + 1e-9)
    fits = [size for _, size in matching if max(size[0] / height, size[1] / width) <= 1]
    size = fits[-1] if fits else matching[0][1]
    if max(size[0] / height, size[1] / width) > self.max_upscale:
      return None, "too_small"
    kept = math.exp(-best)  # fraction of the source area that survives the centre crop
    if 1 - kept > self.max_crop_fraction:
      return None, "extreme_aspect_ratio"
    return size, ""

  def split_lengths(self, num_frames: int) -> list[int]:
    """Clip lengths covering a segment greedily, longest first (leftover frames are unused)."""
    lengths = []
    while True:
      fitting = [n for n in self.frame_counts if n <= num_frames]
      if not fitting:
        return lengths
      lengths.append(fitting[-1])
      num_frames -= fitting[-1]
