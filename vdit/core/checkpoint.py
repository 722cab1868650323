"""Checkpoints (the one module that imports Orbax).

A step directory holds separate items so readers take only what they need: `params`, `ema`,
`opt_state`, `meta` (JSON: step, model signature) and `data_state` (JSON: the data iterator's
position, the same on every process, so a checkpoint resumes on any process count or mesh). Saves are asynchronous; Orbax writes to a temporary directory and renames it when
complete, so a killed save never leaves a checkpoint a reader would accept.
"""
import json
import os

import jax
import orbax.checkpoint as ocp

from vdit.core import workdir_files
from vdit.core.errors import UserError

STATE_ITEMS = ("params", "ema", "opt_state")
# Replicated arrays are saved in slices, one per replica, in parallel; below this many bytes per
# slice the slicing costs more than it saves (thousands of tiny device ops per save on small models).
_MIN_REPLICA_SLICE_BYTES = 1 << 20


class CheckpointError(UserError):
  pass


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
    items = {name: ocp.args.StandardSave(state[name]) for name in STATE_ITEMS}
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
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def restore(self, step: int, target: dict, *, legacy_data_args=None) -> tuple[dict, dict | None]:
    """Restores params/ema/opt_state into the structure and shardings of `target` (arrays or
    ShapeDtypeStructs; any mesh or process count: Orbax reshards on read).

    Returns:
      (state, data_state): data_state is the saved iterator JSON, or None when the step has none.
      A checkpoint from an earlier version keeps the iterator in Grain's per-process `data` item;
      `legacy_data_args` restores it in place (same process count only).
    """
    step_dir = os.path.join(self.directory, str(step))
    if not os.path.isdir(os.path.join(step_dir, "opt_state")):
      raise CheckpointError(f"Checkpoint {step_dir} holds weights only (converted from a release): sample from it "
                            "with vdit.sample; training cannot resume from it.")
    items = {name: ocp.args.StandardRestore(_abstract(target[name])) for name in STATE_ITEMS}
    if os.path.isdir(os.path.join(step_dir, "data_state")):
      items["data_state"] = ocp.args.JsonRestore()
    elif legacy_data_args is not None and os.path.isdir(os.path.join(step_dir, "data")):
      saved = sorted(f for f in os.listdir(os.path.join(step_dir, "data")) if f.startswith("process_"))
      if f"process_{jax.process_index()}-of-{jax.process_count()}.json" not in saved:
        raise CheckpointError(f"Checkpoint {step_dir} stores the data position per process ({saved}); "
                              f"resume it with the same number of processes ({len(saved)}), not "
                              f"{jax.process_count()}.")
      items["data"] = legacy_data_args
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    data_state = dict(restored["data_state"]) if "data_state" in items else None
    return {name: restored[name] for name in STATE_ITEMS}, data_state

  def restore_item(self, step: int, name: str, target):
    """Restores one item (e.g. 'ema' for sampling) without reading the optimizer state."""
    restored = self._manager.restore(step, args=ocp.args.Composite(**{name: ocp.args.StandardRestore(_abstract(target))}))
    return restored[name]

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
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
