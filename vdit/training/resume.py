"""Where a run starts: a fresh state, the newest readable checkpoint, or exactly train.restore_step.

Every candidate is checked against the run's signatures (a readable checkpoint of another setup is
refused, never skipped) and read whole before the loop writes anything. A checkpoint that cannot be
read (a truncated file, a lost manifest or item) is passed over for the one before it, and only
then set aside as `checkpoints/N.unreadable`, with one warning line: vdit deletes no checkpoint,
and Orbax neither lists the set-aside step nor garbage-collects a good one because of it. When no
checkpoint reads, nothing changes: one error line.
"""
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vdit.core import checkpoint as ckpt_lib


def restore_or_init(checkpointer, hooks, restore_step: int, key, workdir: str) -> dict:
  """The state a run starts from (hooks: the loop's Hooks); restore_step 0 means the newest readable."""
  steps = sorted(checkpointer.all_steps(), reverse=True)
  if not steps and not restore_step:
    return hooks.init_state(key)
  reader = _Reader(checkpointer, hooks, workdir)
  if restore_step:
    return _restore_exactly(reader, restore_step, steps)
  unreadable = []
  for step in steps:
    try:
      state, data_state = reader.read(step)
    except ckpt_lib.UnreadableCheckpointError as e:
      unreadable.append(e)
      continue
    for e in unreadable:
      aside = checkpointer.set_aside(e.step, "unreadable")
      logging.warning("%s; resuming from step %d. Its files are kept as %s.", e, step, aside)
    return reader.resume(step, state, data_state)
  raise ckpt_lib.CheckpointError(
      f"No readable checkpoint in {checkpointer.directory}: "
      f"{'; '.join(f'step {e.step}: {e.reason}' for e in unreadable)}. Nothing was changed; restore "
      "the checkpoints from a copy, or train from scratch with another --workdir.")


def _restore_exactly(reader, step: int, steps: list) -> dict:
  """Step `step` or a CheckpointError listing the readable ones; newer steps are set aside (the run
  rewinds: its next saves take their numbers)."""
  where = f"(train.restore_step={step})"
  if step not in steps:
    raise ckpt_lib.CheckpointError(
        f"No checkpoint for step {step} in {reader.checkpointer.directory} {where}; readable steps: "
        f"{reader.readable(steps)}. Set train.restore_step to one of them, or 0 for the newest readable.")
  try:
    state, data_state = reader.read(step)
  except ckpt_lib.UnreadableCheckpointError as e:
    raise ckpt_lib.CheckpointError(
        f"{e} {where}; readable steps: {reader.readable([s for s in steps if s != step])}. Set "
        "train.restore_step to one of them, or 0 for the newest readable.") from None
  newer = [s for s in steps if s > step]
  if newer:
    asides = [reader.checkpointer.set_aside(s, "superseded") for s in newer]
    logging.warning("Resuming from step %d %s: the newer checkpoints are kept as %s. Drop "
                    "train.restore_step from the command once this run has started: each rerun with it "
                    "rewinds to step %d again.", step, where, ", ".join(asides), step)
  return reader.resume(step, state, data_state)


class _Reader:
  """Reads steps for one run: its signatures, its state's structure and shardings (built once)."""

  def __init__(self, checkpointer, hooks, workdir: str):
    self.checkpointer, self.hooks, self.workdir = checkpointer, hooks, workdir
    self.target = hooks.abstract_state()

  def read(self, step: int):
    """(state without its step, data iterator JSON) of `step`; UnreadableCheckpointError on every
    process if any process fails to read it (they must all resume from the same step)."""
    try:
      self._check_compatible(step)
      restored = self.checkpointer.restore(step, self.target, legacy_data_args=self.hooks.legacy_data_args)
      error = None
    except ckpt_lib.UnreadableCheckpointError as e:
      restored, error = None, e
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      failed = multihost_utils.process_allgather(np.int32(error is not None))
      if error is None and np.any(failed):
        error = ckpt_lib.UnreadableCheckpointError(self.checkpointer.directory, step,
                                                   "another process could not read it")
    if error is not None:
      raise error
    return restored

  def readable(self, steps: list) -> list[int]:
    """The steps that read whole and fit this run (each read, then dropped): for an error message."""
    found = []
    for step in sorted(steps):
      try:
        self.read(step)
        found.append(step)
      except ckpt_lib.CheckpointError:
        pass
    return found

  def resume(self, step: int, state: dict, data_state) -> dict:
    if data_state is not None:
      self.hooks.batches.set_state(data_state)
    logging.info("Resumed from step %d in %s.", step, self.checkpointer.directory)
    return dict(state, step=jax.device_put(jnp.int32(step), self.target["step"].sharding))

  def _check_compatible(self, step: int) -> None:
    saved = self.checkpointer.read_meta(step)
    diffs = [ckpt_lib.describe_mismatch(saved.get(k, {}), v) for k, v in self.hooks.meta.items()
             if saved.get(k, {}) != v]
    if diffs:
      raise ckpt_lib.CheckpointError(
          f"Workdir {self.workdir!r} holds a checkpoint (step {step}) from a different {self.hooks.mismatch}: "
          f"{'; '.join(diffs)}. Use a new --workdir, or restore the original config.")
