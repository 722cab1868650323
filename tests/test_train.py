"""Training end to end: loss falls, exact resume after SIGKILL, SIGTERM checkpoint, bad input.

Compiling the train step costs far more than running it, so these tests reuse the session's 60-step
run of tests/helpers.py trained_tiny: the loss test reads it, and one job with its flags (its
compiled program) is killed with SIGKILL after its checkpoint at step 4, rerun, and stopped with
SIGTERM a few steps later; every loss of that job must equal trained_tiny's, the uninterrupted run.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from tests.helpers import REPO, cli, cli_env, make_toy_data, trained_tiny
from tests.tiny import tiny_config
from vdit.training import jsonl_writer

STEPS = 60  # trained_tiny's


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
  return make_toy_data(tmp_path_factory.mktemp("toy_data"))


def _losses(workdir):
  """The logged loss of each step."""
  losses = {}
  for record in jsonl_writer.read(os.path.join(workdir, "metrics.jsonl")):
    if "loss" in record:
      losses[record["step"]] = record["loss"]
  return losses


@pytest.mark.slow
def test_loss_falls_on_toy_data(tmp_path_factory):
  _, workdir = trained_tiny(tmp_path_factory)  # one loss record per step
  losses = _losses(workdir)
  assert sorted(losses) == list(range(1, STEPS + 1))
  first = np.mean([losses[s] for s in range(1, 11)])
  last = np.mean([losses[s] for s in range(51, 61)])
  assert last < 0.7 * first, (first, last)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(STEPS)))


def _train_args(workdir, data, checkpoint_every):
  """trained_tiny's command (how often it saves changes nothing it computes)."""
  return ["--config=tests/tiny.py:" + data, f"--workdir={workdir}", f"--config.train.num_steps={STEPS}",
          f"--config.train.checkpoint_every={checkpoint_every}", "--config.optim.peak_lr=2e-3",
          "--config.model.frame_conditioning=True", "--config.text.depth=1"]


def _launch(args, log):
  """`python -m vdit.main` in the background; stderr goes to a file the test can read meanwhile."""
  with open(log, "w") as f:
    return subprocess.Popen([sys.executable, "-m", "vdit.main", *args], cwd=REPO, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=f)


def _wait_until(proc, done):
  deadline = time.time() + 240
  while not done() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)


def _committed_steps(workdir):
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
  """One job, twice interrupted: killed with SIGKILL past step 4 once its checkpoint at step 4 is
  committed (the run also samples at step 4 and, with an assumed peak, logs MFU), then rerun without
  periodic checkpoints and stopped with SIGTERM 3 steps after the one it resumed from."""
  data, reference = trained_tiny(tmp_path_factory)
  root = tmp_path_factory.mktemp("interrupted")
  workdir = str(root / "run")
  killed = _launch([*_train_args(workdir, data, 4), "--config.train.sample_every=4",
                    "--config.train.peak_tflops_per_device=0.001"], root / "killed.stderr")  # CPUs have no known peak
  _wait_until(killed, lambda: _committed_steps(workdir) and max(_losses(workdir)) > 4)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  killed_records = jsonl_writer.read(os.path.join(workdir, "metrics.jsonl"))  # before the rerun drops some
  restored = max(_committed_steps(workdir), default=0)

  log = root / "resumed.stderr"
  resumed = _launch(_train_args(workdir, data, STEPS), log)
  # Its first step's log line comes after its SIGTERM handler is set and the killed run's later records are dropped.
  _wait_until(resumed, lambda: "compiled and ran the train step" in log.read_text() and
              max(_losses(workdir), default=0) >= restored + 3)
  resumed.send_signal(signal.SIGTERM)
  resumed.wait(timeout=120)
  return types.SimpleNamespace(data=data, reference=reference, workdir=workdir, killed=killed,
                               killed_records=killed_records, restored=restored, resumed=resumed,
                               resumed_stderr=log.read_text())


@pytest.mark.slow
def test_training_logs_throughput_and_writes_samples(interrupted):
  records = {r["step"]: r for r in interrupted.killed_records if "loss" in r}
  assert sorted(records) == list(range(1, max(records) + 1)) and max(records) >= 4
  # Throughput from the FLOPs formula: logged for every window without a compilation (not step 1).
  assert "tflops_per_device" not in records[1]
  for step in range(2, max(records) + 1):
    assert records[step]["tflops_per_device"] > 0, step
    assert records[step]["mfu"] == pytest.approx(records[step]["tflops_per_device"] / 0.001), step
  samples = os.listdir(os.path.join(interrupted.workdir, "samples", "step_00000004"))
  assert len(samples) == len(tiny_config().sample.prompts) and all(s.endswith(".gif") for s in samples)


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_exactly(interrupted):
  assert interrupted.killed.returncode == -signal.SIGKILL, "training finished before it could be killed"
  killed_at = max(r["step"] for r in interrupted.killed_records if "loss" in r)
  assert 4 <= interrupted.restored < killed_at  # the rerun replays steps the killed run had logged
  assert f"Resumed from step {interrupted.restored} in" in interrupted.resumed_stderr
  expected, resumed = _losses(interrupted.reference), _losses(interrupted.workdir)
  last = max(resumed)
  assert last > interrupted.restored
  # One record per logged step, in order: the resumed run dropped the killed run's records of the
  # steps it replayed (those after the restored checkpoint).
  records = jsonl_writer.read(os.path.join(interrupted.workdir, "metrics.jsonl"))
  assert [r["step"] for r in records if "loss" in r] == list(range(1, last + 1))
  rates = [r["step"] for r in records if "steps_per_sec" in r]
  assert rates == sorted(set(rates))
  # Every step after the restored checkpoint reproduces the uninterrupted run bit for bit: same
  # parameters, optimizer state, EMA, RNG and data iterator position.
  for step in range(1, last + 1):
    assert resumed[step] == expected[step], (step, resumed[step], expected[step])


@pytest.mark.slow
def test_sigterm_writes_a_final_checkpoint(interrupted):
  assert interrupted.resumed.returncode == 0, interrupted.resumed_stderr[-3000:]
  last_logged = max(_losses(interrupted.workdir))
  assert last_logged < STEPS, "training finished before SIGTERM"
  # The rerun saves no periodic checkpoint before step 60: its one checkpoint is SIGTERM's, at the step it stopped at.
  assert [s for s in _committed_steps(interrupted.workdir) if s > interrupted.restored] == [last_logged]


@pytest.mark.slow
def test_incompatible_checkpoint_is_refused_without_damage(interrupted, tmp_path, monkeypatch):
  workdir, data = str(tmp_path / "run"), interrupted.data
  shutil.copytree(interrupted.workdir, workdir)
  before = _committed_steps(workdir)
  result = cli("vdit.main", *_train_args(workdir, data, STEPS), "--config.model.dim=48")
  assert result.returncode == 2
  assert "different model config" in result.stderr and "model.dim" in result.stderr
  # One error line is the last thing printed: no traceback, not even from a thread at shutdown.
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: Workdir"), result.stderr[-3000:]
  assert _committed_steps(workdir) == before
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["dim"] == 32  # the run's recorded config is untouched

  # What the subprocess shows only when a thread loses the race, in process for certain: the
  # refusal closes the checkpointer (Orbax's threads) before the error propagates.
  from vdit.core import checkpoint as ckpt_lib
  from vdit.training.dit_trainer import train_and_evaluate
  closed, close = [], ckpt_lib.Checkpointer.close
  monkeypatch.setattr(ckpt_lib.Checkpointer, "close", lambda self: (closed.append(self.directory), close(self)))
  with pytest.raises(ckpt_lib.CheckpointError, match="different model config"):
    train_and_evaluate(tiny_config(data, **{"model.dim": 48}), workdir)
  assert closed == [os.path.join(workdir, "checkpoints")]
  assert _committed_steps(workdir) == before


@pytest.mark.parametrize("override, message", [
    ("--config.model.dimm=3", "dimm"),
    ("--config.model.dim=abc", "dim"),
])
def test_config_typo_or_wrong_type_is_an_error(toy_data, tmp_path, override, message):
  result = cli("vdit.main", "--config=tests/tiny.py:" + toy_data, f"--workdir={tmp_path}", override)
  assert result.returncode != 0
  assert message in result.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_locked_config_rejects_new_keys():
  config = tiny_config()
  config.lock()
  with pytest.raises(AttributeError):
    config.model.dimm = 3


def test_missing_or_empty_data_is_a_clear_error(tmp_path):
  result = cli("vdit.main", "--config=tests/tiny.py:" + str(tmp_path / "nowhere"), f"--workdir={tmp_path / 'w'}")
  assert result.returncode == 2
  assert "does not exist" in result.stderr and "Traceback" not in result.stderr
