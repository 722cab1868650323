"""Multi-process training on one CPU box (2 processes x 4 devices, gloo collectives) matches one
process with 8 devices: same global batches, same losses."""
import os
import socket
import subprocess
import sys

import numpy as np
from tests.helpers import REPO, cli, cli_env, make_toy_data
from vdit import jsonl_writer

_ARGS = ["--config.train.num_steps=6", "--config.train.checkpoint_every=3"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _losses(workdir):
  return [r["loss"] for r in jsonl_writer.read(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]


def test_two_processes_match_one_process(tmp_path):
  data = make_toy_data(tmp_path / "data")
  single = str(tmp_path / "single")
  result = cli("vdit.main", "--config=tests/tiny.py:" + data, f"--workdir={single}", *_ARGS)
  assert result.returncode == 0, result.stderr[-3000:]

  multi = str(tmp_path / "multi")
  port = _free_port()
  procs = []
  for index in range(2):
    env = cli_env()
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=4", VDIT_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               VDIT_NUM_PROCESSES="2", VDIT_PROCESS_ID=str(index))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "vdit.main", "--config=tests/tiny.py:" + data, f"--workdir={multi}", *_ARGS],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
  for proc in procs:
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]

  expected, got = _losses(single), _losses(multi)
  assert len(expected) == len(got) == 6
  # Tolerance: gloo all-reduces sum in a different order than one process's reduction.
  np.testing.assert_allclose(got, expected, rtol=1e-4)
  # Both processes took part in the checkpoint: one data-iterator file each.
  data_dir = os.path.join(multi, "checkpoints", "6", "data")
  assert sorted(f for f in os.listdir(data_dir) if f.endswith(".json")) == ["process_0-of-2.json",
                                                                             "process_1-of-2.json"]
