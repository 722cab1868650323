"""The evaluator: sample an eval prompt set from parameters, score it, write results and pages.

Shared by `vdit.evaluate` (any checkpoint of a workdir) and the trainer's periodic evaluation.
Everything that can be checked without sampling is checked in the constructor (configs, feature
weights, reference size), and the reference statistics are computed once there.
"""
import json
import os
import time

import numpy as np

from vdit.vae import latents
from vdit.parallel import sharding
from vdit.model import factory
from vdit.core.errors import ConfigError
from vdit.data import dataset_files
from vdit.eval import eval_config as eval_config_lib
from vdit.eval import scores, val_loss
from vdit.diffusion.generation import VideoSampler
from vdit.diffusion.options import SampleOptions
from vdit.media import pixels
from vdit.text import conditioner


class EvalError(ConfigError):
  """The evaluation cannot give a meaningful number as configured (e.g. too few samples)."""


def load_features(kind: str, path: str, *, mesh, batch_size: int):
  if kind == "toy":
    from vdit.eval.toy_features import ToyFeatures
    return ToyFeatures(path, mesh=mesh, batch_size=batch_size)
  from vdit.eval.i3d import I3DFeatures
  return I3DFeatures(path, mesh=mesh, batch_size=batch_size)


def eval_prompts(c, reference_clips) -> list[str]:
  if c.prompts == "toy":
    from vdit.toy import prompts as toy_prompts
    return toy_prompts.eval_prompts(c.reference_dir, c.toy_prompts.num_seen, c.toy_prompts.repeats, seed=c.seed)
  if c.prompts == "reference":
    return [clip["caption"] for clip in reference_clips[:c.num_prompts]]
  with open(c.prompts, encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip()]


def validation_clip(frames, space, patch_frames: int):
  """A validation clip as the model sees it: uint8 pixels over the longest whole number of
  temporal patches, or (latent model) its normalised VAE latents over the longest 1 + 4k frames."""
  if not space.is_latent:
    return frames[:frames.shape[0] // patch_frames * patch_frames]
  tf = space.temporal_factor
  frames = frames[:1 + (frames.shape[0] - 1) // tf * tf]
  return np.asarray(space.encode(pixels.to_model_space(frames[None])))[0]


class Evaluator:

  def __init__(self, model_config, eval_config, *, workdir: str, out_dir: str, mesh):
    eval_config_lib.validate(eval_config)
    self.config, self.c = model_config, eval_config
    self.workdir, self.out_dir, self.mesh = os.path.abspath(workdir), out_dir, mesh
    c, s = eval_config, model_config.sample
    self.tokenizer = conditioner.for_sampling(model_config, mesh)
    self.space = latents.from_config(model_config)
    self.shape = (s.num_frames, s.height, s.width)

    reference = []
    if c.reference_dir:
      available = dataset_files.read_metadata(c.reference_dir)["num_clips"]
      reference = dataset_files.read_clips(c.reference_dir, limit=min(c.num_reference, available), seed=c.seed)
    self.prompts = eval_prompts(c, reference)
    if not self.prompts:
      raise EvalError("the eval prompt set is empty; check eval config `prompts`.")
    self.tokenizer.encode_batch(self.prompts)  # a prompt too long for the model: PromptError
    self.safety = None
    if c.safety.policy:
      from vdit.eval.safety_stage import SafetyStage
      from vdit.safety import policy
      self.safety = SafetyStage(policy.load(c.safety.policy), self.prompts)
    self.seeds = [c.seed + i for i in range(len(self.prompts))]
    self.features = self.aligner = None
    if c.features.path and any(c.metrics[m] for m in ("fvd", "fid", "kid", "temporal")):
      self.features = load_features(c.features.kind, c.features.path, mesh=mesh, batch_size=c.features.batch_size)
    if c.metrics.alignment:
      path = c.alignment.path or c.features.path
      self.aligner = self.features if path == c.features.path and c.features.kind == "toy" else \
          load_features("toy", path, mesh=mesh, batch_size=c.features.batch_size)
    # Reference clips as long as the generated ones (longer ones cut; shorter ones left out).
    self.reference = [clip for clip in reference if clip["frames"].shape[0] >= self.shape[0]]
    ref_videos = [clip["frames"][:self.shape[0]] for clip in self.reference]
    problems = scores.sample_size_problems(c, self.features, num_generated=len(self.prompts),
                                           num_reference=len(ref_videos), num_frames=self.shape[0])
    if problems:
      raise EvalError("cannot compute, as configured: " + "; ".join(problems) + ". Prepare more "
                      "reference clips, raise the number of eval prompts, or turn the metric off "
                      f"(eval config metrics.NAME=False). Reference: {c.reference_dir!r}.")
    self.held_out = scores.read_held_out(c.reference_dir)
    t0 = time.time()
    self.reference_stats = scores.reference_statistics(c, self.features, self.aligner, self.reference,
                                                       self.shape[0])
    self.timing = {"reference_features_s": round(time.time() - t0, 2)}

    graphdef, _ = factory.abstract_model(model_config)
    self.sampler = VideoSampler(graphdef, None, self.tokenizer, mesh=mesh, space=self.space)
    self.loss_fn = val_loss.make_loss_fn(graphdef) if c.metrics.val_loss else None
    val_clips = self.reference[:c.val.num_clips] if c.metrics.val_loss else []
    self.val_videos = [validation_clip(clip["frames"], self.space, model_config.model.patch_size[0])
                       for clip in val_clips]
    self.val_tokens = self.tokenizer.encode_batch([clip["caption"] for clip in val_clips], truncate=True)

  def sample(self, params) -> np.ndarray:
    """uint8 videos [N, T, H, W, 3] for the prompt set, in batches of eval sample.batch_size."""
    s, e = self.config.sample, self.c.sample
    self.sampler.params = params
    opts = dict(num_frames=self.shape[0], height=self.shape[1], width=self.shape[2],
                channels=3 if self.space.is_latent else self.config.model.in_channels, patch_size=tuple(self.config.model.patch_size),
                **SampleOptions.from_section(s, steps=e.steps or None, cfg=None if e.cfg < 0 else e.cfg,
                                             sampler=e.sampler or None, cache=e.cache or None).generate_kwargs())
    videos = []
    self.sampler.network_passes = 0
    for start in range(0, len(self.prompts), e.batch_size):
      batch = slice(start, start + e.batch_size)
      x = self.sampler.generate(self.prompts[batch], self.seeds[batch], **opts)
      videos.append(pixels.to_uint8(sharding.to_host(x)))
    self.sample_options = {k: v for k, v in opts.items() if k not in ("channels", "patch_size")}
    self.sample_options["network_passes_per_video"] = self.sampler.network_passes / max(len(self.prompts), 1)
    return np.concatenate(videos)

  def validation_loss(self, params) -> dict:
    if not self.val_videos:
      return {}
    timesteps = [float(t) for t in self.c.val.timesteps]
    losses = val_loss.validation_loss(self.loss_fn, params, self.val_videos, *self.val_tokens,
                                      timesteps=timesteps, seed=self.c.seed, mesh=self.mesh,
                                      batch_size=self.c.val.batch_size)
    return {"timesteps": timesteps, "loss": losses, "num_clips": len(self.val_videos)}

  def run(self, params, step: int, *, write: bool = True) -> dict:
    """Samples, scores and (on process 0) writes OUT/step_{step:08d}/; returns the results dict."""
    timing = dict(self.timing)
    t0 = time.time()
    videos = self.sample(params)
    timing["sampling_s"] = round(time.time() - t0, 2)
    t0 = time.time()
    metrics, skipped, per_video = scores.score(self.c, videos, self.prompts, features=self.features,
                                               aligner=self.aligner, reference=self.reference_stats,
                                               held_out=self.held_out)
    timing["scoring_s"] = round(time.time() - t0, 2)
    t0 = time.time()
    val = self.validation_loss(params)
    if val:
      metrics["val_loss"] = float(np.mean(val["loss"]))
    timing["val_loss_s"] = round(time.time() - t0, 2)
    safety = None
    if self.safety:
      t0 = time.time()
      safety = self.safety.review(videos)
      videos = safety[2]  # the gallery shows what vdit.sample would write
      metrics["safety_blocked_rate"], metrics["safety_flagged_rate"] = (safety[0]["blocked_rate"],
                                                                        safety[0]["flagged_rate"])
      timing["safety_s"] = round(time.time() - t0, 2)
    results = self._results(step, metrics, skipped, per_video, val, timing, safety)
    if write:
      import jax
      if jax.process_index() == 0:
        from vdit.eval import report
        report.write(self.out_dir, results, videos, self.c.gallery)
    return results

  def _results(self, step, metrics, skipped, per_video, val, timing, safety=None) -> dict:
    from vdit.media import provenance
    eval_config = json.loads(self.c.to_json())
    if not self.c.safety.policy:
      del eval_config["safety"]  # off: results.json exactly as before policies existed
    results = {
        "format": "vdit-eval", "version": 1, "eval_name": self.c.name, "step": int(step),
        "workdir": self.workdir, "config_hash": provenance.config_hash(self.workdir),
        "vdit_version": provenance.version(), "eval_config": eval_config,
        "sample_options": self.sample_options, "seeds": self.seeds, "num_samples": len(self.prompts),
        "num_reference": len(self.reference), "metrics": metrics, "skipped": skipped,
        "reference_metrics": self.reference_stats.get("metrics", {}),
        "features": {"kind": self.c.features.kind, "path": os.path.abspath(self.c.features.path)}
                    if self.features else None,
        "videos": [{"index": i, "prompt": p, "seed": seed, "scores": per_video[i]}
                   for i, (p, seed) in enumerate(zip(self.prompts, self.seeds))],
        "timing": timing,
    }
    if val:
      results["val_loss_by_timestep"] = val
    if safety:
      results["safety"] = safety[0]
      for entry, record in zip(results["videos"], safety[1]):
        entry["safety"] = record
    return results
