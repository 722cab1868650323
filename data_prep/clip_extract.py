"""One source file -> training clips: decode, resample to a fixed fps, cut at scene changes,
split into bucket lengths, resize + centre-crop, drop static clips.

Streams the file: clips go to a callback as they are made and at most one bucket-length clip
of resized frames is held, so a long or high-resolution source costs the memory of one output
clip, not of the source.
"""
import dataclasses
import itertools
from collections import Counter
from typing import Callable, Iterable, Iterator

import numpy as np

from data_prep.bucket_table import BucketTable
from vdit.media import video_reader

_THUMB = 32  # scene-cut and motion scores compare frames at about this many pixels per side


@dataclasses.dataclass
class Clip:
  frames: np.ndarray  # uint8 [T, H, W, 3]
  start_time: float  # seconds into the source
  motion: float  # mean absolute frame-to-frame change of the thumbnails, in [0, 1]
  kind: str  # "video" | "image"
  source_size: tuple[int, int]  # the source's display (height, width)


@dataclasses.dataclass
class Extraction:
  num_clips: int
  source_size: tuple[int, int] | None  # display (height, width)
  dropped: Counter  # reason -> number of segments or files dropped
  kind: str = "video"


def thumbnail(frame: np.ndarray) -> np.ndarray:
  """RGB block means, at most about _THUMB x _THUMB, float32 in [0, 1] (colour kept: a red
  shape on a green ground can have the same grey level)."""
  bh, bw = max(1, frame.shape[0] // _THUMB), max(1, frame.shape[1] // _THUMB)
  h, w = frame.shape[0] // bh * bh, frame.shape[1] // bw * bw
  blocks = frame[:h, :w].astype(np.float32).reshape(h // bh, bh, w // bw, bw, 3)
  return blocks.mean(axis=(1, 3)) / 255.0


def resample(frames: Iterable[tuple[float, np.ndarray]],
             fps: float) -> Iterator[tuple[float, int, np.ndarray]]:
  """Sample-and-hold at `fps`: yields (output time, source index, source frame).

  Output frame k shows the last source frame whose timestamp is <= t0 + k / fps, so variable
  frame rates come out evenly spaced; the last frame is held for the median source interval.
  """
  step = 1.0 / fps
  t0 = prev = None
  k, intervals = 0, []
  for index, (time, frame) in enumerate(frames):
    if prev is None:
      t0 = time
    elif time > prev[0]:
      intervals.append(time - prev[0])
      while t0 + k * step < time - 1e-9:
        yield t0 + k * step, index - 1, prev[1]
        k += 1
    prev = (time, frame)
  if prev is None:
    return
  end = prev[0] + (float(np.median(intervals)) if intervals else step)
  while t0 + k * step < end - 1e-9:
    yield t0 + k * step, index, prev[1]
    k += 1


def extract(path: str, table: BucketTable, *, fps: float, scene_threshold: float,
            min_motion: float, max_clips_per_segment: int,
            on_clip: Callable[[Clip], None]) -> Extraction:
  """Passes each clip of one file to `on_clip` (a still or a 1-frame video gives one 1-frame
  clip); returns what was kept and dropped.

  Raises:
    video_reader.VideoReadError: the file cannot be read (its `reason` says why).
  """
  source = video_reader.iter_frames(path)
  first = next(source)
  second = next(source, None)
  height, width = first[1].shape[:2]
  size, reason = table.choose_size(height, width)
  if size is None:
    return Extraction(0, (height, width), Counter({reason: 1}))
  if second is None:
    frame = video_reader.resize_center_crop(first[1], *size)
    on_clip(Clip(frame[None], 0.0, 0.0, "image", (height, width)))
    return Extraction(1, (height, width), Counter(), "image")

  longest = table.frame_counts[-1]
  kept, dropped = 0, Counter()
  segment, segment_clips = [], 0  # [(time, frame, thumb)]; clips taken from this segment

  def emit(frames_out):
    nonlocal kept
    motion = float(np.mean([np.abs(a[2] - b[2]).mean()
                            for a, b in zip(frames_out, frames_out[1:])]))
    if motion < min_motion:
      dropped["static"] += 1
      return
    on_clip(Clip(np.stack([f[1] for f in frames_out]), frames_out[0][0], motion, "video",
                 (height, width)))
    kept += 1

  def close_segment():
    nonlocal segment, segment_clips
    start = 0
    for length in table.split_lengths(len(segment)):
      if segment_clips >= max_clips_per_segment:
        break
      emit(segment[start:start + length])
      start += length
      segment_clips += 1
    if segment_clips == 0:
      dropped["too_short"] += 1
    segment, segment_clips = [], 0

  shown_index, shown = -1, None
  for time, index, source_frame in resample(itertools.chain([first, second], source), fps):
    if index != shown_index:  # resize each source frame once, however often it is held
      frame = video_reader.resize_center_crop(source_frame, *size)
      shown_index, shown = index, (frame, thumbnail(frame))
    if segment and np.abs(shown[1] - segment[-1][2]).mean() > scene_threshold:
      close_segment()
    segment.append((time, shown[0], shown[1]))
    if len(segment) == longest:
      if segment_clips < max_clips_per_segment:
        emit(segment)
      segment_clips += 1
      segment = []
  close_segment()
  return Extraction(kept, (height, width), dropped)
