"""Metrics of a set of generated videos against reference statistics (pure NumPy on features).

Frechet distances (FVD on video features, FID on frame features) and KID via `vdit.eval.stats`;
text-video alignment from a toy encoder pair; toy adherence via the toy judge; temporal
consistency (cosine similarity of consecutive frame features) and motion magnitude (mean absolute
frame-to-frame change in [0, 1]). Each is computed for the reference clips too, as a yardstick.
"""
import os

import numpy as np

from vdit.toy import spec as toy_spec
from vdit.eval import stats
from vdit.toy import judge as toy
from vdit.toy import pair_judge


def sample_size_problems(c, features, *, num_generated: int, num_reference: int, num_frames: int) -> list[str]:
  """Why a configured metric cannot give a meaningful number with these sample counts, if so."""
  problems = []
  m = c.metrics
  if features is not None:
    need = stats.min_samples_for_frechet(features.video_dim)
    for name, count in (("generated videos", num_generated), ("reference clips", num_reference)):
      if m.fvd and count < need:
        problems.append(f"FVD with {features.video_dim}-dim {features.name} features needs at least "
                        f"{need} {name}, has {count}")
      if m.fid and features.frame_dim and count * num_frames < stats.min_samples_for_frechet(features.frame_dim):
        problems.append(f"FID with {features.frame_dim}-dim frame features needs at least "
                        f"{stats.min_samples_for_frechet(features.frame_dim)} frames of {name}, has "
                        f"{count * num_frames}")
      if m.kid and count < c.kid.subset_size:
        problems.append(f"KID with subsets of {c.kid.subset_size} needs at least that many {name}, has {count}")
  if m.val_loss and num_reference < 1:
    problems.append("the validation loss needs reference clips at least as long as the generated videos")
  return problems


def read_held_out(reference_dir: str) -> set:
  """The reference dataset's held-out combinations and pairs (`toy.load_held_out`); none without one."""
  path = os.path.join(reference_dir, "held_out.json") if reference_dir else ""
  if not path or not os.path.isfile(path):
    return set()
  return toy.load_held_out(path)


def _consecutive_cosine(frame_features_ntd: np.ndarray) -> float:
  f = frame_features_ntd / np.maximum(np.linalg.norm(frame_features_ntd, axis=-1, keepdims=True), 1e-12)
  return float(np.mean(np.sum(f[:, 1:] * f[:, :-1], axis=-1)))


def _motion(videos) -> float:
  return float(np.mean([np.abs(np.diff(v.astype(np.float32), axis=0)).mean() / 255.0 for v in videos]))


def reference_statistics(c, features, aligner, reference_clips, num_frames: int) -> dict:
  """Feature statistics of the reference clips (cut to `num_frames`), computed once per evaluator.

  Clips of several buckets (sizes) go through the feature networks one size at a time."""
  if not reference_clips:
    return {"metrics": {}}
  groups = {}
  for clip in reference_clips:
    groups.setdefault(clip["frames"][:num_frames].shape, []).append(clip)
  out, metrics = {"video": [], "frame": [], "frames_ntd": []}, {}
  alignments = []
  for clips in groups.values():
    videos = np.stack([clip["frames"][:num_frames] for clip in clips])
    if features is not None:
      frame_feats, video_feats = _features(features, videos)
      out["video"].append(video_feats)
      if frame_feats is not None:
        out["frames_ntd"].append(frame_feats)
        out["frame"].append(frame_feats.reshape(-1, frame_feats.shape[-1]))
    if aligner is not None:
      alignments.append(aligner.alignment(videos, [clip["caption"] for clip in clips]))
  out["video"] = np.concatenate(out["video"]) if out["video"] else None
  out["frame"] = np.concatenate(out["frame"]) if out["frame"] else None
  if c.metrics.temporal:
    if out["frames_ntd"]:
      metrics["temporal_consistency"] = float(np.mean([_consecutive_cosine(f) for f in out["frames_ntd"]]))
    metrics["motion"] = _motion([clip["frames"][:num_frames] for clip in reference_clips])
  del out["frames_ntd"]
  if alignments:
    metrics["text_alignment"] = float(np.mean(np.concatenate(alignments)))
  out["metrics"] = metrics
  return out


def _features(features, videos):
  """(frame features [N, T, D] or None, video features [N, D])."""
  if hasattr(features, "frames_and_videos"):
    return features.frames_and_videos(videos)
  return None, features.video_features(videos)


def score(c, videos: np.ndarray, prompts: list, *, features, aligner, reference: dict, held_out: set):
  """Returns (metrics, skipped {metric: reason}, per-video scores) for uint8 videos [N, T, H, W, 3]."""
  m = c.metrics
  metrics, skipped = {}, {}
  per_video = [{} for _ in prompts]
  if features is not None:
    frame_feats, video_feats = _features(features, videos)
    if m.fvd:
      metrics["fvd"] = stats.frechet_distance(video_feats, reference["video"])
    if m.fid:
      if frame_feats is None or reference.get("frame") is None:
        skipped["fid"] = f"{features.name} features have no per-frame features"
      else:
        metrics["fid"] = stats.frechet_distance(frame_feats.reshape(-1, frame_feats.shape[-1]), reference["frame"])
    if m.kid:
      metrics["kid"], metrics["kid_std"] = stats.kernel_inception_distance(
          video_feats, reference["video"], subset_size=c.kid.subset_size, num_subsets=c.kid.num_subsets, seed=c.seed)
    if m.temporal and frame_feats is not None:
      metrics["temporal_consistency"] = _consecutive_cosine(frame_feats)
  if m.temporal:
    metrics["motion"] = _motion(videos)
  if aligner is not None:
    _alignment(aligner, videos, prompts, metrics, per_video)
  if m.toy_adherence:
    _toy_adherence(videos, prompts, held_out, metrics, skipped, per_video)
  return metrics, skipped, per_video


def _alignment(aligner, videos, prompts, metrics, per_video):
  """Mean cosine of each video with its prompt, and how often its prompt ranks first among the
  distinct eval prompts (a retrieval accuracy)."""
  scores = aligner.alignment(videos, prompts)
  metrics["text_alignment"] = float(np.mean(scores))
  distinct = sorted(set(prompts))
  v = aligner.video_features(videos)
  t = aligner.text_features(distinct)
  v = v / np.linalg.norm(v, axis=-1, keepdims=True)
  t = t / np.linalg.norm(t, axis=-1, keepdims=True)
  best = np.argmax(v @ t.T, axis=-1)
  hits = [distinct[b] == p for b, p in zip(best, prompts)]
  metrics["alignment_top1"] = float(np.mean(hits))
  for i, s in enumerate(scores):
    per_video[i]["alignment"] = float(s)
    per_video[i]["alignment_top1"] = bool(hits[i])


def _toy_adherence(videos, prompts, held_out, metrics, skipped, per_video):
  """The toy judge's accuracies: `{split}{colour,shape,direction,all}_accuracy` over one-object
  captions, `{split}{object,pair}_*_accuracy` (`pair_judge.summary`) over two-object ones; split
  is "", "seen_" or "held_out_"."""
  judged, pairs = [], []
  for i, (video, prompt) in enumerate(zip(videos, prompts)):
    objects = toy_spec.parse_objects(prompt)
    if objects is None:
      continue
    if len(objects) == 2:
      verdict = pair_judge.judge_objects(video, objects)
      row = {f"object_{key}_ok": [o[f"{key}_ok"] for o in verdict["objects"]]
             for key in ("colour", "shape", "direction")}
      row.update(pair_colour_direction_ok=verdict["pair_colour_direction_ok"], pair_all_ok=verdict["pair_all_ok"],
                 held_out=toy_spec.pair_key(objects) in held_out)
      per_video[i].update(row)
      pairs.append({**verdict, "held_out": row["held_out"]})
      continue
    colour, shape, direction = objects[0]
    verdict = toy.judge_video(video, colour, direction, shape)
    row = {"colour_ok": verdict["colour_ok"], "shape_ok": verdict["shape_ok"],
           "direction_ok": verdict["direction_ok"], "held_out": objects[0] in held_out}
    row["all_ok"] = row["colour_ok"] and row["shape_ok"] and row["direction_ok"]
    per_video[i].update(row)
    judged.append(row)
  if not judged and not pairs:
    skipped["toy_adherence"] = "no prompt is a toy caption"
    return
  for split, keep in (("", lambda r: True), ("seen_", lambda r: not r["held_out"]),
                      ("held_out_", lambda r: r["held_out"])):
    if judged:
      rows = [r for r in judged if keep(r)]
      for key in ("colour", "shape", "direction", "all"):
        metrics[f"{split}{key}_accuracy"] = float(np.mean([r[f"{key}_ok"] for r in rows])) if rows else None
    if pairs:
      for name, value in pair_judge.summary([r for r in pairs if keep(r)]).items():
        if name != "num_videos":
          metrics[f"{split}{name}"] = value
