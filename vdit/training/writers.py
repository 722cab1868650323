"""Where training metrics go: TensorBoard event files, the log, and WORKDIR/metrics.jsonl (process 0).

TensorBoard events of a local workdir are written with the tensorboard package's record framing and
protos, which need no TensorFlow: clu's writer imports TensorFlow, ~4 s of every run's start-up.
A remote workdir (gs://...) keeps clu's writer, whose TensorFlow file system reaches the bucket.
Writers take clu's method names, so clu's writers and these mix.
"""
import io
import os
import socket
import time

import numpy as np
from absl import logging

from vdit.core import workdir_files
from vdit.training.jsonl_writer import JsonlWriter


class LoggingWriter:
  """Scalars to the log, one line per write."""

  def write_scalars(self, step, scalars):
    logging.info("[%d] %s", step, ", ".join(f"{k}={float(v):.6g}" for k, v in scalars.items()))

  def write_images(self, step, images):
    logging.info("[%d] images %s", step, {k: tuple(np.shape(v)) for k, v in images.items()})

  def flush(self):
    pass

  def close(self):
    pass


class TensorBoardWriter:
  """Scalars and images as TensorBoard summaries in a new events file under `logdir` (a local
  path), framed by tensorboard's RecordWriter. (tensorboard's EventFileWriter would import
  TensorFlow, when installed, for its file system.)"""

  def __init__(self, logdir: str):
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.vdit"
    self._records = RecordWriter(open(os.path.join(logdir, name), "wb"))
    self._records.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
    self._records.flush()

  def _write(self, step, values):
    from tensorboard.compat.proto import event_pb2, summary_pb2
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, **value) for tag, value in values])
    self._records.write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary).SerializeToString())

  def write_scalars(self, step, scalars):
    self._write(step, [(k, {"simple_value": float(v)}) for k, v in scalars.items()])

  def write_images(self, step, images):
    """images: name -> [N, H, W, C] uint8 (C 1, 3 or 4); image i of N > 1 is tagged name/i."""
    from PIL import Image
    from tensorboard.compat.proto import summary_pb2
    values = []
    for name, batch in images.items():
      for i, image in enumerate(np.asarray(batch)):
        png = io.BytesIO()
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(png, format="PNG")
        encoded = summary_pb2.Summary.Image(height=image.shape[0], width=image.shape[1], colorspace=image.shape[-1],
                                            encoded_image_string=png.getvalue())
        values.append((name if len(batch) == 1 else f"{name}/{i}", {"image": encoded}))
    self._write(step, values)

  def flush(self):
    self._records.flush()

  def close(self):
    if not self._records.closed:
      self._records.close()


class MultiWriter:

  def __init__(self, writers):
    self._writers = list(writers)

  def write_scalars(self, step, scalars):
    for w in self._writers:
      w.write_scalars(step, scalars)

  def write_images(self, step, images):
    for w in self._writers:
      w.write_images(step, images)

  def flush(self):
    for w in self._writers:
      w.flush()

  def close(self):
    for w in self._writers:
      w.close()


def create(workdir: str, lead: bool):
  """The log on every process; process 0 (`lead`) also writes TensorBoard events and metrics.jsonl."""
  if not lead:
    return LoggingWriter()
  if "://" in workdir:
    from clu import metric_writers  # imports TensorFlow, whose gfile writes to gs:// and other buckets
    tensorboard = metric_writers.SummaryWriter(workdir)
  else:
    tensorboard = TensorBoardWriter(workdir)
  return MultiWriter([LoggingWriter(), tensorboard, JsonlWriter(os.path.join(workdir, workdir_files.METRICS_FILE))])


class Progress:
  """Every `every_steps` steps (and the last): steps/s since the previous report and uptime as
  scalars (clu's ReportProgress names), and a log line with the ETA. The first call only starts
  the clock."""

  def __init__(self, num_steps: int, writer, every_steps: int):
    self._num_steps, self._writer, self._every = num_steps, writer, every_steps
    self._start = time.monotonic()
    self._previous = None

  def __call__(self, step: int):
    now = time.monotonic()
    if self._previous is None:
      self._previous = (step, now)
      return
    if step == self._previous[0] or (step % self._every and step != self._num_steps):
      return
    steps_per_sec = (step - self._previous[0]) / max(now - self._previous[1], 1e-9)
    self._previous = (step, now)
    self._writer.write_scalars(step, {"steps_per_sec": steps_per_sec})
    self._writer.write_scalars(step, {"uptime": now - self._start})
    eta = (self._num_steps - step) / steps_per_sec
    logging.info("%.1f steps/s, %.1f%% (%d/%d), ETA %dm%02ds", steps_per_sec, 100 * step / self._num_steps, step,
                 self._num_steps, eta // 60, eta % 60)
