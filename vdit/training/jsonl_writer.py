"""A clu MetricWriter that appends scalars to WORKDIR/metrics.jsonl (one object per write).

Plain JSON lines are what scripts and tests read; TensorBoard and the log get the same values
through clu's default writer.
"""
import json
import os

from clu import metric_writers


class JsonlWriter(metric_writers.MetricWriter):

  def __init__(self, path: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self._file = open(path, "a", encoding="utf-8", buffering=1)  # line-buffered: survives a kill

  def write_scalars(self, step, scalars):
    record = {"step": int(step)}
    record.update({k: float(v) for k, v in scalars.items()})
    self._file.write(json.dumps(record) + "\n")

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def read(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
