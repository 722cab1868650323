"""The trainer: `train_and_evaluate(config, workdir)`, read top to bottom in sections.

setup -> mesh -> input -> state (create or resume) -> compiled step -> loop (log, sample,
checkpoint, preemption). Re-running with the same workdir resumes exactly from the latest
checkpoint, data iterator included.
"""
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from vdit.core import workdir_files
from vdit.core import checkpoint as ckpt_lib
from vdit.config import config_io
from vdit.vae import latents
from vdit.parallel import sharding
from vdit.training import train_state
from vdit.model import factory
from vdit.training import throughput as throughput_lib
from vdit.data import bucket_plan, dataset_files, pipeline
from vdit.diffusion import conditioning
from vdit.training.jsonl_writer import JsonlWriter
from vdit.diffusion.generation import VideoSampler
from vdit.media import pixels
from vdit.text import conditioner
from vdit.text.tokenizer import Tokenizer
from vdit.training.dit_step import make_train_step


class PreemptionFlag:
  """Set by SIGTERM (and JAX's preemption notice on TPU); the loop saves and exits cleanly."""

  def __init__(self):
    self.requested = False
    if threading.current_thread() is threading.main_thread():
      signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: writing a final checkpoint before exiting.")
    self.requested = True

  def should_stop(self, step: int, sync: bool) -> bool:
    """Single process: the local flag. Multi-process: JAX's preemption sync point every step, and
    the hosts' SIGTERM flags combined at `sync` steps, so all hosts stop at the same step."""
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils
    try:
      if multihost_utils.reached_preemption_sync_point(step):
        return True
    except RuntimeError:  # no preemption service outside managed TPU/GPU runtimes
      pass
    return sync and bool(np.any(multihost_utils.process_allgather(np.asarray(self.requested))))


def _plan_buckets(config, batch_multiple: int):
  """The dataset's buckets with batch sizes and step shares (vdit.data.bucket_plan)."""
  d = config.data
  metadata = dataset_files.read_metadata(d.dir)
  return bucket_plan.plan(metadata["buckets"], patch_size=tuple(config.model.patch_size),
                          global_batch_size=config.train.global_batch_size,
                          tokens_per_batch=d.tokens_per_batch, batch_multiple=batch_multiple,
                          max_frames=d.num_frames, image_ratio=d.image_ratio)


def resolve_config(config):
  """Fills settings that come from the data and tokenizer (recorded in the workdir's config.json):
  the tokenizer's vocabulary size and the default sample size (the most common video bucket, in
  pixels also for a latent cache). Checks the data is what the config trains on (pixels, or
  latents of the configured VAE)."""
  config = config.copy_and_resolve_references()
  config_io.validate(config)
  if config.train.get("grad_accum_steps", 1) < 1:
    raise config_io.ConfigError(f"config.train.grad_accum_steps={config.train.grad_accum_steps} must be >= 1.")
  space = latents.from_config(config)
  latents.check_cache(config, dataset_files.read_metadata(config.data.dir), config.data.dir)
  buckets = _plan_buckets(config, batch_multiple=1)
  videos = [b for b in buckets if not b.is_image] or buckets
  common = max(videos, key=lambda b: b.num_clips)
  frames, height, width = space.pixel_size(common.frames, common.height, common.width)
  s = config.sample
  with config.unlocked():
    if config.text.get("encoder", "trainable") == "trainable":
      config.text.vocab_size = config.text.vocab_size or Tokenizer(config.text.max_length).vocab_size
    s.num_frames, s.height, s.width = s.num_frames or frames, s.height or height, s.width or width
  config_io.check_video_size(config, *space.model_shape(s.num_frames, s.height, s.width)[:3], "config.sample size")
  return config


def _check_compatible(checkpointer, step, config, workdir):
  saved = checkpointer.read_meta(step).get("model_signature", {})
  current = config_io.model_signature(config)
  if saved != current:
    raise ckpt_lib.CheckpointError(
        f"Workdir {workdir!r} holds a checkpoint (step {step}) from a different model config: "
        f"{ckpt_lib.describe_mismatch(saved, current)}. Use a new --workdir, or restore the original config.")


def _global_batch(local_batch, mesh):
  """Host-local numpy batch -> global jax arrays sharded over the batch axes (multi-host safe)."""
  def put(x):
    global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding.batch_sharding(mesh, x.ndim), x, global_shape)
  return {k: put(np.asarray(v)) for k, v in local_batch.items()}


def write_samples(config, sampler, state, step, workdir, writer):
  """Samples the config's prompts with EMA weights; writes GIFs and a contact sheet summary."""
  from vdit.media import video_io
  s = config.sample
  sampler.params = state["ema"]
  videos = sampler.generate(s.prompts, list(range(len(s.prompts))),
                            num_frames=s.num_frames, height=s.height, width=s.width,
                            channels=config.model.in_channels, patch_size=config.model.patch_size,
                            steps=config.sample.steps, cfg=config.sample.cfg, sampler=config.sample.sampler,
                            shift=config.sample.shift, negative_prompt=config.sample.negative_prompt,
                            guidance_interval=tuple(config.sample.guidance_interval))
  videos = pixels.to_uint8(videos)
  if jax.process_index() == 0:
    out = os.path.join(workdir, "samples", f"step_{step:08d}")
    os.makedirs(out, exist_ok=True)
    for i, video in enumerate(videos):
      video_io.write_gif(os.path.join(out, f"{i:03d}.gif"), video, fps=8, scale=4)
    sheet = video_io.contact_sheet(list(videos))
    writer.write_images(step, {"samples": sheet[None]})


def _make_periodic_eval(config, workdir, mesh, writer):
  """A clu periodic action running the eval config on the EMA weights every eval.every_steps."""
  e = config.eval
  if not e.every_steps:
    return None
  from vdit.core.errors import ConfigError
  from vdit.eval import eval_config as eval_config_lib
  from vdit.eval.evaluator import Evaluator
  if not e.config:
    raise ConfigError("config.eval.every_steps is set but config.eval.config names no eval config "
                      "(e.g. configs/evals/toy.py).")
  eval_config = eval_config_lib.load(e.config)
  eval_config_lib.apply_overrides(eval_config, e.overrides)  # locked: a misspelt key is an error
  evaluator = Evaluator(config, eval_config, workdir=workdir, mesh=mesh,
                        out_dir=os.path.join(workdir, "eval", eval_config.name))

  def run_eval(step, t, state):
    del t
    results = evaluator.run(state["ema"], step)
    scalars = {f"eval/{k}": v for k, v in results["metrics"].items() if v is not None}
    writer.write_scalars(step, scalars)
    logging.info("Step %d eval (%s): %s", step, eval_config.name,
                 ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))

  # Called as action(step, state=state) every step; runs the callback on multiples of every_steps.
  return periodic_actions.PeriodicCallback(every_steps=e.every_steps, callback_fn=run_eval)


def build_train_step(config, mesh, tx, tokenizer):
  """The jitted step: state donated, state shardings pinned, activation rules applied while tracing.

  jit compiles once per batch shape (bucket) and caches it."""
  graphdef, _ = factory.abstract_model(config)
  empty_tokens, empty_mask = tokenizer.encode_batch([""])
  d = config.diffusion
  step_fn = make_train_step(
      graphdef, tx, empty_tokens=jnp.asarray(empty_tokens[0]), empty_mask=jnp.asarray(empty_mask[0]),
      caption_dropout=config.text.caption_dropout, timestep_sampling=d.timestep_sampling,
      logit_mean=d.logit_mean, logit_std=d.logit_std, shift=d.shift, patch_size=tuple(config.model.patch_size),
      ema_decay=config.optim.ema_decay,
      conditioning=(conditioning.strategy_probabilities(config.train.conditioning)
                    if config.model.frame_conditioning else None),
      conditioning_max_frames=config.train.conditioning_max_frames,
      grad_accum_steps=config.train.get("grad_accum_steps", 1))
  shardings = train_state.state_shardings(config, mesh, tx)

  def traced_step(state, batch, key):
    with sharding.activation_rules(sharding.DEFAULT_RULES):
      return step_fn(state, batch, key)

  return jax.jit(traced_step, out_shardings=(shardings, None), donate_argnums=0)


def train_and_evaluate(config, workdir: str):
  # ---- Setup -------------------------------------------------------------------------------------
  config = resolve_config(config)
  workdir = os.path.abspath(workdir)
  tr = config.train
  checkpointer = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(workdir), max_to_keep=tr.keep_checkpoints,
                                       async_save=tr.async_checkpoint)
  latest = checkpointer.latest_step()
  if latest is not None:  # before anything is written: a refused resume must leave the workdir as it was
    _check_compatible(checkpointer, latest, config, workdir)
  if jax.process_index() == 0:
    config_io.save(config, workdir)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if jax.process_index() == 0:
    writer = metric_writers.MultiWriter([writer, JsonlWriter(os.path.join(workdir, workdir_files.METRICS_FILE))])

  # ---- Mesh --------------------------------------------------------------------------------------
  mesh = sharding.make_mesh(dict(config.mesh), dcn_mesh_shape=dict(config.get("dcn_mesh", {})))
  batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]
  logging.info("Mesh %s over %d devices (%d processes).", dict(mesh.shape), jax.device_count(), jax.process_count())

  # ---- Input -------------------------------------------------------------------------------------
  tokenizer = conditioner.for_training(config, config.data.dir)
  space = latents.from_config(config)
  cached = dataset_files.read_metadata(config.data.dir).get("latents")
  # Every bucket's batch splits evenly over the batch devices, the processes and, on each device,
  # into the gradient-accumulation microbatches.
  accum = config.train.get("grad_accum_steps", 1)
  buckets = _plan_buckets(config, bucket_plan.lcm(batch_devices * accum, jax.process_count()))
  for b in buckets:
    config_io.check_video_size(config, b.frames, b.height, b.width, f"bucket {b.name}")
    logging.info("Bucket %s: %d clips, train %dx%dx%d, batch %d, %.1f%% of steps.", b.name, b.num_clips,
                 b.frames, b.height, b.width, b.batch_size, 100 * b.weight)
  data_iter = pipeline.make_train_iterator(
      buckets, tokenizer=tokenizer, seed=config.seed, worker_count=config.data.worker_count,
      prefetch_buffer_size=config.data.prefetch, latent_stats=cached,
      text_length=config.text.max_length if config.text.get("encoder", "trainable") == "t5" else 0)

  # ---- State: create or resume -------------------------------------------------------------------
  tx = train_state.make_optimizer(config.optim, tr.num_steps)
  schedule = train_state.learning_rate_schedule(config.optim, tr.num_steps)
  base_key = jax.random.key(config.seed)
  if latest is not None:
    target = train_state.abstract_state(config, mesh, tx)
    restored, data_state = checkpointer.restore(latest, target,
                                                legacy_data_args=pipeline.legacy_restore_args(data_iter))
    if data_state is not None:
      data_iter.set_state(data_state)
    state = dict(restored, step=jax.device_put(jnp.int32(latest), target["step"].sharding))
    logging.info("Resumed from step %d in %s.", latest, checkpointer.directory)
  else:
    state = train_state.create_state(config, mesh, tx, jax.random.fold_in(base_key, 1))
  start_step = int(state["step"])

  # ---- Evals (built before the first step: a bad eval config fails before any training) ----------
  evaluation = _make_periodic_eval(config, workdir, mesh, writer)

  # ---- Compiled step -----------------------------------------------------------------------------
  graphdef, _ = factory.abstract_model(config)
  jit_step = build_train_step(config, mesh, tx, tokenizer)
  # A frozen text encoder is loaded for samples only when they are asked for.
  sampler = (VideoSampler(graphdef, state["ema"], conditioner.for_sampling(config, mesh), mesh=mesh, space=space)
             if tr.sample_every else None)

  # ---- Loop --------------------------------------------------------------------------------------
  preemption = PreemptionFlag()
  report = periodic_actions.ReportProgress(num_train_steps=tr.num_steps, writer=writer, every_steps=tr.log_every)
  meta = {"model_signature": config_io.model_signature(config)}
  pending = []
  step = start_step
  if start_step >= tr.num_steps:
    logging.info("Already trained %d/%d steps; nothing to do.", start_step, tr.num_steps)
  compiled_shapes = set()
  throughput = throughput_lib.for_devices(config)
  while step < tr.num_steps:
    batch = _global_batch(next(data_iter), mesh)
    shape = batch["video"].shape
    t_compile = time.time()
    with jax.set_mesh(mesh):
      state, metrics = jit_step(state, batch, jax.random.fold_in(base_key, step + 2))
    step += 1
    compiled = shape not in compiled_shapes
    throughput.step(shape, compiled)
    if compiled:  # a new bucket: this step compiled (once, then cached)
      compiled_shapes.add(shape)
      jax.block_until_ready(metrics)
      logging.info("Step %d: compiled and ran the train step for batch %s in %.1fs.", step, shape,
                   time.time() - t_compile)
    pending.append(metrics)
    report(step)
    if step % tr.log_every == 0 or step == tr.num_steps:
      host = jax.device_get(pending)
      scalars = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
      scalars["lr"] = float(schedule(step - 1))
      scalars.update(throughput.window_scalars())  # after device_get: the window's work is done
      writer.write_scalars(step, scalars)
      pending = []
    if tr.sample_every and step % tr.sample_every == 0:
      write_samples(config, sampler, state, step, workdir, writer)
      throughput.restart()
    if evaluation is not None and evaluation(step, state=state):
      throughput.restart()
    stop = preemption.should_stop(step, sync=step % tr.log_every == 0)
    if step % tr.checkpoint_every == 0 or step == tr.num_steps or stop:
      checkpointer.save(step, state, meta=meta, data_state=data_iter.get_state(), force=True)
    if stop:
      logging.warning("Stopping at step %d after preemption; rerun the same command to resume.", step)
      break
  checkpointer.close()
  writer.flush()
  writer.close()
  return state
