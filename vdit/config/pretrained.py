"""A trained workdir for inference: its upgraded config as an Experiment, and its checkpoints checked
against that config before any weights are read (the one signature check every reader shares)."""
from vdit.config import config_io, experiment
from vdit.core import checkpoint as ckpt_lib
from vdit.core import finite
from vdit.model import factory


def load_config(workdir: str):
  """The workdir's config.json, upgraded, made runnable here (config_io.for_inference), frozen."""
  return experiment.freeze(config_io.for_inference(config_io.load(workdir)))


def check_signature(checkpointer, step: int, config, workdir: str) -> None:
  """CheckpointError unless checkpoint `step` was written for this config's model shapes."""
  saved = checkpointer.read_meta(step).get("model_signature", {})
  current = config_io.model_signature(config)
  if saved != current:
    raise ckpt_lib.CheckpointError(f"Checkpoint step {step} does not match {workdir}/config.json: "
                                   f"{ckpt_lib.describe_mismatch(saved, current)}.")


class Checkpoints:
  """Read-only access to a workdir's DiT checkpoints: steps chosen and checked, weights restored
  sharded on `mesh`. Use as a context manager (closes Orbax's resources)."""

  def __init__(self, workdir: str, config, mesh):
    self.workdir, self.config, self.mesh = workdir, config, mesh
    self._checkpointer = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(workdir), read_only=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._checkpointer.close()

  def select(self, which) -> list[int]:
    """Steps for `which` (an int, "latest", "all", None = latest), each checked against the config."""
    steps = self._checkpointer.select_steps("latest" if which is None else which)
    for step in steps:
      check_signature(self._checkpointer, step, self.config, self.workdir)
    return steps

  def restore(self, step: int, ema: bool = True):
    """The generator's parameters at `step` (EMA or raw), sharded like training shards them;
    CheckpointError if any is not finite (a diverged run: sampling them gives black frames)."""
    params = self._checkpointer.restore_item(step, "ema" if ema else "params",
                                             factory.abstract_params(self.config, self.mesh))
    if not bool(finite.all_finite(params)):
      earlier = [s for s in self._checkpointer.all_steps() if s < step]
      choose = (f"choose an earlier one (kept: {', '.join(map(str, sorted(earlier)))}) with --checkpoint_step=N "
                "(vdit.sample) or --checkpoint=N (vdit.evaluate)" if earlier else
                "no earlier checkpoint is kept: retrain (e.g. with a lower optim.peak_lr)")
      raise ckpt_lib.CheckpointError(f"Checkpoint step {step} in {self.workdir} holds non-finite "
                                     f"{'EMA ' if ema else ''}weights (the run diverged); {choose}.")
    return params
