"""Evaluation plots across checkpoints: every scalar metric against step, and val loss against t.

`write_plots(plot_dir, history)` takes the `results.json` dicts of several evaluated steps (the
schema `vdit.eval.gallery` documents) and writes PNGs for the HTML report. Figures are drawn on
matplotlib's Agg canvas directly (no pyplot), so importing or calling this never changes the
process-wide backend or keeps figures alive.
"""
import io
import math
import os
import uuid
from typing import Sequence

import matplotlib
from matplotlib import cm
from matplotlib import colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
import numpy as np

METRICS_PLOT = "metrics_vs_step.png"
VAL_LOSS_PLOT = "val_loss_by_timestep.png"

# Headline metrics first, in this order; any other metric follows alphabetically.
METRIC_ORDER = (
    "fvd", "fid", "kid", "kid_std", "text_alignment", "text_alignment_reference",
    "colour_accuracy", "shape_accuracy", "direction_accuracy", "held_out_colour_accuracy",
    "temporal_consistency", "motion", "val_loss")
_COLUMNS = 4
_CELL_INCHES = (3.2, 2.3)
_DPI = 100
_MAX_LEGEND_ENTRIES = 10  # more curves than this get a step colour bar instead of a legend
_MAX_STEP_TICKS = 6  # up to this many checkpoints, tick exactly at each evaluated step
# viridis without its pale yellow end, which barely shows on white.
_STEP_COLOURS = colors.ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, 256)))


def is_scalar(value) -> bool:
  """True for a finite int or float (not bool): what a metric plot or table can show as a number."""
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def metric_names(history: Sequence[dict]) -> list[str]:
  """Metrics with a finite value in any result: METRIC_ORDER first, then the rest sorted."""
  present = {name for result in history
             for name, value in (result.get("metrics") or {}).items() if is_scalar(value)}
  ordered = [name for name in METRIC_ORDER if name in present]
  return ordered + sorted(present - set(ordered))


def sort_by_step(history: Sequence[dict]) -> list[dict]:
  """The results ordered by checkpoint step; ValueError names a result without an integer step."""
  for i, result in enumerate(history):
    if not isinstance(result, dict) or isinstance(result.get("step"), bool) \
        or not isinstance(result.get("step"), int):
      found = result.get("step") if isinstance(result, dict) else type(result).__name__
      raise ValueError(f"history[{i}] needs an integer 'step' (a results.json dict), got {found!r}")
  return sorted(history, key=lambda result: result["step"])


def write_plots(plot_dir: str, history: Sequence[dict]) -> list[str]:
  """Writes the cross-step plots into plot_dir.

  Args:
    plot_dir: destination directory (created if missing).
    history: results.json dicts of any number of steps, in any order.
  Returns:
    The file names written (relative to plot_dir): METRICS_PLOT when any result has a finite
    metric, VAL_LOSS_PLOT when any result has `val_loss_by_timestep`.
  """
  history = sort_by_step(history)
  os.makedirs(plot_dir, exist_ok=True)
  written = []
  for name, draw in ((METRICS_PLOT, _draw_metrics), (VAL_LOSS_PLOT, _draw_val_loss)):
    figure = draw(history)
    if figure is not None:
      buffer = io.BytesIO()
      FigureCanvasAgg(figure).print_png(buffer)
      _write_atomic(os.path.join(plot_dir, name), buffer.getvalue())
      written.append(name)
  return written


def _draw_metrics(history: list[dict]) -> Figure | None:
  names = metric_names(history)
  if not names:
    return None
  cols = min(_COLUMNS, len(names))
  rows = math.ceil(len(names) / cols)
  figure = Figure(figsize=(_CELL_INCHES[0] * cols, _CELL_INCHES[1] * rows), dpi=_DPI,
                  layout="constrained")
  axes = figure.subplots(rows, cols, squeeze=False).ravel()
  all_steps = sorted({r["step"] for r in history})
  # One x range for every subplot, so a metric measured at fewer steps still lines up.
  pad = max(1.0, 0.05 * (all_steps[-1] - all_steps[0]))
  for ax, name in zip(axes, names):
    points = [(r["step"], r["metrics"][name]) for r in history
              if is_scalar((r.get("metrics") or {}).get(name))]
    steps, values = zip(*points)
    ax.plot(steps, values, marker="o", markersize=4, linewidth=1.2)
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_xlim(all_steps[0] - pad, all_steps[-1] + pad)
    if len(all_steps) <= _MAX_STEP_TICKS:
      ax.set_xticks(all_steps)
      if all_steps[-1] >= 10_000:  # long labels at every step would overlap
        ax.tick_params(axis="x", labelrotation=30)
    else:
      ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.grid(alpha=0.3)
  for ax in axes[len(names):]:
    ax.set_visible(False)
  return figure


def _loss_curve(result: dict) -> tuple[list, list] | None:
  """(timesteps, losses) with null or non-finite points dropped; ValueError on a malformed entry."""
  curve = result.get("val_loss_by_timestep")
  if not curve:
    return None
  if not isinstance(curve, dict):
    raise ValueError(f"step {result['step']}: val_loss_by_timestep must be a dict with 'timesteps' "
                     f"and 'loss' lists, got {type(curve).__name__}")
  timesteps, losses = curve.get("timesteps") or [], curve.get("loss") or []
  if len(timesteps) != len(losses):
    raise ValueError(
        f"step {result['step']}: val_loss_by_timestep has {len(timesteps)} timesteps but "
        f"{len(losses)} losses; the evaluator must write one loss per timestep")
  points = [(t, loss) for t, loss in zip(timesteps, losses) if is_scalar(t) and is_scalar(loss)]
  return tuple(map(list, zip(*points))) if points else None


def _draw_val_loss(history: list[dict]) -> Figure | None:
  curves = [(r["step"], curve) for r in history if (curve := _loss_curve(r)) is not None]
  if not curves:
    return None
  figure = Figure(figsize=(5.5, 3.5), dpi=_DPI, layout="constrained")
  ax = figure.subplots()
  steps = [step for step, _ in curves]
  norm = colors.Normalize(min(steps), max(steps))  # colour encodes the step, as on the colour bar
  for step, (timesteps, losses) in curves:
    ax.plot(timesteps, losses, marker="o", markersize=4, color=_STEP_COLOURS(norm(step)),
            label=f"step {step}")
  if len(curves) <= _MAX_LEGEND_ENTRIES:
    ax.legend(fontsize=8)
  else:
    figure.colorbar(cm.ScalarMappable(norm=norm, cmap=_STEP_COLOURS), ax=ax, label="step")
  ax.set_xlabel("diffusion time t")
  ax.set_ylabel("validation loss")
  ax.set_title("validation loss by timestep", fontsize=10)
  ax.grid(alpha=0.3)
  return figure


def _write_atomic(path: str, data: bytes) -> None:
  tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
  try:
    with open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
