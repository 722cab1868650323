"""One trainer per workdir: WORKDIR/lock.json names the run holding it (host, pid, start, heartbeat).

Two trainers on one workdir corrupt each other's checkpoints (Orbax deletes the other's unfinished
saves when it opens) and interleave metrics, so `hold(workdir)` is taken before the checkpointer
opens. Process 0 creates the file atomically (O_CREAT | O_EXCL: of two starters exactly one
succeeds) and refreshes its heartbeat from a daemon thread; every process learns the verdict, so a
refused multi-process job stops everywhere, with one line naming the holder. A lock left by a
killed job is stale when its process is gone (same host) or its heartbeat is old (any host), and is
taken over: renamed away first, which only one taker can do.
"""
import contextlib
import datetime
import json
import os
import signal
import socket
import threading
import time
import uuid

import jax
import numpy as np
from absl import logging

from vdit.core import workdir_files
from vdit.core.errors import UserError

HEARTBEAT_S = 30
# A lock whose heartbeat is this old is abandoned. Ten missed beats: far beyond the clock skew
# between hosts (NTP keeps it under a second) and a stalled shared filesystem, so a live run is not
# robbed; short enough that a job restarted on another host after a crash starts within minutes.
# (On the same host a dead pid frees the lock at once.)
STALE_AFTER_S = 300
# A takeover guard older than this belongs to a taker that died between two file operations.
_GUARD_STALE_S = 60
_MESSAGE_BYTES = 2048  # the verdict broadcast to the other processes


class WorkdirInUseError(UserError):
  pass


def lock_path(workdir: str) -> str:
  return os.path.join(workdir, workdir_files.LOCK_FILE)


@contextlib.contextmanager
def hold(workdir: str):
  """Holds the workdir's lock for the block (every process enters; process 0 owns the file).
  WorkdirInUseError on every process if another live run holds it."""
  held, refusal = None, None
  try:
    if jax.process_index() == 0:
      try:
        held = _Held.acquire(lock_path(workdir))
      except WorkdirInUseError as e:
        refusal = str(e)
    refusal = _agree(refusal)
    if refusal:
      raise WorkdirInUseError(refusal)
    previous_sigterm = _exit_on_sigterm()
    try:
      yield
    finally:
      if previous_sigterm is not None and signal.getsignal(signal.SIGTERM) is _sigterm_exit:
        signal.signal(signal.SIGTERM, previous_sigterm)
  finally:
    if held:
      held.release()


def _agree(refusal: str | None) -> str | None:
  """Process 0's verdict on every process (None: the lock is held)."""
  if jax.process_count() == 1:
    return refusal
  from jax.experimental import multihost_utils
  encoded = np.zeros(_MESSAGE_BYTES, np.int32)
  text = (refusal or "").encode()[:_MESSAGE_BYTES]
  encoded[:len(text)] = np.frombuffer(text, np.uint8)
  encoded = np.asarray(multihost_utils.broadcast_one_to_all(encoded))
  return bytes(encoded[encoded > 0].astype(np.uint8)).decode(errors="replace") or None


def _sigterm_exit(signum, frame):
  del frame
  raise SystemExit(128 + signum)


def _exit_on_sigterm():
  """Until the loop installs its own SIGTERM handler (save, then stop), SIGTERM unwinds the stack so
  the lock is released; returns the handler it replaced, or None if it left it alone."""
  if threading.current_thread() is not threading.main_thread():
    return None
  previous = signal.getsignal(signal.SIGTERM)
  if previous is not signal.SIG_DFL:
    return None
  signal.signal(signal.SIGTERM, _sigterm_exit)
  return previous


class _Held:
  """The lock file this process created, and the thread refreshing its heartbeat."""

  def __init__(self, path: str, record: dict):
    self.path, self.record, self._stop = path, record, threading.Event()
    self._thread = threading.Thread(target=self._beat, name="vdit-workdir-lock", daemon=True)
    self._thread.start()

  @classmethod
  def acquire(cls, path: str) -> "_Held":
    now = time.time()
    record = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.fromtimestamp(now).astimezone().isoformat(timespec="seconds"),
              "heartbeat": now, "token": uuid.uuid4().hex}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for _ in range(5):  # a round lost to another starter or taker reads the lock again
      if _create(path, record):
        return cls(path, record)
      holder = _read(path)
      if holder is None:  # released meanwhile
        continue
      why = _staleness(holder)
      if why is None:
        break
      if _take_over(path, holder, record):
        logging.warning("Took over the lock of workdir %s from %s: %s.", os.path.dirname(path),
                        _describe(holder), why)
        return cls(path, record)
      time.sleep(0.05)  # another taker holds the takeover guard: look again once it is done
    holder = _read(path) or {}
    raise WorkdirInUseError(
        f"Workdir {os.path.dirname(path)} is in use by another trainer: {_describe(holder)} (last heartbeat "
        f"{time.time() - holder.get('heartbeat', time.time()):.0f} s ago; {path}). Wait for it to finish or "
        "stop it, or use another --workdir.")

  def release(self):
    self._stop.set()
    self._thread.join(timeout=10)
    current = _read(self.path)
    if current is not None and current.get("token") == self.record["token"]:
      os.remove(self.path)

  def _beat(self):
    while not self._stop.wait(HEARTBEAT_S):
      current = _read(self.path)
      if current is None or current.get("token") != self.record["token"]:
        logging.error("The lock %s is no longer this run's (taken over after %d s without a heartbeat?); "
                      "another trainer may be using the workdir.", self.path, STALE_AFTER_S)
        return
      self.record["heartbeat"] = time.time()
      tmp = f"{self.path}.{self.record['token']}.tmp"
      with open(tmp, "w") as f:
        json.dump(self.record, f)
      os.replace(tmp, self.path)  # readers see the old or the new record, never half of one


def _create(path: str, record: dict) -> bool:
  """Creates the lock holding `record`, whole (written aside, then hard-linked: link fails if the
  lock exists, so no reader ever sees an empty lock); False if it exists."""
  tmp = f"{path}.{record['token']}.new"
  with open(tmp, "w") as f:
    json.dump(record, f)
  try:
    os.link(tmp, path)
    return True
  except FileExistsError:
    return False
  finally:
    os.remove(tmp)


def _read(path: str) -> dict | None:
  """The lock's record, None if there is none. A record that does not parse (an older vdit's, or
  a damaged file) is read again briefly, then judged by its file's age alone."""
  for _ in range(20):
    try:
      with open(path) as f:
        return json.load(f)
    except FileNotFoundError:
      return None
    except (json.JSONDecodeError, UnicodeDecodeError):
      time.sleep(0.05)
  try:
    return {"host": "?", "pid": None, "started": "?", "heartbeat": os.path.getmtime(path)}
  except FileNotFoundError:
    return None


def _staleness(holder: dict) -> str | None:
  """Why the holder is gone, or None if it may be alive."""
  if holder.get("host") == socket.gethostname() and holder.get("pid") and not _alive(holder["pid"]):
    return "its process is gone"
  age = time.time() - holder.get("heartbeat", 0)
  if age > STALE_AFTER_S:
    return f"no heartbeat for {age:.0f} s"
  return None


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process
    return True
  return True


def _take_over(path: str, stale: dict, record: dict) -> bool:
  """Replaces the lock judged stale by `record`; True if this taker did. Takers queue on a guard file
  (O_EXCL: one at a time), and the one inside replaces the lock only if it is still the stale
  record: a lock renewed or taken meanwhile is left alone, so two takers can never both win."""
  guard = path + ".takeover"
  try:
    fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    with contextlib.suppress(FileNotFoundError):
      if time.time() - os.path.getmtime(guard) > _GUARD_STALE_S:  # its taker died inside
        os.remove(guard)
    return False
  try:
    if _read(path) != stale:
      return False
    tmp = f"{path}.{record['token']}.new"
    with open(tmp, "w") as f:
      json.dump(record, f)
    os.replace(tmp, path)  # atomic: readers see the stale record or ours
    return True
  finally:
    os.close(fd)
    os.remove(guard)


def _describe(holder: dict) -> str:
  return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {holder.get('started', '?')}"
