"""Trains the causal 3D video VAE (vdit/vae/wan_vae.py): `train_vae(config, workdir)` and its CLI.

  python -m vdit.training.vae_trainer --config=configs/vae_toy.py --workdir=runs/vae_toy [--config.train.num_steps=600]

setup -> mesh -> input -> networks -> state (create, fine-tune from a file, or resume) -> compiled
step -> loop (log, checkpoint, export). Every checkpoint also writes WORKDIR/vae.safetensors: the
EMA weights in `wan_vae.FORMAT` with latents_mean/latents_std measured on training batches, so
`vdit.vae.wan_vae.load` reads it and `normalize_latents` gives a DiT unit-scale latents. Rerunning
the command resumes from the latest checkpoint, data iterator included.
"""
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from vdit.core import workdir_files
from vdit.core import checkpoint as ckpt_lib
from vdit.config import config_io
from vdit.parallel import sharding
from vdit.training import train_state
from vdit.core import weights
from vdit.data import bucket_plan, dataset_files, pipeline
from vdit.training.jsonl_writer import JsonlWriter
from vdit.text.tokenizer import Tokenizer
from vdit.training.dit_trainer import PreemptionFlag
from vdit.vae import wan_vae
from vdit.training import vae_config
from vdit.training import vae_losses
from vdit.training import vae_step

EXPORT_FILE = workdir_files.VAE_FILE
_STATS_SEED_OFFSET = 1  # latent statistics read their own stream of training crops
# XLA:CPU spends most of a VAE compile in LLVM passes that barely speed the step up: convolutions are
# library calls (tiny config: compile 13 s -> 6 s, step 1.63 s -> 1.72 s).
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _plan_buckets(config, data_dir: str, arch: wan_vae.WanVAEConfig, batch_multiple: int):
  """The dataset's buckets (vdit.data.bucket_plan), each crop cut to 1 + temporal_factor * k frames."""
  metadata = dataset_files.read_metadata(data_dir)
  buckets = bucket_plan.plan(metadata["buckets"], patch_size=(1, arch.spatial_factor, arch.spatial_factor),
                             global_batch_size=config.train.global_batch_size, tokens_per_batch=0,
                             batch_multiple=batch_multiple, max_frames=config.data.num_frames,
                             image_ratio=config.data.image_ratio)
  tf = arch.temporal_factor
  return [dataclasses.replace(b, frames=1 + (b.frames - 1) // tf * tf) for b in buckets]


def _batches(config, buckets, seed: int):
  # The pipeline tokenizes captions; the VAE ignores them (a short tokenizer keeps that cheap).
  return pipeline.make_train_iterator(buckets, tokenizer=Tokenizer(8), seed=seed,
                                      worker_count=config.data.worker_count,
                                      prefetch_buffer_size=config.data.prefetch)


def _global_video(batch, mesh):
  """Host-local uint8 videos -> a global array split over the batch axes (multi-host safe)."""
  x = np.asarray(batch["video"])
  shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
  return jax.make_array_from_process_local_data(sharding.batch_sharding(mesh, x.ndim), x, shape)


def _init_vae(config):
  """The VAE parameters of config.vae.init_weights (None: random init); its architecture must match."""
  path = config.vae.init_weights
  if not path:
    return None
  try:
    model = wan_vae.load(path)
  except weights.WeightsError as e:
    raise weights.WeightsError(f"config.vae.init_weights: {e}") from None
  vae_config.check_matches_file(config, model.config, path)
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _state_fns(arch, config, tx, disc_tx):
  """(init(key, vae_params or None) -> state, the VAE graphdef, the discriminator graphdef or None)."""
  vae_graphdef, _ = nnx.split(wan_vae.abstract(arch), nnx.Param)  # only Params: anything else is an error
  d = config.disc
  make_disc = None
  if config.loss.adversarial_weight > 0:
    make_disc = lambda rngs: vae_losses.PatchDiscriminator(in_channels=arch.in_channels, base_dim=d.base_dim,
                                                           num_layers=d.num_layers, rngs=rngs)
  disc_graphdef = nnx.split(nnx.eval_shape(lambda: make_disc(nnx.Rngs(0))))[0] if make_disc else None

  def init(key, vae_params):
    vae_key, disc_key = jax.random.split(key)
    if vae_params is None:
      vae_params = nnx.to_pure_dict(nnx.state(wan_vae.WanVAE(arch, rngs=nnx.Rngs(vae_key)), nnx.Param))
    params = {"vae": vae_params}
    opt = {"vae": tx.init(vae_params)}
    if make_disc:
      params["disc"] = nnx.to_pure_dict(nnx.state(make_disc(nnx.Rngs(disc_key)), nnx.Param))
      opt["disc"] = disc_tx.init(params["disc"])
    return {"params": params, "ema": {"vae": vae_params}, "opt_state": opt, "step": jnp.zeros((), jnp.int32)}

  return init, vae_graphdef, disc_graphdef


def _jit(config, fn, **kwargs):
  if config.train.cpu_fast_compile and jax.default_backend() == "cpu":
    kwargs["compiler_options"] = _FAST_COMPILE
  return jax.jit(fn, **kwargs)


def _host(tree):
  """Numpy copies on every process (call on all: batch-sharded arrays are gathered)."""
  one = lambda x: np.asarray(x.addressable_data(0)) if x.sharding.is_fully_replicated else sharding.to_host(x)
  return jax.tree.map(one, tree)


def latent_statistics(encode_mean, vae_params, batches, mesh, num_batches: int):
  """Per-channel (mean, std) of the posterior means of `num_batches` batches."""
  means = [_host(encode_mean(vae_params, _global_video(next(batches), mesh))) for _ in range(num_batches)]
  flat = np.concatenate([m.reshape(-1, m.shape[-1]) for m in means]).astype(np.float64)
  return flat.mean(axis=0), np.maximum(flat.std(axis=0), 1e-6)


def export(path: str, vae_graphdef, arch, host_params, mean, std, step: int) -> None:
  """Writes the VAE as a `wan_vae.FORMAT` file (atomically: weights.save writes a temp, renames)."""
  config = dataclasses.replace(arch, latents_mean=tuple(map(float, mean)), latents_std=tuple(map(float, std)))
  model = nnx.merge(vae_graphdef, host_params)
  weights.save(path, weights.module_tensors(model), {"format": wan_vae.FORMAT, "config": config.to_json(),
                                                     "source": f"vdit.training.vae_trainer step {step}"})


def held_out_psnr(reconstruct_psnr, vae_params, batches, mesh, num_batches: int) -> float:
  scores = [_host(reconstruct_psnr(vae_params, _global_video(next(batches), mesh))) for _ in range(num_batches)]
  return float(np.mean(np.concatenate(scores)))


def _check_compatible(checkpointer, step, signature, workdir):
  saved = checkpointer.read_meta(step).get("vae_signature", {})
  if saved != signature:
    raise ckpt_lib.CheckpointError(
        f"Workdir {workdir!r} holds a VAE checkpoint (step {step}) of a different setup: "
        f"{ckpt_lib.describe_mismatch(saved, signature)}. Use a new --workdir, or restore the original config.")


def train_vae(config, workdir: str):
  """Trains (or resumes) the VAE in `workdir`; returns the final train state."""
  # ---- Setup (every check of the input before anything is written) --------------------------------
  config = config.copy_and_resolve_references()
  arch = vae_config.validate(config)
  weights_cfg = vae_config.loss_weights(config)
  init_params = _init_vae(config)
  perceptual_graphdef = perceptual = None
  if weights_cfg.perceptual > 0:
    perceptual_graphdef, perceptual = nnx.split(vae_losses.load_perceptual(config.loss.perceptual_weights))
  mesh = sharding.make_mesh(dict(config.mesh))
  replicated = NamedSharding(mesh, P())
  multiple = bucket_plan.lcm(mesh.shape["data"], jax.process_count())
  buckets = _plan_buckets(config, config.data.dir, arch, multiple)
  eval_buckets = _plan_buckets(config, config.eval.dir, arch, multiple) if config.eval.dir else None
  workdir = os.path.abspath(workdir)
  tr = config.train
  signature = vae_config.signature(config, arch)
  checkpointer = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(workdir), max_to_keep=tr.keep_checkpoints,
                                       async_save=tr.async_checkpoint)
  latest = checkpointer.latest_step()
  if latest is not None:
    _check_compatible(checkpointer, latest, signature, workdir)
  lead = jax.process_index() == 0
  if lead:
    config_io.save(config, workdir)
  writer = metric_writers.create_default_writer(workdir, just_logging=not lead)
  if lead:
    writer = metric_writers.MultiWriter([writer, JsonlWriter(os.path.join(workdir, workdir_files.METRICS_FILE))])
  logging.info("Mesh %s over %d devices (%d processes).", dict(mesh.shape), jax.device_count(), jax.process_count())

  # ---- Input -------------------------------------------------------------------------------------
  for b in buckets:
    logging.info("Bucket %s: %d clips, train %dx%dx%d, batch %d, %.1f%% of steps.", b.name, b.num_clips,
                 b.frames, b.height, b.width, b.batch_size, 100 * b.weight)
  data_iter = _batches(config, buckets, config.seed)

  # ---- Networks: VAE, frozen perceptual features, discriminator ----------------------------------
  tx = train_state.make_optimizer(config.optim, tr.num_steps)
  disc_steps = max(tr.num_steps - weights_cfg.adversarial_start_step, 1)
  disc_tx = train_state.make_optimizer(config.disc.optim, disc_steps) if weights_cfg.adversarial > 0 else None
  init, vae_graphdef, disc_graphdef = _state_fns(arch, config, tx, disc_tx)
  perceptual_params = jax.device_put(nnx.to_pure_dict(perceptual), replicated) if perceptual is not None else None

  # ---- State: create, fine-tune from a file, or resume --------------------------------------------
  base_key = jax.random.key(config.seed)
  if init_params is not None:
    init_params = jax.device_put(init_params, replicated)
  if latest is not None:
    shapes = jax.eval_shape(init, base_key, init_params)
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)
    restored, data_state = checkpointer.restore(latest, target)
    if data_state is not None:
      data_iter.set_state(data_state)
    state = dict(restored, step=jax.device_put(jnp.int32(latest), replicated))
    logging.info("Resumed from step %d in %s.", latest, checkpointer.directory)
  else:
    state = _jit(config, init, out_shardings=replicated)(jax.random.fold_in(base_key, 1), init_params)
    logging.info("Initialised the VAE %s.", f"from {config.vae.init_weights}" if init_params is not None else
                 "at random")
  del init_params
  start_step = int(state["step"])

  # ---- Compiled step -----------------------------------------------------------------------------
  step_fn = vae_step.make_train_step(vae_graphdef, tx, weights_cfg, ema_decay=config.optim.ema_decay,
                                     perceptual_graphdef=perceptual_graphdef, disc_graphdef=disc_graphdef,
                                     disc_tx=disc_tx)
  jit_step = _jit(config, step_fn, out_shardings=(replicated, None), donate_argnums=0)
  encode_mean = _jit(config, vae_step.make_encode_mean(vae_graphdef))
  reconstruct_psnr = _jit(config, vae_step.make_reconstruct_psnr(vae_graphdef))
  export_path = os.path.join(workdir, EXPORT_FILE)

  def export_and_evaluate(step):
    """vae.safetensors from the EMA weights, and the held-out PSNR when config.eval.dir is set."""
    stats_batches = _batches(config, buckets, config.seed + _STATS_SEED_OFFSET)
    mean, std = latent_statistics(encode_mean, state["ema"]["vae"], stats_batches, mesh,
                                  config.vae.latent_stats_batches)
    stats_batches.close()
    host_params = _host(state["ema"]["vae"])
    if lead:
      export(export_path, vae_graphdef, arch, host_params, mean, std, step)
    scalars = {"latents_std_mean": float(np.mean(std))}
    if eval_buckets:
      eval_batches = _batches(config, eval_buckets, 0)  # the same clips at every evaluation
      scalars["eval/psnr"] = held_out_psnr(reconstruct_psnr, state["ema"]["vae"], eval_batches, mesh,
                                           config.eval.num_batches)
      eval_batches.close()
    writer.write_scalars(step, scalars)
    logging.info("Step %d: exported %s (%s).", step, export_path, ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))

  # ---- Loop --------------------------------------------------------------------------------------
  preemption = PreemptionFlag()
  report = periodic_actions.ReportProgress(num_train_steps=tr.num_steps, writer=writer, every_steps=tr.log_every)
  schedule = train_state.learning_rate_schedule(config.optim, tr.num_steps)
  pending, compiled_shapes, step = [], set(), start_step
  if start_step >= tr.num_steps:
    logging.info("Already trained %d/%d steps; nothing to do.", start_step, tr.num_steps)
  while step < tr.num_steps:
    video = _global_video(next(data_iter), mesh)
    t0 = time.time()
    state, metrics = jit_step(state, video, jax.random.fold_in(base_key, step + 2), perceptual_params)
    step += 1
    if video.shape not in compiled_shapes:  # a new bucket: this step compiled (once, then cached)
      compiled_shapes.add(video.shape)
      jax.block_until_ready(metrics)
      logging.info("Step %d: compiled and ran the VAE step for batch %s in %.1fs.", step, video.shape,
                   time.time() - t0)
    pending.append(metrics)
    report(step)
    if step % tr.log_every == 0 or step == tr.num_steps:
      host = jax.device_get(pending)
      scalars = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
      writer.write_scalars(step, dict(scalars, lr=float(schedule(step - 1))))
      pending = []
    stop = preemption.should_stop(step, sync=step % tr.log_every == 0)
    if step % tr.checkpoint_every == 0 or step == tr.num_steps or stop:
      checkpointer.save(step, state, meta={"vae_signature": signature}, data_state=data_iter.get_state(),
                        force=True)
      export_and_evaluate(step)
    if stop:
      logging.warning("Stopping at step %d after preemption; rerun the same command to resume.", step)
      break
  if step == start_step and not os.path.exists(export_path):  # e.g. killed between checkpoint and export
    export_and_evaluate(step)
  checkpointer.close()
  writer.flush()
  writer.close()
  return state


def main(argv):
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from vdit.parallel import distributed  # pylint: disable=g-import-not-at-top
  from vdit.core import logs
  from vdit.core.errors import exit_on_user_error  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logs.quiet_library_logs()
  distributed.maybe_initialize()
  exit_on_user_error(lambda: train_vae(flags.FLAGS.config, flags.FLAGS.workdir))


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  # Flags live here, not at import: tests import train_vae without claiming global flags.
  config_flags.DEFINE_config_file("config", None, "VAE config file (configs/vae_NAME.py[:args]).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and vae.safetensors.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
