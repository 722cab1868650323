"""Checkpoints (the one module that imports Orbax).

A step directory holds separate items so readers take only what they need: `params`, `ema`,
`opt_state`, `meta` (JSON: step, model signature) and `data_state` (JSON: the data iterator's
position, the same on every process, so a checkpoint resumes on any process count or mesh). Saves are asynchronous; Orbax writes to a temporary directory and renames it when
complete, so a killed save never leaves a checkpoint a reader would accept. A step that fails to
read anyway (a truncated file, a lost manifest or item) raises `UnreadableCheckpointError`; `set_aside`
moves it out of Orbax's view (`N.unreadable`: kept, never deleted, and no longer counted by
`max_to_keep`).
"""
import json
import logging
import os
import re
import sys
import traceback

import jax
import orbax.checkpoint as ocp

from vdit.core import workdir_files
from vdit.core.errors import UserError

STATE_ITEMS = ("params", "ema", "opt_state")
# A trainer's own extra state, saved and restored when its state holds it (a distillation's fake-score
# network and its optimizer state); sampling never reads it.
AUX_ITEM = "aux"
# Replicated arrays are saved in slices, one per replica, in parallel; below this many bytes per
# slice the slicing costs more than it saves (thousands of tiny device ops per save on small models).
_MIN_REPLICA_SLICE_BYTES = 1 << 20


class CheckpointError(UserError):
  pass


class UnreadableCheckpointError(CheckpointError):
  """A step whose files cannot be read (damaged or incomplete), as opposed to one that reads fine
  but does not fit (another model, weights only): a resume may fall back past it."""

  def __init__(self, directory: str, step: int, reason: str):
    self.directory, self.step, self.reason = directory, step, reason
    super().__init__(f"Checkpoint step {step} in {directory} is unreadable ({reason})")


def _reason(error: Exception) -> str:
  """The gist of a read failure: its root cause (TensorStore's names the file and the damage), first
  line only (TensorStore appends pages of spec JSON)."""
  for _ in range(10):
    if (error.__cause__ or error.__context__) is None:
      break
    error = error.__cause__ or error.__context__
  text = re.split(r" \[tensorstore_spec|\. See full TensorStore details| tensorstore_spec", str(error).strip())[0]
  text = (text.splitlines() or [""])[0]
  return (text if len(text) <= 300 else text[:299] + "…") or type(error).__name__


def _drop_echoes_of_failed_reads():
  """When one read of a step fails, Orbax stops waiting for the others and closes their event loop;
  as they finish they print tracebacks ("Event loop is closed", coroutines raising on close, "Task
  exception was never retrieved") as if the process crashed. The failure is reported once, by the
  caller: these echoes are dropped. Once per process; anything else passes through."""
  if getattr(_drop_echoes_of_failed_reads, "done", False):
    return
  in_orbax = lambda filename: f"{os.sep}orbax{os.sep}" in filename
  previous = sys.unraisablehook

  def hook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    if str(unraisable.exc_value) != "Event loop is closed" and not (code and in_orbax(code.co_filename)):
      previous(unraisable)

  def keep(record):  # asyncio's log of a task or gather whose error nobody awaited
    tb = record.exc_info[2] if record.exc_info else None
    return not ("exception was never retrieved" in record.getMessage() and tb is not None
                and any(in_orbax(frame.filename) for frame in traceback.extract_tb(tb)))

  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(keep)
  _drop_echoes_of_failed_reads.done = True


def _abstract(tree):
  """ShapeDtypeStructs (with shardings) that tell Orbax how to restore each array."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def _register_array_handler():
  """Once per process (Orbax's handler registry is global; re-registering logs a warning)."""
  if not getattr(_register_array_handler, "done", False):
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=_MIN_REPLICA_SLICE_BYTES),
        override=True)
    _register_array_handler.done = True


class Checkpointer:

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    _register_array_handler()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                           create=not read_only, read_only=read_only,
                                           cleanup_tmp_directories=not read_only)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self):
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def select_steps(self, choice: str) -> list[int]:
    """Steps named by 'latest', 'all' (every kept one) or a step number; CheckpointError if none."""
    steps = sorted(self.all_steps())
    if not steps:
      raise CheckpointError(f"No checkpoint in {self.directory}; train first with vdit.main.")
    if choice in ("latest", "all"):
      return steps if choice == "all" else steps[-1:]
    try:
      step = int(choice)
    except ValueError:
      raise CheckpointError(f"Checkpoint {choice!r}: give a step number, 'latest' or 'all'.") from None
    if step not in steps:
      raise CheckpointError(f"No checkpoint for step {step} in {self.directory}; available: {steps}.")
    return [step]

  def save(self, step: int, state: dict, *, meta: dict, data_state: dict | None = None,
           force: bool = False) -> bool:
    """Saves params/ema/opt_state from `state`, the JSON `meta`, and the data iterator's JSON state."""
    names = STATE_ITEMS + ((AUX_ITEM,) if AUX_ITEM in state else ())
    items = {name: ocp.args.StandardSave(state[name]) for name in names}
    items["meta"] = ocp.args.JsonSave(dict(meta, step=int(step)))
    if data_state is not None:
      items["data_state"] = ocp.args.JsonSave(data_state)
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def save_weights(self, step: int, params, *, meta: dict) -> None:
    """A weights-only checkpoint (released weights converted for vdit.sample): `params` saved as both
    params and ema, no optimizer state, nothing to resume training from."""
    items = {"params": ocp.args.StandardSave(params), "ema": ocp.args.StandardSave(params),
             "meta": ocp.args.JsonSave(dict(meta, step=int(step), weights_only=True))}
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    self._manager.wait_until_finished()

  def read_meta(self, step: int) -> dict:
    self._require_items(step, ("meta",))
    return dict(self._read(step, {"meta": ocp.args.JsonRestore()})["meta"])

  def _require_items(self, step: int, names) -> None:
    missing = [n for n in names if not os.path.isdir(os.path.join(self.directory, str(step), n))]
    if missing:
      raise UnreadableCheckpointError(self.directory, step, f"its {' and '.join(missing)} "
                                      f"{'is' if len(missing) == 1 else 'are'} missing")

  def _read(self, step: int, items: dict) -> dict:
    """Orbax's restore; any failure to read the files is an UnreadableCheckpointError."""
    _drop_echoes_of_failed_reads()
    try:
      return self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except  # TensorStore, OCDBT, JSON, OS errors alike
      raise UnreadableCheckpointError(self.directory, step, _reason(e)) from e

  def restore(self, step: int, target: dict, *, legacy_data_args=None) -> tuple[dict, dict | None]:
    """Restores params/ema/opt_state into the structure and shardings of `target` (arrays or
    ShapeDtypeStructs; any mesh or process count: Orbax reshards on read).

    Returns:
      (state, data_state): data_state is the saved iterator JSON, or None when the step has none.
      A checkpoint from an earlier version keeps the iterator in Grain's per-process `data` item;
      `legacy_data_args` restores it in place (same process count only).
    """
    step_dir = os.path.join(self.directory, str(step))
    # Only the meta says "weights only" (save_weights): a training step that lost opt_state is damaged.
    if not os.path.isdir(os.path.join(step_dir, "opt_state")) and self.read_meta(step).get("weights_only"):
      raise CheckpointError(f"Checkpoint {step_dir} holds weights only (converted from a release): sample from it "
                            "with vdit.sample; training cannot resume from it.")
    names = STATE_ITEMS + ((AUX_ITEM,) if AUX_ITEM in target else ())
    self._require_items(step, names)
    items = {name: ocp.args.StandardRestore(_abstract(target[name])) for name in names}
    if os.path.isdir(os.path.join(step_dir, "data_state")):
      items["data_state"] = ocp.args.JsonRestore()
    elif legacy_data_args is not None and os.path.isdir(os.path.join(step_dir, "data")):
      saved = sorted(f for f in os.listdir(os.path.join(step_dir, "data")) if f.startswith("process_"))
      if f"process_{jax.process_index()}-of-{jax.process_count()}.json" not in saved:
        raise CheckpointError(f"Checkpoint {step_dir} stores the data position per process ({saved}); "
                              f"resume it with the same number of processes ({len(saved)}), not "
                              f"{jax.process_count()}.")
      items["data"] = legacy_data_args
    restored = self._read(step, items)
    data_state = dict(restored["data_state"]) if "data_state" in items else None
    return {name: restored[name] for name in names}, data_state

  def restore_item(self, step: int, name: str, target):
    """Restores one item (e.g. 'ema' for sampling) without reading the optimizer state."""
    self._require_items(step, (name,))
    return self._read(step, {name: ocp.args.StandardRestore(_abstract(target))})[name]

  def set_aside(self, step: int, why: str) -> str:
    """Renames step `step` to `N.<why>` (N.<why>-2, ... if taken), a name Orbax neither lists, cleans
    nor garbage-collects, so a new save of step N works and the files stay for inspection; returns
    the new path. Every process calls it (process 0 renames)."""
    old = os.path.join(self.directory, str(step))
    new, n = f"{old}.{why}", 1
    while os.path.exists(new):
      n += 1
      new = f"{old}.{why}-{n}"
    if jax.process_index() == 0:
      os.rename(old, new)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"vdit_set_aside_{step}")
    self._manager.reload()  # its cached step list still holds `step`: GC would count it
    return new

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    # Orbax 0.12 deletes unfinished saves in a thread started on open and not awaited on close: a
    # command that exits right after opening would print that thread's traceback at shutdown.
    getattr(self._manager, "_maybe_await_cleanup_tmp_directory", lambda: None)()
    self._manager.close()

  # `with Checkpointer(...) as c:` closes it on every exit: Orbax's threads must not outlive an error.
  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, workdir_files.CHECKPOINTS_DIR)


def describe_mismatch(saved: dict, current: dict) -> str:
  """Human-readable differences between two flat signature dicts."""
  keys = sorted(set(saved) | set(current))
  diffs = [f"{k}: checkpoint={json.dumps(saved.get(k))} config={json.dumps(current.get(k))}"
           for k in keys if saved.get(k) != current.get(k)]
  return "; ".join(diffs)
