"""Multi-process training on one CPU box (2 processes x 4 devices, gloo collectives) matches one
process with 8 devices, and its checkpoint resumes on 1 process x 8 devices laid out as another
mesh: same global batches (the data position carries over), same losses."""
import os

import numpy as np
import pytest

from tests.helpers import cli, make_toy_data, run_processes
from vdit.training import jsonl_writer

pytestmark = pytest.mark.slow  # trains three times, once as two processes

# Constant learning rate after warmup, so runs stopping at different num_steps share a schedule.
_ARGS = ["--config.train.checkpoint_every=3", "--config.optim.end_lr_fraction=1.0"]


def _losses(workdir):
  return [r["loss"] for r in jsonl_writer.read(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]


def _train(data, workdir, num_steps, *extra):
  result = cli("vdit.main", "--config=tests/tiny.py:" + data, f"--workdir={workdir}", *_ARGS,
               f"--config.train.num_steps={num_steps}", *extra)
  assert result.returncode == 0, result.stderr[-3000:]


def test_two_processes_match_one_process_and_resume_on_another_topology(tmp_path):
  data = make_toy_data(tmp_path / "data")
  single = str(tmp_path / "single")
  _train(data, single, 9)
  expected = _losses(single)
  assert len(expected) == 9

  multi = str(tmp_path / "multi")
  run_processes("vdit.main", "--config=tests/tiny.py:" + data, f"--workdir={multi}", *_ARGS,
                "--config.train.num_steps=6")
  # Tolerance: gloo all-reduces sum in a different order than one process's reduction.
  np.testing.assert_allclose(_losses(multi), expected[:6], rtol=1e-4)
  # The data position is stored once, not per process, so any topology can resume it.
  assert os.path.isdir(os.path.join(multi, "checkpoints", "6", "data_state"))

  # Resume the 2-process (data=8) checkpoint on 1 process x 8 devices as data=2, fsdp=2, tensor=2.
  _train(data, multi, 9, "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2")
  got = _losses(multi)
  assert len(got) == 9  # no step repeated or skipped
  np.testing.assert_allclose(got[6:], expected[6:], rtol=1e-4)
