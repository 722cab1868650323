"""Trains the causal 3D video VAE (vdit/vae/wan_vae.py): `train_vae(config, workdir)`.

  python -m vdit.main --config=configs/vae_toy.py --workdir=runs/vae_toy [--config.train.num_steps=600]

setup -> mesh -> input -> networks -> state (create or fine-tune from a file) -> compiled step ->
export -> vdit.training.loop (which checkpoints, resumes, logs and handles preemption). Every
checkpoint also writes WORKDIR/vae.safetensors: the EMA weights in `wan_vae.FORMAT` with
latents_mean/latents_std measured on training batches, so `vdit.vae.wan_vae.load` reads it and
`normalize_latents` gives a DiT unit-scale latents. Rerunning the command resumes from the latest
checkpoint, data iterator included.
"""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from vdit.config import experiment
from vdit.core import weights, workdir_files
from vdit.data import bucket_plan, dataset_files, pipeline
from vdit.parallel import sharding
from vdit.text.tokenizer import Tokenizer
from vdit.training import loop, nonfinite, train_state, vae_config, vae_losses, vae_step
from vdit.vae import wan_vae

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


def train_vae(config, workdir: str):
  """Trains (or resumes) the VAE in `workdir`; returns the final train state."""
  # ---- Setup (every check of the input before the loop writes anything) --------------------------
  config = config.copy_and_resolve_references()
  arch = vae_config.validate(config)
  config = experiment.freeze(config)  # the boundary: below here, typed read-only values
  weights_cfg = vae_config.loss_weights(config)
  init_params = _init_vae(config)
  perceptual_graphdef = perceptual = None
  if weights_cfg.perceptual > 0:
    perceptual_graphdef, perceptual = nnx.split(vae_losses.load_perceptual(config.loss.perceptual_weights))
  workdir = os.path.abspath(workdir)
  tr = config.train
  lead = jax.process_index() == 0

  # ---- Mesh --------------------------------------------------------------------------------------
  mesh = sharding.make_mesh(dict(config.mesh))
  replicated = NamedSharding(mesh, P())
  logging.info("Mesh %s over %d devices (%d processes).", dict(mesh.shape), jax.device_count(), jax.process_count())

  # ---- Input -------------------------------------------------------------------------------------
  multiple = bucket_plan.lcm(mesh.shape["data"], jax.process_count())
  buckets = _plan_buckets(config, config.data.dir, arch, multiple)
  eval_buckets = _plan_buckets(config, config.eval.dir, arch, multiple) if config.eval.dir else None
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

  # ---- State: created (fine-tuned from a file) or restored by the loop ---------------------------
  if init_params is not None:
    init_params = jax.device_get(init_params)  # on the host until used: no device copy kept while training

  def init_state(key):
    params = jax.device_put(init_params, replicated) if init_params is not None else None
    state = _jit(config, init, out_shardings=replicated)(key, params)
    logging.info("Initialised the VAE %s.", f"from {config.vae.init_weights}" if params is not None else "at random")
    return state

  def abstract_state():
    shapes = jax.eval_shape(init, jax.random.key(config.seed), init_params)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)

  # ---- Compiled step -----------------------------------------------------------------------------
  step_fn = vae_step.make_train_step(vae_graphdef, tx, weights_cfg, ema_decay=config.optim.ema_decay,
                                     perceptual_graphdef=perceptual_graphdef, disc_graphdef=disc_graphdef,
                                     disc_tx=disc_tx, skip_nonfinite=nonfinite.skips(tr))
  jit_step = _jit(config, step_fn, out_shardings=(replicated, None), donate_argnums=0)
  encode_mean = _jit(config, vae_step.make_encode_mean(vae_graphdef))
  reconstruct_psnr = _jit(config, vae_step.make_reconstruct_psnr(vae_graphdef))

  # ---- Export (at every checkpoint) --------------------------------------------------------------
  export_path = os.path.join(workdir, EXPORT_FILE)

  def export_and_evaluate(step, state, writer):
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

  def export_if_missing(step, state, writer):  # e.g. killed between the last checkpoint and its export
    if not os.path.exists(export_path):
      export_and_evaluate(step, state, writer)

  # ---- Loop --------------------------------------------------------------------------------------
  schedule = train_state.learning_rate_schedule(config.optim, tr.num_steps)
  return loop.train(config, workdir, loop.Hooks(
      train_step=lambda state, batch, key: jit_step(state, batch["video"], key, perceptual_params),
      init_state=init_state, abstract_state=abstract_state,
      batches=data_iter, global_batch=lambda batch: {"video": _global_video(batch, mesh)},
      meta={"vae_signature": vae_config.signature(config, arch)}, mismatch="VAE setup",
      log_scalars=lambda step: {"lr": float(schedule(step - 1))},
      after_checkpoint=(export_and_evaluate,), already_trained=export_if_missing))
