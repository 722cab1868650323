"""The DiT trainer: `train_and_evaluate(config, workdir, teacher=None)`, read top to bottom in sections.

setup -> mesh -> input -> state -> evals and samples -> compiled step -> vdit.training.loop (which
checkpoints, resumes, logs and handles preemption). Re-running with the same workdir resumes
exactly from the latest checkpoint, data iterator included. With a `Teacher`, the same trainer
distils a few-step student from it (vdit/training/distill_step.py; `python -m vdit.distill`); with a
`Base`, it trains LoRA adapters on that frozen model (`python -m vdit.finetune`).
"""
import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vdit.config import config_io, prepare
from vdit.vae import latents
from vdit.parallel import sharding
from vdit.training import train_state
from vdit.model import factory, lora
from vdit.training import throughput as throughput_lib
from vdit.data import bucket_plan, dataset_files, pipeline
from vdit.diffusion import conditioning
from vdit.diffusion.generation import VideoSampler
from vdit.diffusion.options import SampleOptions
from vdit.media import pixels
from vdit.text import conditioner
from vdit.training import loop, nonfinite
from vdit.training.dit_step import make_train_step
from vdit.training.distill_step import make_distill_step


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A frozen teacher for distillation: its workdir, its config (an Experiment, as for sampling),
  and the guidance scale folded into the student. Its latest EMA weights are read onto the
  student's mesh."""
  workdir: str
  config: Any
  guidance: float

  def load(self, mesh):
    """(graphdef, EMA parameters sharded on `mesh`)."""
    from vdit.config import pretrained
    with pretrained.Checkpoints(self.workdir, self.config, mesh) as checkpoints:
      step, = checkpoints.select(None)
      params = checkpoints.restore(step)
    logging.info("Teacher %s: step %d, guidance %g distilled into the student.", self.workdir, step, self.guidance)
    return factory.abstract_model(self.config)[0], params


@dataclasses.dataclass(frozen=True)
class Base:
  """The frozen model LoRA adapters train on: a workdir, its config (an Experiment) and the
  checkpoint step (pinned when fine-tuning starts, so a resumed run trains on the same weights)."""
  workdir: str
  config: Any
  step: int

  def load(self, mesh) -> dict:
    """The base's EMA parameters, sharded on `mesh` as training shards them."""
    from vdit.config import pretrained
    with pretrained.Checkpoints(self.workdir, self.config, mesh) as checkpoints:
      step, = checkpoints.select(self.step)
      params = checkpoints.restore(step)
    logging.info("Base %s: step %d, frozen; training LoRA adapters on it.", self.workdir, step)
    return params


def _global_batch(local_batch, mesh):
  """Host-local numpy batch -> global jax arrays sharded over the batch axes (multi-host safe)."""
  def put(x):
    global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding.batch_sharding(mesh, x.ndim), x, global_shape)
  return {k: put(np.asarray(v)) for k, v in local_batch.items()}


def write_samples(config, sampler, params, step, workdir, writer):
  """Samples the config's prompts with `params` (the EMA weights); writes GIFs and a contact sheet summary."""
  from vdit.media import video_io
  s = config.sample
  sampler.params = params
  videos = sampler.generate(s.prompts, list(range(len(s.prompts))),
                            num_frames=s.num_frames, height=s.height, width=s.width,
                            channels=config.model.in_channels, patch_size=config.model.patch_size,
                            **SampleOptions.from_section(s).generate_kwargs())
  videos = pixels.to_uint8(videos)
  if jax.process_index() == 0:
    out = os.path.join(workdir, "samples", f"step_{step:08d}")
    os.makedirs(out, exist_ok=True)
    for i, video in enumerate(videos):
      video_io.write_gif(os.path.join(out, f"{i:03d}.gif"), video, fps=8, scale=4)
    sheet = video_io.contact_sheet(list(videos))
    writer.write_images(step, {"samples": sheet[None]})


def _make_periodic_eval(config, workdir, mesh, generator_params):
  """A callback running the eval config on the EMA weights every eval.every_steps (True when it ran)."""
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

  def run_eval(step, state, writer):
    if step % e.every_steps:
      return False
    results = evaluator.run(generator_params(state["ema"]), step)
    scalars = {f"eval/{k}": v for k, v in results["metrics"].items() if v is not None}
    writer.write_scalars(step, scalars)
    logging.info("Step %d eval (%s): %s", step, eval_config.name,
                 ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
    return True

  return run_eval


def build_train_step(config, mesh, tx, tokenizer, teacher_graphdef=None, guidance: float = 0.0):
  """The jitted step: state donated, state shardings pinned, activation rules applied while tracing.
  With a teacher graph: the distillation step, step(state, teacher_params, batch, key); with LoRA
  (config.lora.rank): step(state, base_params, batch, key).

  jit compiles once per batch shape (bucket) and caches it."""
  graphdef, _ = factory.abstract_model(config)
  empty_tokens, empty_mask = tokenizer.encode_batch([""])
  d = config.diffusion
  conditioning_probabilities = (conditioning.strategy_probabilities(config.train.conditioning)
                                if config.model.frame_conditioning else None)
  shardings = train_state.state_shardings(config, mesh, tx)
  if teacher_graphdef is not None:
    distill = make_distill_step(
        graphdef, teacher_graphdef, tx, guidance=guidance, empty_tokens=jnp.asarray(empty_tokens[0]),
        empty_mask=jnp.asarray(empty_mask[0]), timestep_sampling=d.timestep_sampling, logit_mean=d.logit_mean,
        logit_std=d.logit_std, shift=d.shift, patch_size=tuple(config.model.patch_size),
        ema_decay=config.optim.ema_decay, mean_fraction=config.distill.mean_fraction,
        dmd_weight=config.distill.dmd_weight,
        conditioning=conditioning_probabilities, conditioning_max_frames=config.train.conditioning_max_frames,
        skip_nonfinite=nonfinite.skips(config.train))

    def traced_distill_step(state, teacher_params, batch, key):
      with sharding.activation_rules(sharding.DEFAULT_RULES):
        return distill(state, teacher_params, batch, key)

    return jax.jit(traced_distill_step, out_shardings=(shardings, None), donate_argnums=0)
  step_fn = make_train_step(
      graphdef, tx, empty_tokens=jnp.asarray(empty_tokens[0]), empty_mask=jnp.asarray(empty_mask[0]),
      caption_dropout=config.text.caption_dropout, timestep_sampling=d.timestep_sampling,
      logit_mean=d.logit_mean, logit_std=d.logit_std, shift=d.shift, patch_size=tuple(config.model.patch_size),
      ema_decay=config.optim.ema_decay,
      conditioning=conditioning_probabilities, conditioning_max_frames=config.train.conditioning_max_frames,
      grad_accum_steps=config.train.grad_accum_steps, skip_nonfinite=nonfinite.skips(config.train),
      lora_dropout=config.lora.dropout)
  if config.lora.rank:

    def traced_lora_step(state, base_params, batch, key):
      with sharding.activation_rules(sharding.DEFAULT_RULES):
        return step_fn(state, batch, key, frozen=base_params)

    return jax.jit(traced_lora_step, out_shardings=(shardings, None), donate_argnums=0)

  def traced_step(state, batch, key):
    with sharding.activation_rules(sharding.DEFAULT_RULES):
      return step_fn(state, batch, key)

  return jax.jit(traced_step, out_shardings=(shardings, None), donate_argnums=0)


def _student_state(config, mesh, tx, teacher_params, key):
  """A student's first state: the teacher's parameters, plus the student's own (the interval
  embedding, zero-initialised at its output) from a fresh initialisation."""
  shardings = train_state.state_shardings(config, mesh, tx)

  def init(key, teacher_params):
    params = _overlay(train_state.initial_state(config, tx, key)["params"], teacher_params)
    return train_state.with_aux(config, tx, {"params": params, "ema": params, "opt_state": tx.init(params),
                                             "step": jnp.zeros((), jnp.int32)})

  with jax.set_mesh(mesh):
    return jax.jit(init, out_shardings=shardings)(key, teacher_params)


def _overlay(tree: dict, values: dict) -> dict:
  """`tree` with every leaf that `values` also holds (same path) taken from `values`."""
  return {k: (_overlay(v, values[k]) if isinstance(v, dict) else values[k]) if k in values else v
          for k, v in tree.items()}


def train_and_evaluate(config, workdir: str, teacher: Teacher | None = None, base: Base | None = None):
  """Trains (or resumes) the DiT in `workdir` (a student of `teacher`, or LoRA adapters on `base`,
  if given); returns the final train state."""
  # ---- Setup (every check of the input before the loop writes anything) --------------------------
  config = prepare.for_training(config)  # the boundary: checked, completed from the data, frozen
  workdir = os.path.abspath(workdir)
  tr = config.train

  # ---- Mesh --------------------------------------------------------------------------------------
  mesh = sharding.make_mesh(dict(config.mesh), dcn_mesh_shape=dict(config.dcn_mesh))
  batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]
  logging.info("Mesh %s over %d devices (%d processes).", dict(mesh.shape), jax.device_count(), jax.process_count())

  # ---- Frozen models: the teacher, or the base under the adapters -------------------------------
  teacher_graphdef, teacher_params = teacher.load(mesh) if teacher else (None, None)
  base_params = base.load(mesh) if base else None
  frozen_args = (teacher_params,) if teacher else (base_params,) if base else ()
  # What samples and evals run: the EMA weights, with LoRA laid over the frozen base.
  generator_params = (lambda ema: lora.combine(base_params, ema)) if base else (lambda ema: ema)

  # ---- Evals and samples (built first: a bad eval config fails before anything else) ------------
  throughput = throughput_lib.for_devices(config)  # per logged window; samples and evals restart it
  callbacks = []
  evaluation = _make_periodic_eval(config, workdir, mesh, generator_params)
  if tr.sample_every:
    # A frozen text encoder is loaded for samples only when they are asked for.
    graphdef, _ = factory.abstract_model(config)
    sampler = VideoSampler(graphdef, None, conditioner.for_sampling(config, mesh), mesh=mesh,
                           space=latents.from_config(config))

    def sample(step, state, writer):
      if step % tr.sample_every == 0:
        write_samples(config, sampler, generator_params(state["ema"]), step, workdir, writer)
        throughput.restart()  # samples are not training time
    callbacks.append(sample)
  if evaluation is not None:

    def evaluate(step, state, writer):
      if evaluation(step, state=state, writer=writer):
        throughput.restart()
    callbacks.append(evaluate)

  # ---- Input -------------------------------------------------------------------------------------
  tokenizer = conditioner.for_training(config, config.data.dir)
  cached = dataset_files.read_metadata(config.data.dir).get("latents")
  # Every bucket's batch splits evenly over the batch devices, the processes and, on each device,
  # into the gradient-accumulation microbatches.
  buckets = prepare.plan_buckets(config, bucket_plan.lcm(batch_devices * tr.grad_accum_steps, jax.process_count()))
  for b in buckets:
    config_io.check_video_size(config, b.frames, b.height, b.width, f"bucket {b.name}")
    logging.info("Bucket %s: %d clips, train %dx%dx%d, batch %d, %.1f%% of steps.", b.name, b.num_clips,
                 b.frames, b.height, b.width, b.batch_size, 100 * b.weight)
  data_iter = pipeline.make_train_iterator(
      buckets, tokenizer=tokenizer, seed=config.seed, worker_count=config.data.worker_count,
      prefetch_buffer_size=config.data.prefetch, latent_stats=cached,
      text_length=config.text.max_length if config.text.encoder == "t5" else 0)

  # ---- State: the loop creates it (sharded) or restores it into the abstract target --------------
  tx = train_state.make_optimizer(config.optim, tr.num_steps)
  schedule = train_state.learning_rate_schedule(config.optim, tr.num_steps)

  # ---- Compiled step -----------------------------------------------------------------------------
  jit_step = build_train_step(config, mesh, tx, tokenizer, teacher_graphdef, teacher.guidance if teacher else 0.0)

  def train_step(state, batch, key):
    throughput.step(batch["video"].shape)
    with jax.set_mesh(mesh):
      return jit_step(state, *frozen_args, batch, key)

  def init_state(key):
    if teacher:
      return _student_state(config, mesh, tx, teacher_params, key)
    return train_state.create_state(config, mesh, tx, key)

  # ---- Loop --------------------------------------------------------------------------------------
  return loop.train(config, workdir, loop.Hooks(
      train_step=train_step,
      init_state=init_state,
      abstract_state=lambda: train_state.abstract_state(config, mesh, tx),
      batches=data_iter, global_batch=lambda batch: _global_batch(batch, mesh),
      meta={"model_signature": config_io.model_signature(config)}, mismatch="model config",
      log_scalars=lambda step: {"lr": float(schedule(step - 1)), **throughput.window_scalars()},
      after_step=tuple(callbacks), legacy_data_args=pipeline.legacy_restore_args(data_iter)))
