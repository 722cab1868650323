"""Multi-process training on one CPU box (2 processes x 4 devices, gloo collectives) matches one
process with 8 devices, and its checkpoint resumes on 1 process x 8 devices laid out as another
mesh: same global batches (the data position carries over), same losses."""
import os
import socket
import subprocess
import sys

import numpy as np
from tests.helpers import REPO, cli, cli_env, make_toy_data
from vdit import jsonl_writer

# Constant learning rate after warmup, so runs stopping at different num_steps share a schedule.
_ARGS = ["--config.train.checkpoint_every=3", "--config.optim.end_lr_fraction=1.0"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


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
  port = _free_port()
  procs = []
  for index in range(2):
    env = cli_env()
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=4", VDIT_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               VDIT_NUM_PROCESSES="2", VDIT_PROCESS_ID=str(index))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "vdit.main", "--config=tests/tiny.py:" + data, f"--workdir={multi}", *_ARGS,
         "--config.train.num_steps=6"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
  for proc in procs:
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
  # Tolerance: gloo all-reduces sum in a different order than one process's reduction.
  np.testing.assert_allclose(_losses(multi), expected[:6], rtol=1e-4)
  # The data position is stored once, not per process, so any topology can resume it.
  assert os.path.isdir(os.path.join(multi, "checkpoints", "6", "data_state"))

  # Resume the 2-process (data=8) checkpoint on 1 process x 8 devices as data=2, fsdp=2, tensor=2.
  _train(data, multi, 9, "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2")
  got = _losses(multi)
  assert len(got) == 9  # no step repeated or skipped
  np.testing.assert_allclose(got[6:], expected[6:], rtol=1e-4)
