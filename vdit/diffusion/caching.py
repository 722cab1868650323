"""Training-free caching for sampling: fewer network passes per video, for any model.

  none   every step runs the network (2 passes per guided step: conditional and unconditional).
  cfg    CFG cache: the guidance difference d = v(text) - v(negative) changes slowly along the
         trajectory, so a full guided step runs both passes only on every CFG_REFRESH-th guided
         step (and the first); the steps between run the conditional pass alone and add the last
         full step's difference: v = v(text) + (cfg - 1) d. Guided steps cost 1 + 1/CFG_REFRESH
         passes instead of 2.
  block  whole-network reuse (TeaCache-style, decided on the network's input): a step reuses the
         last computed velocity when the input has moved, since the step that computed it, by less
         than BLOCK_THRESHOLD in relative L1 (mean |x - x_computed| / mean |x_computed|), and at
         most BLOCK_MAX_REUSE steps in a row; the first and last steps always compute. Reused steps
         cost no pass.

The decision is per batch (all its videos reuse together) and made on the host between steps, so
the network really does not run on a reused step. `Cache.passes` counts the passes run per video.
"""
import jax.numpy as jnp

MODES = ("none", "cfg", "block")
CFG_REFRESH = 4
BLOCK_THRESHOLD = 0.15
BLOCK_MAX_REUSE = 2


def mode_error(mode: str, *, frame_cfg=None) -> str | None:
  """Why `mode` cannot be used here, or None."""
  if mode not in MODES:
    return f"cache={mode!r} is not a cache mode; choose one of {MODES}."
  if mode == "cfg" and frame_cfg is not None:
    return ("cache='cfg' reuses the text-guidance difference alone; with frame_cfg (separate frame guidance) use "
            "cache='block' or 'none'.")
  return None


class Cache:
  """The state of one generate call: what to run at each step, what it cost."""

  def __init__(self, mode: str, num_steps: int):
    self.mode, self.num_steps = mode, num_steps
    self.passes = 0  # network passes per video so far
    self.delta = None  # cfg: the last full step's guidance difference
    self.velocity = None  # block: the last computed velocity and the input it was computed at
    self._computed_at = None
    self._guided_steps = 0
    self._reused_in_a_row = 0

  def cfg_full_step_due(self) -> bool:
    """For a guided step under cfg caching: True when this step runs both passes."""
    due = self.delta is None or self._guided_steps % CFG_REFRESH == 0
    self._guided_steps += 1
    return due

  def reuse(self, index: int, x) -> bool:
    """For block caching: True when step `index` (0-based) reuses the last computed velocity at input x."""
    if self.mode != "block" or self.velocity is None or index == self.num_steps - 1:
      return False
    if self._reused_in_a_row >= BLOCK_MAX_REUSE:
      self._reused_in_a_row = 0
      return False
    change = float(jnp.abs(x - self._computed_at).mean() / jnp.maximum(jnp.abs(self._computed_at).mean(), 1e-12))
    if change >= BLOCK_THRESHOLD:
      self._reused_in_a_row = 0
      return False
    self._reused_in_a_row += 1
    return True

  def computed(self, x, velocity):
    """Records a step that ran the network at input x (block caching keeps both)."""
    if self.mode == "block":
      self._computed_at, self.velocity = x, velocity
