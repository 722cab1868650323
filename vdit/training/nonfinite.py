"""What the loop does about steps whose loss, gradient norm or updated weights are not finite.

Each jitted step reports `nonfinite` (1.0 for such a step) and, with config.train.nonfinite="skip",
drops that update itself. The loop reads the flags only when it fetches the metrics anyway (at log
steps and right before each checkpoint save) and hands them to `Guard.check`, which raises
`TrainingDiverged` before anything of the window is written: with "stop" at the first non-finite
step, with "skip" after train.max_consecutive_skips of them in a row.
"""
from vdit.core.errors import ConfigError, ExplainedFailure

POLICIES = ("stop", "skip")


class TrainingDiverged(ExplainedFailure):
  """Training stopped on non-finite values; the message names the step, the last checkpoint and the
  fix. Not bad input (a UserError) and not a bug: `python -m vdit.main` prints it as one line and
  exits 3."""


def skips(train) -> bool:
  """Whether steps drop non-finite updates (train.nonfinite="skip"); ConfigError for a bad setting.
  Trainers call it while building the step, before anything is written."""
  if train.nonfinite not in POLICIES:
    raise ConfigError(f"config.train.nonfinite={train.nonfinite!r}; choose one of {POLICIES}.")
  if not (isinstance(train.max_consecutive_skips, int) and train.max_consecutive_skips >= 1):
    raise ConfigError(f"config.train.max_consecutive_skips={train.max_consecutive_skips!r} must be an int >= 1.")
  return train.nonfinite == "skip"


class Guard:
  """Counts non-finite steps from the fetched flags and decides when the run must stop.

  `last_checkpoint` (None: none yet) and `last_written` (the last step with metrics or a checkpoint
  on disk) name, in the error, what a rerun resumes from; the loop updates them as it writes.
  """

  def __init__(self, train, start_step: int):
    self.skip = skips(train)
    self.max_skips = train.max_consecutive_skips
    self.last_checkpoint = start_step or None  # a resumed run starts from a checkpoint
    self.last_written = start_step
    self._checked = start_step  # steps up to here have been looked at
    self._skipped = []  # the current run of consecutive non-finite (skipped) steps

  def check(self, step: int, flags) -> None:
    """flags: the `nonfinite` metric of each step up to `step`, oldest first (steps seen before are
    passed over). Raises TrainingDiverged when the run must stop."""
    for s, flag in enumerate(flags, step - len(flags) + 1):
      if s <= self._checked:
        continue
      self._checked = s
      if not flag:
        self._skipped = []
      elif not self.skip:
        raise self._diverged(f"the loss, gradient norm or updated weights were not finite at step {s}",
                             "Lower optim.peak_lr or set train.nonfinite=skip")
      else:
        self._skipped.append(s)
        if len(self._skipped) >= self.max_skips:
          raise self._diverged(
              f"{len(self._skipped)} steps in a row ({self._skipped[0]}-{s}) had a non-finite loss, gradient "
              f"norm or updated weights and were skipped (train.max_consecutive_skips={self.max_skips})",
              "Lower optim.peak_lr")

  def nonfinite_state(self, step: int) -> TrainingDiverged:
    """The error for a state found non-finite at a save (the step flags should have caught it)."""
    return self._diverged(f"the train state at step {step} holds non-finite values", "Lower optim.peak_lr")

  def _diverged(self, what: str, fix: str) -> TrainingDiverged:
    after = f" after step {self.last_written}" if self.last_written else ""
    if self.last_checkpoint is None:
      where, rerun = "there is no checkpoint", "start over"
    else:
      where, rerun = f"the last checkpoint is step {self.last_checkpoint}", f"resume from step {self.last_checkpoint}"
    return TrainingDiverged(f"training diverged: {what}; nothing was written{after} ({where}). {fix}, then "
                            f"rerun the same command to {rerun}.")
