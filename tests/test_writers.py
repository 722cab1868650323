"""Training metric writers: TensorBoard events without TensorFlow, read back by TensorBoard's own loader."""
import os
import subprocess
import sys

import numpy as np
from tensorboard.backend.event_processing import event_accumulator

from tests.helpers import REPO
from vdit.training import writers


def test_tensorboard_events_hold_scalars_and_images(tmp_path):
  writer = writers.create(str(tmp_path), lead=True)
  writer.write_scalars(3, {"loss": 0.25, "lr": 1e-3})
  writer.write_images(3, {"samples": np.full((1, 8, 12, 3), 200, np.uint8)})
  writer.close()
  events = event_accumulator.EventAccumulator(str(tmp_path))
  events.Reload()
  assert [(e.step, e.value) for e in events.Scalars("loss")] == [(3, 0.25)]
  image, = events.Images("samples")
  assert (image.step, image.height, image.width) == (3, 8, 12)
  # metrics.jsonl gets the scalars too (process 0's third writer).
  assert '"loss": 0.25' in (tmp_path / "metrics.jsonl").read_text()


def test_training_imports_no_tensorflow(tmp_path):
  """clu's writer imports TensorFlow (~4 s of every run's start-up); a local run never needs it."""
  code = ("import sys, vdit.training.dit_trainer, vdit.training.vae_trainer\n"
          "from vdit.training import writers\n"
          f"w = writers.create({str(tmp_path)!r}, lead=True); w.write_scalars(1, {{'loss': 1.0}}); w.close()\n"
          "print('tensorflow' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
  assert result.stdout.strip() == "False", result.stderr[-2000:]
