"""The training loop every trainer runs: `train(config, workdir, hooks)`.

A trainer builds its pieces (jitted step, state, batches, signature, callbacks) and hands them over
as `Hooks`; the loop owns what all trainers share, in this order: the workdir's lock (one trainer per
workdir), checkpoints (open; pick, check and read the start before anything is written:
vdit/training/resume.py), metric writers, then per step: the step, logging, callbacks, preemption
and checkpoints. Rerunning with the same workdir resumes exactly from the latest readable
checkpoint, data iterator included.

It reads config.seed and config.train.{num_steps, log_every, checkpoint_every, keep_checkpoints,
async_checkpoint, restore_step, nonfinite, max_consecutive_skips}, and records the config as WORKDIR/config.json.
A non-finite step stops the run, or is skipped by the step itself with train.nonfinite=skip until too
many come in a row (vdit/training/nonfinite.py); a stop writes nothing more: no metrics of the
window that diverged, no checkpoint of its state.
"""
import contextlib
import dataclasses
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from vdit.config import config_io
from vdit.core import checkpoint as ckpt_lib
from vdit.core import finite, workdir_files
from vdit.training import nonfinite, resume, workdir_lock, writers
from vdit.training.jsonl_writer import keep_through

# What callbacks get: (step, state, writer). They run on every process (collectives, checkpoints);
# the writer of processes other than 0 only logs.
Callback = Callable[[int, dict, Any], None]  # (step, state, writer: vdit/training/writers.py)


@dataclasses.dataclass(frozen=True)
class Hooks:
  """A trainer, as the loop sees it. Batches are dicts of global arrays; `batch["video"].shape`
  names the compiled program (a new shape compiles once, then jit caches it)."""
  train_step: Callable  # jitted (state, batch, key) -> (state, metrics); the state is donated
  init_state: Callable  # key -> a fresh state, created sharded
  abstract_state: Callable  # () -> the state's ShapeDtypeStructs with shardings (restore target)
  batches: Any  # host-local batches: an iterator with get_state() / set_state() (Grain); closed at the end
  global_batch: Callable  # host-local batch -> global arrays split over the batch axes
  meta: dict  # signatures saved in every checkpoint; a resume needs equal ones
  mismatch: str  # what differing signatures mean, for the error: "model config"
  log_scalars: Callable = lambda step: {}  # extra scalars of each logged window (lr, throughput)
  after_step: tuple = ()  # Callbacks after each step's logging: samples, evals
  after_checkpoint: tuple = ()  # Callbacks after each checkpoint save: the VAE export
  already_trained: Callback | None = None  # run instead of training when the workdir is finished
  legacy_data_args: Any = None  # Orbax args restoring the iterator from older checkpoints


# ---- Preemption ----------------------------------------------------------------------------------
class PreemptionFlag:
  """Set by SIGTERM (and JAX's preemption notice on TPU); the loop saves and exits cleanly."""

  def __init__(self):
    self.requested = False
    if threading.current_thread() is threading.main_thread():
      signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: writing a final checkpoint before exiting.")
    self.requested = True

  def should_stop(self, step: int, sync: bool) -> bool:
    """Single process: the local flag. Multi-process: JAX's preemption sync point every step, and
    the hosts' SIGTERM flags combined at `sync` steps, so all hosts stop at the same step."""
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils
    try:
      if multihost_utils.reached_preemption_sync_point(step):
        return True
    except RuntimeError:  # no preemption service outside managed TPU/GPU runtimes
      pass
    return sync and bool(np.any(multihost_utils.process_allgather(np.asarray(self.requested))))


# ---- Checkpoints and writers ---------------------------------------------------------------------
@contextlib.contextmanager
def _writers(workdir: str):
  """The log; process 0 also writes TensorBoard events and appends metrics.jsonl."""
  writer = writers.create(workdir, lead=jax.process_index() == 0)
  try:
    yield writer
  finally:
    writer.flush()
    writer.close()


def _fetch(pending: list, guard: nonfinite.Guard, step: int) -> list:
  """The window's metrics on the host (this waits for its steps), checked: TrainingDiverged if the
  run must stop. Called where the loop syncs anyway: at log steps and before checkpoint saves."""
  host = jax.device_get(pending)
  guard.check(step, [m["nonfinite"] for m in host])
  return host


def _window_scalars(host: list, hooks: Hooks, step: int, count_skips: bool) -> dict:
  """The mean of each metric over the window's finite steps, the number of skipped ones
  (train.nonfinite=skip), then the trainer's scalars (after the fetch: the window's work is done,
  so throughput is measured right)."""
  kept = [m for m in host if not m["nonfinite"]]
  scalars = {k: float(np.mean([m[k] for m in kept])) for k in host[0] if k != "nonfinite"} if kept else {}
  if count_skips:
    scalars["nonfinite_skips"] = float(len(host) - len(kept))
  scalars.update(hooks.log_scalars(step))
  return scalars


def _save(checkpointer, step: int, state: dict, hooks: Hooks, guard: nonfinite.Guard) -> None:
  # The step flags already rule out non-finite values; one reduction, next to a save, makes sure.
  if not bool(finite.all_finite({k: state[k] for k in ckpt_lib.STATE_ITEMS})):
    raise guard.nonfinite_state(step)
  checkpointer.save(step, state, meta=hooks.meta, data_state=hooks.batches.get_state(), force=True)
  guard.last_checkpoint = guard.last_written = step


# ---- The loop ------------------------------------------------------------------------------------
def train(config, workdir: str, hooks: Hooks) -> dict:
  """Trains (or resumes) in `workdir` up to config.train.num_steps; returns the final state."""
  tr = config.train
  # Every exit, a refusal or error included, closes Orbax's threads, the writers and the input.
  with contextlib.ExitStack() as cleanup:
    cleanup.callback(hooks.batches.close)
    # Before the checkpointer opens: opening deletes unfinished saves, another run's included.
    cleanup.enter_context(workdir_lock.hold(workdir))
    checkpointer = cleanup.enter_context(ckpt_lib.Checkpointer(
        ckpt_lib.checkpoint_dir(workdir), max_to_keep=tr.keep_checkpoints, async_save=tr.async_checkpoint))
    # Keys: 1 initialises the state, step + 2 drives step `step` (the same on resume).
    base_key = jax.random.key(config.seed)
    # Before anything is written: a refused resume leaves the workdir as it was.
    state = resume.restore_or_init(checkpointer, hooks, tr.restore_step, jax.random.fold_in(base_key, 1), workdir)
    if jax.process_index() == 0:
      config_io.save(config, workdir)
    writer = cleanup.enter_context(_writers(workdir))
    step = start_step = int(state["step"])
    if start_step >= tr.num_steps:
      logging.info("Already trained %d/%d steps; nothing to do.", start_step, tr.num_steps)
      if hooks.already_trained is not None:
        hooks.already_trained(step, state, writer)

    preemption = PreemptionFlag()
    # The steps after start_step run (again) now: metrics.jsonl drops the records a killed run left of
    # them. TensorBoard needs nothing: each run starts a new events file, and TensorBoard's default
    # loader (the data server of --load_fast=auto) lets a point at step s replace a series' points at
    # steps >= s read before it; only the Python loader (--load_fast=false) shows replayed steps twice
    # (it purges only on SessionLog.START events, which neither writer writes).
    if jax.process_index() == 0:
      keep_through(os.path.join(workdir, workdir_files.METRICS_FILE), start_step)
    guard = nonfinite.Guard(tr, start_step)
    report = writers.Progress(tr.num_steps, writer, every_steps=tr.log_every)
    pending, compiled_shapes = [], set()
    while step < tr.num_steps:
      batch = hooks.global_batch(next(hooks.batches))
      shape = batch["video"].shape
      t0 = time.time()
      state, metrics = hooks.train_step(state, batch, jax.random.fold_in(base_key, step + 2))
      step += 1
      if shape not in compiled_shapes:  # a new bucket: this step compiled (once, then cached)
        compiled_shapes.add(shape)
        jax.block_until_ready(metrics)
        logging.info("Step %d: compiled and ran the train step for batch %s in %.1fs.", step, shape,
                     time.time() - t0)
      pending.append(metrics)
      if step % tr.log_every == 0 or step == tr.num_steps:
        pending = _fetch(pending, guard, step)
        writer.write_scalars(step, _window_scalars(pending, hooks, step, guard.skip))
        guard.last_written, pending = step, []
      report(step)  # after the check: a diverged window writes nothing, not even steps/s
      for callback in hooks.after_step:
        callback(step, state, writer)
      stop = preemption.should_stop(step, sync=step % tr.log_every == 0)
      if step % tr.checkpoint_every == 0 or step == tr.num_steps or stop:
        pending = _fetch(pending, guard, step)  # the save syncs anyway; no checkpoint after a bad step
        _save(checkpointer, step, state, hooks, guard)
        for callback in hooks.after_checkpoint:
          callback(step, state, writer)
      if stop:
        logging.warning("Stopping at step %d after preemption; rerun the same command to resume.", step)
        break
  return state
