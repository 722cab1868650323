"""Writes one evaluation's files: videos, results.json, the cross-step plots and the HTML pages.

  OUT/step_{step:08d}/{results.json, index.html, videos/NNN.webm, videos/NNN.mp4}
  OUT/plots/{metrics_vs_step.png, val_loss_by_timestep.png}, OUT/index.html (every step)

results.json is written after the videos, so a step directory with results.json is complete.
A video the eval's safety policy blocked is not written (its entry has no file paths).
"""
import glob
import json
import os

from vdit.media import video_io
from vdit.data import dataset_files
from vdit.eval import gallery, plots

RESULTS = "results.json"


def read_history(out_dir: str) -> list[dict]:
  """Every step's results.json under out_dir, by step."""
  history = []
  for path in sorted(glob.glob(os.path.join(out_dir, "step_*", RESULTS))):
    with open(path, encoding="utf-8") as f:
      history.append(json.load(f))
  return sorted(history, key=lambda r: r["step"])


def write(out_dir: str, results: dict, videos, gallery_config) -> str:
  """Writes the step's files and refreshes the overview; returns the step's results.json path."""
  step_dir = os.path.join(out_dir, gallery.step_dirname(results["step"]))
  os.makedirs(os.path.join(step_dir, "videos"), exist_ok=True)
  results_path = os.path.join(step_dir, RESULTS)
  if os.path.exists(results_path):  # a re-evaluation: the old results go first, not last
    os.remove(results_path)
  g = gallery_config
  for entry, video in zip(results["videos"][:g.max_videos], videos):
    if entry.get("safety", {}).get("decision") == "blocked":
      continue
    name = f"videos/{entry['index']:03d}"
    frames = video.repeat(g.scale, axis=1).repeat(g.scale, axis=2)
    video_io.write_video(os.path.join(step_dir, name + ".webm"), frames, g.fps, codec="libvpx-vp9", container="webm")
    video_io.write_mp4(os.path.join(step_dir, name + ".mp4"), video, g.fps, scale=g.scale)
    entry["webm"], entry["mp4"] = name + ".webm", name + ".mp4"
  dataset_files.write_json(results_path, results)
  history = read_history(out_dir)
  names = plots.write_plots(os.path.join(out_dir, "plots"), history)
  gallery.write_gallery(step_dir, results, [f"../plots/{n}" for n in names])
  gallery.write_overview(out_dir, history, [f"plots/{n}" for n in names])
  return results_path
