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

from vdit import checkpoint as ckpt_lib
from vdit import config_io, sharding, train_state
from vdit.data import pipeline
from vdit.diffusion import flow
from vdit.jsonl_writer import JsonlWriter
from vdit.sampling import VideoSampler, to_uint8
from vdit.text.tokenizer import Tokenizer
from vdit.train_step import make_train_step


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


def resolve_config(config):
  """Fills settings that come from the data and tokenizer (recorded in the workdir's config.json)."""
  config = config.copy_and_resolve_references()
  config_io.validate(config)
  meta = pipeline.read_metadata(config.data.dir)
  with config.unlocked():
    config.data.height = config.data.height or int(meta["height"])
    config.data.width = config.data.width or int(meta["width"])
    config.text.vocab_size = config.text.vocab_size or Tokenizer(config.text.max_length).vocab_size
  if (config.data.height, config.data.width) != (meta["height"], meta["width"]):
    raise config_io.ConfigError(
        f"config.data.height/width={config.data.height}x{config.data.width} but the data in {config.data.dir!r} "
        f"is {meta['height']}x{meta['width']}; leave them at 0 to use the data's size.")
  if config.data.num_frames > meta["num_frames"]:
    raise config_io.ConfigError(
        f"config.data.num_frames={config.data.num_frames} exceeds the {meta['num_frames']} frames per clip in "
        f"{config.data.dir!r}; lower it or regenerate the data with more frames.")
  patch = config.model.patch_size
  if config.data.height % patch[1] or config.data.width % patch[2]:
    raise config_io.ConfigError(
        f"Frame size {config.data.height}x{config.data.width} is not divisible by the patch size {tuple(patch)}.")
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
  from vdit import video_io
  d = config.data
  sampler.params = state["ema"]
  videos = sampler.generate(config.sample.prompts, list(range(len(config.sample.prompts))),
                            num_frames=d.num_frames, height=d.height, width=d.width,
                            channels=config.model.in_channels, patch_size=config.model.patch_size,
                            steps=config.sample.steps, cfg=config.sample.cfg, sampler=config.sample.sampler,
                            shift=config.sample.shift, negative_prompt=config.sample.negative_prompt)
  videos = to_uint8(videos)
  if jax.process_index() == 0:
    out = os.path.join(workdir, "samples", f"step_{step:08d}")
    os.makedirs(out, exist_ok=True)
    for i, video in enumerate(videos):
      video_io.write_gif(os.path.join(out, f"{i:03d}.gif"), video, fps=8, scale=4)
    sheet = video_io.contact_sheet(list(videos))
    writer.write_images(step, {"samples": sheet[None]})


def build_train_step(config, mesh, tx, tokenizer):
  """The jitted step: state donated, state shardings pinned, activation rules applied while tracing."""
  graphdef, _ = train_state.abstract_model(config)
  empty_tokens, empty_mask = tokenizer.encode_batch([""])
  d, m = config.diffusion, config.model
  num_tokens = ((config.data.num_frames // m.patch_size[0]) * (config.data.height // m.patch_size[1]) *
                (config.data.width // m.patch_size[2]))
  step_fn = make_train_step(
      graphdef, tx, empty_tokens=jnp.asarray(empty_tokens[0]), empty_mask=jnp.asarray(empty_mask[0]),
      caption_dropout=config.text.caption_dropout, timestep_sampling=d.timestep_sampling,
      logit_mean=d.logit_mean, logit_std=d.logit_std,
      shift=d.shift if d.shift > 0 else flow.resolution_shift(num_tokens), ema_decay=config.optim.ema_decay)
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
    writer = metric_writers.MultiWriter([writer, JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])

  # ---- Mesh --------------------------------------------------------------------------------------
  mesh = sharding.make_mesh(dict(config.mesh))
  batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]
  if tr.global_batch_size % batch_devices:
    raise config_io.ConfigError(
        f"config.train.global_batch_size={tr.global_batch_size} must be divisible by data*fsdp={batch_devices}.")
  logging.info("Mesh %s over %d devices (%d processes).", dict(mesh.shape), jax.device_count(), jax.process_count())

  # ---- Input -------------------------------------------------------------------------------------
  tokenizer = Tokenizer(config.text.max_length)
  data_iter = pipeline.make_train_iterator(
      config.data.dir, global_batch_size=tr.global_batch_size, num_frames=config.data.num_frames,
      tokenizer=tokenizer, seed=config.seed, worker_count=config.data.worker_count,
      prefetch_buffer_size=config.data.prefetch)

  # ---- State: create or resume -------------------------------------------------------------------
  tx = train_state.make_optimizer(config.optim, tr.num_steps)
  schedule = train_state.learning_rate_schedule(config.optim, tr.num_steps)
  base_key = jax.random.key(config.seed)
  if latest is not None:
    target = train_state.abstract_state(config, mesh, tx)
    restored = checkpointer.restore(latest, target, data_args=pipeline.checkpoint_restore_args(data_iter))
    state = dict(restored, step=jax.device_put(jnp.int32(latest), target["step"].sharding))
    logging.info("Resumed from step %d in %s.", latest, checkpointer.directory)
  else:
    state = train_state.create_state(config, mesh, tx, jax.random.fold_in(base_key, 1))
  start_step = int(state["step"])

  # ---- Compiled step -----------------------------------------------------------------------------
  graphdef, _ = train_state.abstract_model(config)
  jit_step = build_train_step(config, mesh, tx, tokenizer)
  sampler = VideoSampler(graphdef, state["ema"], tokenizer, mesh=mesh)

  # ---- Loop --------------------------------------------------------------------------------------
  preemption = PreemptionFlag()
  report = periodic_actions.ReportProgress(num_train_steps=tr.num_steps, writer=writer, every_steps=tr.log_every)
  meta = {"model_signature": config_io.model_signature(config)}
  pending = []
  step = start_step
  if start_step >= tr.num_steps:
    logging.info("Already trained %d/%d steps; nothing to do.", start_step, tr.num_steps)
  t_compile = time.time()
  while step < tr.num_steps:
    batch = _global_batch(next(data_iter), mesh)
    with jax.set_mesh(mesh):
      state, metrics = jit_step(state, batch, jax.random.fold_in(base_key, step + 2))
    step += 1
    if step == start_step + 1:
      jax.block_until_ready(metrics)
      logging.info("First step (compile + run) took %.1fs.", time.time() - t_compile)
    pending.append(metrics)
    report(step)
    if step % tr.log_every == 0 or step == tr.num_steps:
      host = jax.device_get(pending)
      scalars = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
      scalars["lr"] = float(schedule(step - 1))
      writer.write_scalars(step, scalars)
      pending = []
    if tr.sample_every and step % tr.sample_every == 0:
      write_samples(config, sampler, state, step, workdir, writer)
    stop = preemption.should_stop(step, sync=step % tr.log_every == 0)
    if step % tr.checkpoint_every == 0 or step == tr.num_steps or stop:
      checkpointer.save(step, state, meta=meta, data_args=pipeline.checkpoint_save_args(data_iter), force=True)
    if stop:
      logging.warning("Stopping at step %d after preemption; rerun the same command to resume.", step)
      break
  checkpointer.close()
  writer.flush()
  writer.close()
  return state
