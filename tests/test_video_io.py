"""Tests for vdit.media.video_io: round trips, contact sheets, atomic writes and read errors."""
import os

import numpy as np
import pytest

from vdit.toy import spec as toy_spec
from vdit.media import video_io
from vdit.media import video_reader


def _toy_clip(num_frames=8, height=32, width=32):
  """Two flat blocks moving on BACKGROUND: the kind of content the toy world produces."""
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  frames[:] = toy_spec.BACKGROUND
  for t in range(num_frames):
    frames[t, 4 + t:14 + t, 6:16] = toy_spec.COLOURS["red"]
    frames[t, 18:28, 10 + t:20 + t] = toy_spec.COLOURS["cyan"]
  return frames


def test_mp4_round_trip_shape_and_pixels(tmp_path):
  frames = _toy_clip()
  path = tmp_path / "clip.mp4"
  video_io.write_mp4(path, frames, fps=8, scale=4)
  back = video_reader.read_video(path)
  assert back.shape == (8, 128, 128, 3) and back.dtype == np.uint8
  expected = frames.repeat(4, axis=1).repeat(4, axis=2)
  err = np.abs(back.astype(np.int32) - expected)
  # Lossy H.264 (crf 18, 4:2:0): small on average; flat interiors are near exact.
  assert err.mean() < 3.0
  for t in (0, 7):
    assert err[t, 4 * (9 + t), 4 * 11].max() <= 8  # red block centre
    assert err[t, 4 * 23, 4 * (15 + t)].max() <= 8  # cyan block centre
    assert err[t, 2, 2].max() <= 8  # background corner


def test_mp4_pads_odd_sizes_to_even(tmp_path):
  path = tmp_path / "odd.mp4"
  video_io.write_mp4(path, _toy_clip(num_frames=3, height=31, width=29), fps=4)
  assert video_reader.read_video(path).shape == (3, 32, 30, 3)


def test_mp4_uses_h264_when_available():
  assert video_io.mp4_codec() in ("libx264", "mpeg4")


def test_gif_round_trip_is_exact_and_keeps_repeated_frames(tmp_path):
  frames = _toy_clip(num_frames=6)
  frames[3:] = frames[2]  # Pillow merges identical frames; the reader must expand them back
  path = tmp_path / "clip.gif"
  video_io.write_gif(path, frames, fps=12, scale=2)
  back = video_reader.read_video(path)
  # A handful of flat colours fits the GIF palette, so the tolerance is zero.
  np.testing.assert_array_equal(back, frames.repeat(2, axis=1).repeat(2, axis=2))


def test_png_written(tmp_path):
  path = tmp_path / "sheet.png"
  video_io.write_png(path, _toy_clip()[0])
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_contact_sheet_shape_and_layout():
  clips = [_toy_clip(num_frames=8), _toy_clip(num_frames=5)]
  sheet = video_io.contact_sheet(clips, max_frames=4, pad=2)
  assert sheet.shape == (2 * 32 + 3 * 2, 4 * 32 + 5 * 2, 3) and sheet.dtype == np.uint8
  np.testing.assert_array_equal(sheet[2:34, 2:34], clips[0][0])  # row 0, column 0
  np.testing.assert_array_equal(sheet[36:68, 104:136], clips[1][4])  # row 1 ends on its last frame


def test_writes_leave_no_temp_files(tmp_path):
  frames = _toy_clip(num_frames=3)
  video_io.write_mp4(tmp_path / "a.mp4", frames, fps=4)
  video_io.write_gif(tmp_path / "a.gif", frames, fps=4)
  video_io.write_png(tmp_path / "a.png", frames[0])
  assert sorted(os.listdir(tmp_path)) == ["a.gif", "a.mp4", "a.png"]


def test_crash_mid_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
  path = tmp_path / "clip.mp4"
  path.write_bytes(b"old")
  real_frame = video_io.av.VideoFrame
  calls = []

  class CrashingFrame:
    @staticmethod
    def from_ndarray(array, format):  # pylint: disable=redefined-builtin
      calls.append(1)
      if len(calls) > 2:
        raise RuntimeError("simulated crash")
      return real_frame.from_ndarray(array, format=format)

  monkeypatch.setattr(video_io.av, "VideoFrame", CrashingFrame)
  with pytest.raises(RuntimeError, match="simulated crash"):
    video_io.write_mp4(path, _toy_clip(), fps=8)
  assert os.listdir(tmp_path) == ["clip.mp4"]
  assert path.read_bytes() == b"old"


@pytest.mark.parametrize("name", ["bad.mp4", "bad.gif", "bad.webm"])
def test_corrupt_file_raises_clear_error(tmp_path, name):
  path = tmp_path / name
  path.write_bytes((b"GIF89a" if name.endswith(".gif") else b"") + b"not a video" * 50)
  with pytest.raises(video_reader.VideoReadError, match=name):
    video_reader.read_video(path)


def test_truncated_mp4_raises_clear_error(tmp_path):
  path = tmp_path / "cut.mp4"
  video_io.write_mp4(path, _toy_clip(), fps=8, scale=4)
  path.write_bytes(path.read_bytes()[:400])
  with pytest.raises(video_reader.VideoReadError, match="cut.mp4"):
    video_reader.read_video(path)


def test_missing_file_raises_value_error(tmp_path):
  with pytest.raises(ValueError, match="missing.mp4"):
    video_reader.read_video(tmp_path / "missing.mp4")


def test_rejects_non_uint8_frames(tmp_path):
  with pytest.raises(ValueError, match="uint8"):
    video_io.write_mp4(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32), fps=4)
