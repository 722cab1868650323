"""Faults a long run meets: a second trainer on its workdir, a lock left by a killed job, damaged
checkpoints, a kill during a checkpoint write. Each rerun recovers, or refuses with one line; none
prints a traceback.

One trained workdir (two trainers started on it at once, from the command line) is copied for the
later tests; reruns (of damaged copies, and after a kill) call the trainer in process (what the
command calls, without paying for its start). Each kind of damage, and the choice of a checkpoint, is tested alone on a
small synthetic state: resume.restore_or_init reads it as it reads a trainer's.
"""
import glob
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import jax
import jax.numpy as jnp
import pytest

from tests.helpers import REPO, cli, cli_env, free_port, make_toy_data
from vdit.core import checkpoint as ckpt_lib
from vdit.training import jsonl_writer, resume, workdir_lock

STEPS = 8  # checkpoints at 4 and 8


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
  return make_toy_data(tmp_path_factory.mktemp("toy_data"))


def _args(workdir, data):
  return ["--config=tests/tiny.py:" + data, f"--workdir={workdir}", f"--config.train.num_steps={STEPS}",
          "--config.train.checkpoint_every=4"]


def _launch(workdir, data, log=None):
  """`python -m vdit.main` in the background; stderr goes to a file (an unread pipe could block it)."""
  with open(log or f"{workdir}.stderr", "w") as f:
    return subprocess.Popen([sys.executable, "-m", "vdit.main", *_args(workdir, data)], cwd=REPO, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=f)


def _finish(proc, workdir, log=None):
  proc.wait(timeout=300)
  with open(log or f"{workdir}.stderr") as f:
    stderr = f.read()
  assert "Traceback" not in stderr, stderr[-3000:]
  return types.SimpleNamespace(returncode=proc.returncode, stderr=stderr, pid=proc.pid)


def _lines(stderr, text):
  return [line for line in stderr.splitlines() if text in line]


def _logged_lines(caplog, text):
  """Log lines of a run in this process (pytest's log capture holds them, not stderr)."""
  return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def _losses(workdir):
  """{step: loss} and the steps of every loss record, in file order."""
  records = [r for r in jsonl_writer.read(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]
  return {r["step"]: r["loss"] for r in records}, [r["step"] for r in records]


def _files(workdir):
  """Every file under workdir with its size and modification time: what "nothing changed" compares."""
  found = {}
  for directory, _, names in os.walk(workdir):
    for name in names:
      stat = os.stat(os.path.join(directory, name))
      found[os.path.relpath(os.path.join(directory, name), workdir)] = (stat.st_size, stat.st_mtime_ns)
  return found


def _steps(workdir):
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


# ---- One trainer per workdir ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(toy_data, tmp_path_factory):
  """Two trainers started at once on one workdir; the one that ran is every later test's reference."""
  workdir = str(tmp_path_factory.mktemp("shared") / "run")
  logs = [f"{workdir}.{name}.stderr" for name in ("a", "b")]
  procs = [_launch(workdir, toy_data, log=log) for log in logs]
  return types.SimpleNamespace(workdir=workdir, results=[_finish(p, workdir, log) for p, log in zip(procs, logs)])


@pytest.mark.slow
def test_second_trainer_on_a_workdir_is_refused_at_start(trained):
  ran, refused = sorted(trained.results, key=lambda r: r.returncode)
  assert (ran.returncode, refused.returncode) == (0, 2), refused.stderr[-3000:]
  errors = _lines(refused.stderr, "error:")
  assert len(errors) == 1 and refused.stderr.strip().splitlines()[-1] == errors[0]
  assert "is in use by another trainer" in errors[0]
  assert f"host {socket.gethostname()}, pid {ran.pid}, started " in errors[0]
  assert not os.path.exists(os.path.join(trained.workdir, "lock.json"))  # released at the end


@pytest.mark.slow
def test_refused_trainer_adds_no_metrics(trained):
  _, steps = _losses(trained.workdir)
  assert steps == list(range(1, STEPS + 1))  # one record per logged step


def _write_lock(workdir, **record):
  os.makedirs(workdir, exist_ok=True)
  record = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2025-01-01T00:00:00+00:00",
            "heartbeat": time.time(), "token": "old", **record}
  with open(os.path.join(workdir, "lock.json"), "w") as f:
    json.dump(record, f)


def _dead_pid():
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


@pytest.mark.parametrize("holder, why", [
    (dict(pid="dead"), "its process is gone"),
    (dict(host="elsewhere", heartbeat=time.time() - workdir_lock.STALE_AFTER_S - 60), "no heartbeat for"),
])
def test_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog, holder, why):
  if holder.get("pid") == "dead":
    holder = dict(holder, pid=_dead_pid())
  _write_lock(str(tmp_path), **holder)
  with workdir_lock.hold(str(tmp_path)):
    with open(tmp_path / "lock.json") as f:
      assert json.load(f)["pid"] == os.getpid()
  [warning] = _logged_lines(caplog, "Took over the lock")
  host = holder.get("host", socket.gethostname())
  assert f"from host {host}, pid {holder.get('pid', os.getpid())}, started 2025-01-01T00:00:00+00:00: {why}" in warning
  assert not os.path.exists(tmp_path / "lock.json")


@pytest.mark.parametrize("holder", [dict(host="elsewhere", pid=12345), dict(pid=os.getppid())])
def test_live_lock_is_not_taken_over(tmp_path, holder):
  _write_lock(str(tmp_path), **holder)
  before = _files(str(tmp_path))
  with pytest.raises(workdir_lock.WorkdirInUseError, match=f"host {holder.get('host', socket.gethostname())}, "
                     f"pid {holder['pid']}, started 2025-01-01T00:00:00"):
    with workdir_lock.hold(str(tmp_path)):
      pass
  assert _files(str(tmp_path)) == before


@pytest.mark.slow
def test_every_process_of_a_job_is_refused_a_locked_workdir(toy_data, tmp_path):
  workdir = str(tmp_path / "run")
  _write_lock(workdir, host="elsewhere", pid=4242)
  port, procs = free_port(), []
  for index in range(2):
    env = dict(cli_env(devices=4), VDIT_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", VDIT_NUM_PROCESSES="2",
               VDIT_PROCESS_ID=str(index))
    procs.append(subprocess.Popen([sys.executable, "-m", "vdit.main", "--config=tests/tiny.py:" + toy_data,
                                   f"--workdir={workdir}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True))
  for proc in procs:  # process 1 holds no lock file yet stops too, with the same line
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith(f"error: Workdir {workdir} is in use by another trainer: "
                                                      "host elsewhere, pid 4242, started ")
  assert os.listdir(workdir) == ["lock.json"]


def test_of_many_takers_of_a_stale_lock_one_wins(tmp_path):
  _write_lock(str(tmp_path), pid=_dead_pid())
  path, barrier, won, refused = str(tmp_path / "lock.json"), threading.Barrier(8), [], []

  def take():
    barrier.wait()
    try:
      won.append(workdir_lock._Held.acquire(path))  # pylint: disable=protected-access
    except workdir_lock.WorkdirInUseError:
      refused.append(1)

  threads = [threading.Thread(target=take) for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert (len(won), len(refused)) == (1, 7)
  won[0].release()
  assert os.listdir(tmp_path) == []  # no lock, no stale copy left behind


def test_lock_is_released_on_sigterm(tmp_path):
  previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
  try:
    with pytest.raises(SystemExit):
      with workdir_lock.hold(str(tmp_path)):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert not os.path.exists(tmp_path / "lock.json")


# ---- Damaged checkpoints: reruns of the shared run -----------------------------------------------
def _truncate_data(step_dir):
  """Cuts the largest array data file of `params` in half."""
  path = max(glob.glob(os.path.join(step_dir, "params", "**", "d", "*"), recursive=True), key=os.path.getsize)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


DAMAGE = {
    "truncated data file": _truncate_data,
    "no manifest.ocdbt": lambda d: os.remove(os.path.join(d, "params", "manifest.ocdbt")),
    "no meta": lambda d: shutil.rmtree(os.path.join(d, "meta")),
    "no opt_state": lambda d: shutil.rmtree(os.path.join(d, "opt_state")),
}
# The reason each warning gives.
REASON = {"truncated data file": "OCDBT database", "no manifest.ocdbt": "OCDBT database",
          "no meta": "its meta is missing", "no opt_state": "its opt_state is missing"}


def _train(workdir, toy_data, **overrides):
  """The shared run's command, run in process (what `python -m vdit.main` runs, without its start-up)."""
  from tests.tiny import tiny_config
  from vdit.training.dit_trainer import train_and_evaluate
  overrides = {"train.num_steps": STEPS, "train.checkpoint_every": 4, **overrides}
  train_and_evaluate(tiny_config(toy_data, **overrides), workdir)


def _rerun(trained, toy_data, tmp_path, damage, **overrides):
  """A copy of the shared run, damaged, rerun in process."""
  workdir = str(tmp_path / "run")
  shutil.copytree(trained.workdir, workdir)
  damage(workdir)
  _train(workdir, toy_data, **overrides)
  return workdir, os.path.join(workdir, "checkpoints")


@pytest.mark.slow  # the shared run
def test_unreadable_latest_checkpoint_falls_back_to_the_previous(trained, toy_data, tmp_path, capfd, caplog):
  # A truncated file, as a full disk leaves; every kind of damage is read alike (the small-state test below).
  workdir, ckpts = _rerun(trained, toy_data, tmp_path, lambda w: _truncate_data(os.path.join(w, "checkpoints", "8")))
  stderr = capfd.readouterr().err
  assert "Traceback" not in stderr, stderr[-3000:]  # nor an echo of Orbax's failed reads
  [warning] = _logged_lines(caplog, "is unreadable")
  assert f"Checkpoint step 8 in {ckpts} is unreadable (" in warning and REASON["truncated data file"] in warning
  assert f"; resuming from step 4. Its files are kept as {ckpts}/8.unreadable." in warning
  assert _steps(workdir) == ["4", "8", "8.unreadable"]  # set aside, not deleted; step 8 saved anew
  assert "params" in os.listdir(os.path.join(ckpts, "8.unreadable"))  # the evidence stays
  # Exact resume: steps 5-8 again, bit for bit as the uninterrupted run.
  assert _losses(workdir)[0] == _losses(trained.workdir)[0]


@pytest.mark.slow
def test_restore_step_rewinds_to_that_step(trained, toy_data, tmp_path, caplog):
  workdir, ckpts = _rerun(trained, toy_data, tmp_path, lambda w: None, **{"train.restore_step": 4})
  [warning] = _logged_lines(caplog, "(train.restore_step=4)")
  assert f"Resuming from step 4 (train.restore_step=4): the newer checkpoints are kept as {ckpts}/8.superseded" in warning
  assert _steps(workdir) == ["4", "8", "8.superseded"]
  assert _losses(workdir)[0] == _losses(trained.workdir)[0]


@pytest.mark.slow
def test_no_readable_checkpoint_is_one_error_and_changes_nothing(trained, toy_data, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained.workdir, workdir)
  for step in ("4", "8"):
    _truncate_data(os.path.join(workdir, "checkpoints", step))
  before = _files(workdir)
  result = cli("vdit.main", *_args(workdir, toy_data))
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
  [error] = _lines(result.stderr, "error:")
  assert result.stderr.strip().splitlines()[-1] == error
  assert error.startswith(f"error: No readable checkpoint in {workdir}/checkpoints: step 8: ")
  assert "; step 4: " in error and "Nothing was changed" in error
  assert _files(workdir) == before


# ---- Kill during a checkpoint write --------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_then_rerun_resumes_exactly(trained, toy_data, tmp_path, capfd, caplog):
  workdir = str(tmp_path / "killed")
  proc = _launch(workdir, toy_data)  # the shared run's command: async checkpoints at steps 4 and 8
  ckpts, deadline = os.path.join(workdir, "checkpoints"), time.time() + 240
  while not os.path.isdir(os.path.join(ckpts, "4")) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  writing = []  # step 4 is saved; now look often for step 8's save (a tiny model's takes milliseconds)
  while not writing and proc.poll() is None and time.time() < deadline:
    writing = [n for n in os.listdir(ckpts) if n.startswith("8.orbax-checkpoint-tmp")]
    time.sleep(0.0005)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL and writing, "training finished before its last save could be interrupted"

  caplog.set_level(logging.INFO)  # the resume line is INFO
  _train(workdir, toy_data)  # the rerun, in process
  stderr = capfd.readouterr().err
  assert "Traceback" not in stderr, stderr[-3000:]
  assert _logged_lines(caplog, "Resumed from step 4 in")
  # The killed run's lock: its process is gone, so the rerun takes it over.
  [warning] = _logged_lines(caplog, "Took over the lock")
  assert f"pid {proc.pid}," in warning and warning.endswith("its process is gone.")
  assert _losses(workdir)[0] == _losses(trained.workdir)[0]
  assert not glob.glob(os.path.join(ckpts, "*tmp*"))  # the unfinished save is gone


def _logged(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  return {r["step"] for r in jsonl_writer.read(path) if "loss" in r} if os.path.exists(path) else set()


# ---- Choosing a checkpoint, in process on a small state ------------------------------------------
def _state(value):
  key = jax.random.key(int(value))
  return {"params": {"w": jax.random.normal(key, (64, 64)) + value}, "ema": {"w": jnp.full((8,), value)},
          "opt_state": {"m": jnp.full((8,), value)}}


def _hooks():
  target = dict(_state(0), step=jnp.int32(0))
  restored = []
  return types.SimpleNamespace(
      meta={"signature": {"dim": 1}}, mismatch="model config", legacy_data_args=None,
      abstract_state=lambda: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target),
      init_state=lambda key: dict(_state(0), step=jnp.int32(0)),
      batches=types.SimpleNamespace(set_state=restored.append), data_states=restored)


@pytest.fixture
def small_run(tmp_path):
  """A checkpoint directory with steps 1, 2, 3 (max_to_keep=3) of a small state."""
  directory = str(tmp_path / "checkpoints")
  with ckpt_lib.Checkpointer(directory, max_to_keep=3) as checkpointer:
    for step in (1, 2, 3):
      checkpointer.save(step, _state(step), meta={"signature": {"dim": 1}}, data_state={"position": step}, force=True)
  return directory


def _start(directory, restore_step=0, max_to_keep=3):
  """(open checkpointer, hooks, state) as the loop starts a run in `directory`."""
  checkpointer, hooks = ckpt_lib.Checkpointer(directory, max_to_keep=max_to_keep), _hooks()
  try:
    return checkpointer, hooks, resume.restore_or_init(checkpointer, hooks, restore_step, jax.random.key(0), "w")
  except Exception:
    checkpointer.close()
    raise


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_each_kind_of_damage_is_passed_over_and_set_aside(small_run, capfd, caplog, damage):
  DAMAGE[damage](os.path.join(small_run, "3"))
  checkpointer, hooks, state = _start(small_run)
  checkpointer.close()
  assert int(state["step"]) == 2 and float(state["ema"]["w"][0]) == 2.0 and hooks.data_states == [{"position": 2}]
  stderr = capfd.readouterr().err
  assert "Traceback" not in stderr, stderr[-3000:]  # nor an echo of Orbax's failed reads
  [warning] = _logged_lines(caplog, "is unreadable")
  assert f"Checkpoint step 3 in {small_run} is unreadable (" in warning and REASON[damage] in warning
  assert f"; resuming from step 2. Its files are kept as {small_run}/3.unreadable." in warning
  assert sorted(os.listdir(small_run)) == ["1", "2", "3.unreadable"]  # set aside, not deleted
  assert "params" in os.listdir(os.path.join(small_run, "3.unreadable"))  # the evidence stays


def test_restore_step_picks_that_step(small_run):
  checkpointer, hooks, state = _start(small_run, restore_step=2)
  checkpointer.close()
  assert int(state["step"]) == 2 and float(state["ema"]["w"][0]) == 2.0 and hooks.data_states == [{"position": 2}]
  assert sorted(os.listdir(small_run)) == ["1", "2", "3.superseded"]


def test_restore_step_missing_or_unreadable_is_an_error_listing_readable_steps(small_run):
  _truncate_data(os.path.join(small_run, "1"))
  with pytest.raises(ckpt_lib.CheckpointError, match=r"No checkpoint for step 5 in .* \(train.restore_step=5\); "
                     r"readable steps: \[2, 3\]\. Set train.restore_step to one of them"):
    _start(small_run, restore_step=5)[0].close()
  with pytest.raises(ckpt_lib.CheckpointError, match=r"Checkpoint step 1 in .* is unreadable \(OUT_OF_RANGE.*\) "
                     r"\(train.restore_step=1\); readable steps: \[2, 3\]"):
    _start(small_run, restore_step=1)[0].close()
  assert sorted(os.listdir(small_run)) == ["1", "2", "3"]


def test_set_aside_checkpoint_is_neither_listed_nor_counted_by_max_to_keep(small_run):
  shutil.rmtree(os.path.join(small_run, "1"))  # left: 2, 3 (max_to_keep=2 below)
  _truncate_data(os.path.join(small_run, "3"))
  checkpointer, _, state = _start(small_run, max_to_keep=2)
  assert int(state["step"]) == 2 and checkpointer.all_steps() == [2]
  checkpointer.save(4, _state(4), meta={"signature": {"dim": 1}}, force=True)
  checkpointer.close()
  # Two checkpoints kept: had the set-aside step 3 still counted, keeping 2 would have dropped step 2.
  assert sorted(os.listdir(small_run)) == ["2", "3.unreadable", "4"]


def test_weights_only_checkpoint_is_refused_not_skipped(tmp_path):
  directory = str(tmp_path / "checkpoints")
  with ckpt_lib.Checkpointer(directory) as checkpointer:
    checkpointer.save_weights(1, _state(1)["params"], meta={"signature": {"dim": 1}})
  with pytest.raises(ckpt_lib.CheckpointError, match="holds weights only") as error:
    _start(directory)[0].close()
  assert not isinstance(error.value, ckpt_lib.UnreadableCheckpointError)
  assert os.listdir(directory) == ["1"]


def test_readable_checkpoint_of_another_config_is_refused_not_skipped(small_run):
  shutil.rmtree(os.path.join(small_run, "3", "meta"))  # 3 is unreadable, 2 reads but fits another config
  with ckpt_lib.Checkpointer(small_run) as checkpointer:
    hooks = dict(vars(_hooks()), meta={"signature": {"dim": 2}})
    with pytest.raises(ckpt_lib.CheckpointError, match=r"step 2\) from a different model config: dim"):
      resume.restore_or_init(checkpointer, types.SimpleNamespace(**hooks), 0, jax.random.key(0), "w")
  assert sorted(os.listdir(small_run)) == ["1", "2", "3"]
