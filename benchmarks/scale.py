"""Speed at scale: train step MFU at three model sizes, 480p sampling latency, attention kernels and
context parallelism, scan-vs-unrolled compile time, and a PyTorch (diffusers Wan) peer, as JSON.

  python benchmarks/scale.py [--preset=cpu|gpu] [--steps=N] [--sections=train,sample,attention,compile,peer]
      [--families=dit_b_like,...] [--attention=xla|cudnn|...] [--out=FILE.json] [--dry_run]
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/scale.py --preset=cpu

`gpu` runs the real shapes: Wan 2.1 latents of 480p x 81 frames (21 x 60 x 104 x 16, 1x2x2 patches:
32,760 tokens per clip), one clip per device, bf16 compute, fp32 parameters, remat "full", cuDNN
attention, a mesh of fsdp over every local device. `cpu` runs the same families scaled down
(dims / 8, depth / 4, 480 tokens, float32) on one CPU device, in a few minutes on 2 cores: it
checks the benchmark, not the targets. `--dry_run` builds every config and abstract state and
prints shapes, parameter counts, FLOPs and memory estimates without compiling or running.

Batches are synthetic (random uint8 latents and a fixed prompt), fed to the trainer's own
build_train_step / create_state. The step maps its uint8 input to [-1, 1] (vdit's pixel path:
no float latent input exists yet), so 16-channel latents go in as uint8 of the same shape; the
compute and FLOPs are those of Wan latents. The peer runs in a subprocess first, while JAX has
not yet claimed the accelerator's memory.
"""
import argparse
import gc
import importlib.util
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from configs import wan_1p3b  # noqa: E402
from vdit.config import config_io  # noqa: E402
from vdit.training import flops
from vdit.parallel import sharding
from vdit.training import train_state
from vdit.model import factory
from vdit.diffusion.generation import VideoSampler  # noqa: E402
from vdit.text.tokenizer import Tokenizer  # noqa: E402
from vdit.training.dit_trainer import build_train_step  # noqa: E402

import attention_speed  # noqa: E402  (benchmarks/, on sys.path as the script's directory)

SECTIONS = ("train", "sample", "attention", "compile", "peer")
TARGETS = {"wan_1p3b_train_mfu": 0.55, "peer_throughput_ratio": 1.3, "sample_480p_81f_50steps_s": 60}
PROMPT = "a red circle moving left"
# Model families at full size. The largest is what one 80 GB GPU holds with AdamW at 32,760 tokens:
# ~2.7B parameters x 20 bytes (fp32 params, EMA, Adam mu/nu, grads) ~ 54 GB, plus ~6 GB of remat
# "full" activations; Wan-14B (5120 x 40) needs ~280 GB of state, i.e. fsdp over 4+ GPUs.
FAMILIES = {
    "dit_b_like": dict(dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
    "wan_1p3b_like": dict(dim=1536, depth=30, num_heads=12, mlp_ratio=8960 / 1536),
    "large_2p4b_like": dict(dim=2048, depth=36, num_heads=16, mlp_ratio=4.0),
}
# The cpu preset's compile probe: deep and narrow (dim 128 after the scale-down), where compile time
# is mostly a function of depth.
COMPILE_PROBE = dict(dim=1024, depth=30, num_heads=8, mlp_ratio=4.0)
LATENT = {"gpu": (21, 60, 104), "cpu": (5, 16, 24)}  # 480p x 81 frames through Wan's VAE (4x t, 8x h/w)
CPU_SCALE_DOWN = ("model and text dims / 8, depth / 4 (rounded), heads and FFN ratio kept, text length / 8, "
                  "latents 5x16x24x16 (480 tokens), float32 compute (bf16 is emulated on CPU), xla attention, "
                  "1 CPU device")
PRESETS = {
    "gpu": dict(steps=10, sample_steps=50, attention_lengths=(4096, 16384, 32760), attention_dim=(1536, 12),
                compile_family="wan_1p3b_like", compile_depth=30),
    # Unrolled compile time grows faster than linearly in depth on XLA:CPU (30 blocks: many minutes
    # on 2 cores), so the cpu preset probes 8 blocks.
    "cpu": dict(steps=3, sample_steps=3, attention_lengths=(256, 512, 1024), attention_dim=(128, 8),
                compile_family="compile_probe", compile_depth=8),
}
STATE_BYTES_PER_PARAM = 20  # fp32 params + EMA + Adam mu + nu, and the step's fp32 gradients


ATTENTION_OVERRIDE = []  # --attention: one backend for the train, sample and compile sections


def preferred_backend() -> str:
  """--attention if given, else this platform's fused kernel (cudnn on GPU, splash on TPU), else xla."""
  return ATTENTION_OVERRIDE[0] if ATTENTION_OVERRIDE else {"gpu": "cudnn", "tpu": "splash"}.get(jax.default_backend(), "xla")


def shape_config(family: str, preset: str):
  """Wan-1.3B's config with a family's transformer shape (the cpu preset's scaled down), xla
  attention. Touches no JAX backend, so the peer can run before JAX claims the GPU."""
  config = wan_1p3b.get_config()
  m, t = config.model, config.text
  # The step as measured before Wan's frozen umT5 was wired in: a 2-layer text encoder of width
  # 4096 trained with the DiT (cached umT5 embeddings would take it out of the step entirely).
  t.encoder, t.depth, t.num_heads, t.mlp_ratio = "trainable", 2, 32, 2.0
  m.variant = "vdit"
  shape = FAMILIES.get(family) or COMPILE_PROBE
  m.dim, m.depth, m.num_heads, m.mlp_ratio = shape["dim"], shape["depth"], shape["num_heads"], shape["mlp_ratio"]
  if preset == "cpu":
    m.dim, t.dim, t.max_length = m.dim // 8, t.dim // 8, t.max_length // 8
    m.depth = max(1, round(m.depth / 4))
    m.dtype = "float32"
  return config


def model_config(family: str, preset: str):
  """shape_config with this platform's fused attention kernel, validated as the trainer does."""
  config = shape_config(family, preset)
  config.model.attention = preferred_backend()
  config_io.validate(config)
  return config


def describe(config, video_shape) -> dict:
  m = config.model
  _, t, h, w, c = video_shape
  pt, ph, pw = m.patch_size
  return {"dim": m.dim, "depth": m.depth, "heads": m.num_heads, "ffn": int(m.dim * m.mlp_ratio),
          "patch": list(m.patch_size), "video_shape": list(video_shape),
          "tokens_per_clip": (t // pt) * (h // ph) * (w // pw),
          "text_encoder": {"length": config.text.max_length, "dim": config.text.dim, "depth": config.text.depth},
          "dtype": m.dtype, "remat": m.remat, "attention": m.attention, "scan_layers": m.scan_layers}


def param_counts(config) -> dict:
  shapes = jax.eval_shape(lambda: factory.init_params(config, jax.random.key(0)))
  count = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
  total = count(shapes)
  return {"params": total, "dit_params": count(shapes["dit"]),
          "state_gib_estimate": round(total * STATE_BYTES_PER_PARAM / 2**30, 1)}


def synthetic_batch(config, video_shape, mesh, tokenizer) -> dict:
  rng = np.random.default_rng(0)
  tokens, mask = tokenizer.encode_batch([PROMPT] * video_shape[0])
  batch = {"video": rng.integers(0, 256, video_shape, dtype=np.uint8), "tokens": tokens, "text_mask": mask}
  return {k: jax.device_put(v, sharding.batch_sharding(mesh, v.ndim)) for k, v in batch.items()}


def train_devices(preset):
  return jax.local_devices() if preset == "gpu" else jax.local_devices()[:1]


def video_shape_for(config, preset, num_devices) -> tuple:
  batch = num_devices if preset == "gpu" else 1  # one clip per device
  return (batch, *LATENT[preset], config.model.in_channels)


def abstract_step(config, mesh, video_shape):
  """(the trainer's jitted step, abstract (state, batch, key) with their shardings)."""
  tx = train_state.make_optimizer(config.optim, config.train.num_steps)
  state = train_state.abstract_state(config, mesh, tx)
  length = config.text.max_length
  batch = {name: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.batch_sharding(mesh, len(shape)))
           for name, shape, dtype in (("video", video_shape, "uint8"), ("tokens", (video_shape[0], length), "int32"),
                                      ("text_mask", (video_shape[0], length), "bool"))}
  key = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype, sharding=NamedSharding(mesh, P()))
  return build_train_step(config, mesh, tx, Tokenizer(length)), (state, batch, key)


# ---- train -------------------------------------------------------------------------------------


def bench_train(family, preset, steps, dry_run=False) -> dict:
  config = model_config(family, preset)
  devices = train_devices(preset)
  mesh = sharding.make_mesh({"data": 1, "fsdp": -1}, devices)
  video_shape = video_shape_for(config, preset, len(devices))
  step_flops = flops.train_step_flops(config, video_shape)
  out = {"model": family, **describe(config, video_shape), "mesh": dict(mesh.shape), "batch": video_shape[0],
         **param_counts(config), "model_tflop_per_step": round(step_flops / 1e12, 4)}
  if dry_run:  # trace the step on abstract inputs: shapes, shardings and mesh checks, no compile
    step, args = abstract_step(config, mesh, video_shape)
    with jax.set_mesh(mesh):
      _, metrics = jax.eval_shape(step, *args)
    return {**out, "traced": {k: str(v.dtype) + str(list(v.shape)) for k, v in metrics.items()}}
  tokenizer = Tokenizer(config.text.max_length)
  tx = train_state.make_optimizer(config.optim, config.train.num_steps)
  state = train_state.create_state(config, mesh, tx, jax.random.key(0))
  step = build_train_step(config, mesh, tx, tokenizer)
  batch = synthetic_batch(config, video_shape, mesh, tokenizer)
  keys = [jax.random.key(i) for i in range(steps + 1)]
  with jax.set_mesh(mesh):
    start = time.perf_counter()
    compiled = step.lower(state, batch, keys[0]).compile()
    compile_s = time.perf_counter() - start
    state, metrics = compiled(state, batch, keys[0])  # warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for key in keys[1:]:
      state, metrics = compiled(state, batch, key)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - start) / steps
  peak = flops.peak_flops_per_device(devices[0].device_kind)
  mfu = flops.mfu(step_flops, step_s, len(devices), peak)
  out.update(compile_s=round(compile_s, 2), step_s=round(step_s, 4), steps_timed=steps,
             clips_per_s=round(video_shape[0] / step_s, 4),
             tokens_per_s=round(video_shape[0] * out["tokens_per_clip"] / step_s, 1),
             tflops_per_device=round(flops.tflops_per_device(step_flops, step_s, len(devices)), 4),
             mfu=None if mfu is None else round(mfu, 4),
             # remat "full" recomputes each block's forward: hardware does ~4/3 of the model FLOPs.
             hfu_estimate=None if mfu is None or config.model.remat != "full" else round(mfu * 4 / 3, 4),
             loss=round(float(metrics["loss"]), 4))
  stats = devices[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    out["device_peak_gib_so_far"] = round(stats["peak_bytes_in_use"] / 2**30, 2)
  return out


# ---- sample ------------------------------------------------------------------------------------


def _random_sampler(config, mesh, tokenizer) -> VideoSampler:
  """A sampler over randomly initialised parameters of `config`, created sharded on `mesh`."""
  graphdef, _ = factory.abstract_model(config)
  with jax.set_mesh(mesh):
    params = jax.jit(lambda k: factory.init_params(config, k),
                     out_shardings=factory.param_shardings(config, mesh))(jax.random.key(0))
  return VideoSampler(graphdef, params, tokenizer, mesh=mesh)


def bench_sample(preset, steps, dry_run=False) -> dict:
  """Euler + CFG (cond and uncond batched) on one device, batch 1: Wan's 480p x 81 frames setting."""
  config = model_config("wan_1p3b_like", preset)
  video_shape = (1, *LATENT[preset], config.model.in_channels)
  cfg = 5.0
  # Per step: one forward of the cond+uncond batch (text encoder included).
  step_flops = flops.forward_flops(config, (2, *video_shape[1:]))
  out = {"model": "wan_1p3b_like", **describe(config, video_shape), "sampler": "euler", "cfg": cfg,
         "cfg_batched": True, "steps": steps, "model_tflop_per_step": round(step_flops / 1e12, 4)}
  if dry_run:
    return out
  mesh = sharding.make_mesh({"data": -1}, jax.local_devices()[:1])
  tokenizer = Tokenizer(config.text.max_length)
  sampler = _random_sampler(config, mesh, tokenizer)
  _, t, h, w, c = video_shape
  opts = dict(num_frames=t, height=h, width=w, channels=c, patch_size=config.model.patch_size, cfg=cfg,
              sampler="euler", shift=config.sample.shift)
  start = time.perf_counter()
  jax.block_until_ready(sampler.generate([PROMPT], [0], steps=1, **opts))  # compiles the guided step
  first_call_s = time.perf_counter() - start
  start = time.perf_counter()
  jax.block_until_ready(sampler.generate([PROMPT], [0], steps=steps, **opts))
  total_s = time.perf_counter() - start
  out.update(first_call_s=round(first_call_s, 2), total_s=round(total_s, 3), s_per_step=round(total_s / steps, 4),
             tflops=round(step_flops * steps / total_s / 1e12, 4),
             extrapolated_50_steps_s=round(total_s / steps * 50, 2))
  out["student"] = _student_steps(config, video_shape, mesh, tokenizer, steps)
  return out


def _student_steps(config, video_shape, mesh, tokenizer, steps) -> dict:
  """The same shape as a vdit.distill student (interval-conditioned, guidance distilled in): one
  network pass per step, so a 4-step video costs 4 passes against the teacher's 2 x 50."""
  with config.unlocked():
    config.model.interval_conditioning = True
  sampler = _random_sampler(config, mesh, tokenizer)
  _, t, h, w, c = video_shape
  opts = dict(num_frames=t, height=h, width=w, channels=c, patch_size=config.model.patch_size, cfg=1.0,
              sampler="euler", shift=config.sample.shift)
  jax.block_until_ready(sampler.generate([PROMPT], [0], steps=1, **opts))  # compiles
  start = time.perf_counter()
  jax.block_until_ready(sampler.generate([PROMPT], [0], steps=steps, **opts))
  total_s = time.perf_counter() - start
  return {"passes_per_step": 1, "s_per_step": round(total_s / steps, 4), "four_steps_s": round(total_s / steps * 4, 3)}


# ---- attention ---------------------------------------------------------------------------------


def _guarded(fn, *args) -> dict:
  try:
    return fn(*args)
  except Exception as e:  # out of memory at long sequences, kernel limits: recorded, the rest goes on
    return {"error": f"{type(e).__name__}: {str(e)[:400]}"}


def _compile_seconds(config, mesh, video_shape) -> float:
  """Ahead-of-time compile of the trainer's step on abstract state (nothing allocated or run)."""
  step, args = abstract_step(config, mesh, video_shape)
  with jax.set_mesh(mesh):
    start = time.perf_counter()
    step.lower(*args).compile()
    return time.perf_counter() - start


def bench_compile(preset, dry_run=False) -> dict:
  family, depth = PRESETS[preset]["compile_family"], PRESETS[preset]["compile_depth"]
  devices = train_devices(preset)
  mesh = sharding.make_mesh({"data": 1, "fsdp": -1}, devices)
  out = {"model": family, "what": "lower + compile of the train step (abstract state), scan vs unrolled blocks"}
  for scan in (True, False):
    config = model_config(family, preset)
    config.model.scan_layers, config.model.depth = scan, depth
    video_shape = video_shape_for(config, preset, len(devices))
    out.setdefault("shape", describe(config, video_shape))
    if not dry_run:
      out["scan_s" if scan else "unrolled_s"] = round(_compile_seconds(config, mesh, video_shape), 2)
  out["shape"].pop("scan_layers")
  if not dry_run:
    out["unrolled_over_scan"] = round(out["unrolled_s"] / out["scan_s"], 2)
  return out


# ---- peer --------------------------------------------------------------------------------------


def peer_spec(preset, steps) -> dict:
  config = shape_config("wan_1p3b_like", preset)
  m, t = config.model, config.text
  return {"device": "cuda" if preset == "gpu" else "cpu", "dtype": "bfloat16" if preset == "gpu" else "float32",
          "compile": preset == "gpu", "gradient_checkpointing": m.remat == "full", "num_heads": m.num_heads,
          "head_dim": m.dim // m.num_heads, "ffn_dim": int(m.dim * m.mlp_ratio), "num_layers": m.depth,
          "in_channels": m.in_channels, "text_dim": t.dim, "text_length": t.max_length,
          "latent": list(LATENT[preset]), "batch": 1, "steps": steps}


def bench_peer(preset, steps, dry_run=False) -> dict:
  """diffusers WanTransformer3DModel in a subprocess (benchmarks/peer_wan_torch.py)."""
  spec = peer_spec(preset, steps)
  config = shape_config("wan_1p3b_like", preset)
  video_shape = (1, *LATENT[preset], config.model.in_channels)
  # The peer has no text encoder (it takes text embeddings): the DiT's FLOPs alone.
  step_flops = 3 * flops.dit_forward_flops(config.model, config.text.dim, video_shape, config.text.max_length)
  out = {"model": "diffusers WanTransformer3DModel", "spec": spec, "model_tflop_per_step": round(step_flops / 1e12, 4)}
  if preset == "cpu":
    out["note"] = ("NOT the target measurement: scaled-down shape, float32 eager on CPU (no torch.compile, "
                   "no bf16); the target is the gpu preset.")
  missing = [name for name in ("torch", "diffusers") if importlib.util.find_spec(name) is None]
  if missing:
    return {**out, "available": False, "reason": f"not importable: {', '.join(missing)} (pip install torch diffusers)."}
  if dry_run:
    return out
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_wan_torch.py")
  proc = subprocess.run([sys.executable, script, f"--spec={json.dumps(spec)}"], capture_output=True, text=True)
  lines = proc.stdout.strip().splitlines()
  if proc.returncode or not lines:
    return {**out, "available": False, "reason": f"peer exited {proc.returncode}: {proc.stderr.strip()[-600:]}"}
  result = json.loads(lines[-1])
  if result.get("available"):
    result["tflops"] = round(step_flops / result["step_s"] / 1e12, 4)
  return {**out, **result}


def peer_ratio(peer, train) -> dict | None:
  """Throughput (clips/s per device) of vdit over the peer on the same clip shape: > 1 = vdit faster."""
  wan = next((r for r in train if r.get("model") == "wan_1p3b_like" and "step_s" in r), None)
  if not peer.get("available") or "step_s" not in peer or wan is None:
    return None
  vdit = wan["batch"] / wan["step_s"] / (wan["mesh"]["data"] * wan["mesh"]["fsdp"])
  return {"vdit_over_peer": round(vdit / (peer["spec"]["batch"] / peer["step_s"]), 3),
          "vdit_clips_per_s_per_device": round(vdit, 4), "peer_clips_per_s": round(1 / peer["step_s"], 4),
          "note": "vdit's step also runs its text encoder, which the peer takes as precomputed embeddings."}


# ---- report ------------------------------------------------------------------------------------


def target_status(preset, results) -> dict:
  on_target = preset == "gpu" and jax.default_backend() in ("gpu", "tpu")
  why = "not measured on this device" + ("" if on_target else f" (preset {preset}, {jax.devices()[0].device_kind})")
  wan = next((r for r in results.get("train", []) if r.get("model") == "wan_1p3b_like"), {})
  ratio = (results.get("peer") or {}).get("ratio") or {}
  sample = results.get("sample") or {}
  measured = {
      "wan_1p3b_train_mfu": wan.get("mfu"),
      "peer_throughput_ratio": ratio.get("vdit_over_peer"),
      "sample_480p_81f_50steps_s": sample.get("total_s") if sample.get("steps") == 50 else None,
  }
  status = {}
  for name, target in TARGETS.items():
    value = measured[name] if on_target else None
    met = None if value is None else (value <= target if name.endswith("_s") else value >= target)
    status[name] = {"target": target, "measured": value, "met": met}
    if value is None:
      status[name]["note"] = why
  return status


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
  parser.add_argument("--steps", type=int, default=0, help="timed train and peer steps (0: the preset's: gpu 10, cpu 3); sampling runs gpu 50, cpu 3 steps")
  parser.add_argument("--sections", default=",".join(SECTIONS))
  parser.add_argument("--families", default=",".join(FAMILIES), help="train section's model families")
  parser.add_argument("--attention", default="", choices=("",) + attention_speed.BACKENDS,
                      help="attention kernel for train/sample/compile (default: the platform's fused one)")
  parser.add_argument("--out", default="")
  parser.add_argument("--dry_run", action="store_true", help="shapes, params and FLOPs only; nothing compiles")
  args = parser.parse_args()
  sections = [s for s in args.sections.split(",") if s]
  unknown = sorted(set(sections) - set(SECTIONS))
  if unknown:
    parser.error(f"unknown sections {unknown}; choose from {','.join(SECTIONS)}")
  families = [f for f in args.families.split(",") if f]
  if set(families) - set(FAMILIES):
    parser.error(f"unknown families {sorted(set(families) - set(FAMILIES))}; choose from {','.join(FAMILIES)}")
  if args.attention:
    ATTENTION_OVERRIDE.append(args.attention)
  preset = PRESETS[args.preset]
  steps = args.steps or preset["steps"]
  if args.preset == "gpu":  # the largest model needs more than JAX's default 75% of the GPU
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
  jax.config.update("jax_enable_compilation_cache", False)  # compile times must not be cache loads

  results = {}
  if "peer" in sections:  # first: before JAX claims the accelerator's memory
    results["peer"] = _guarded(bench_peer, args.preset, steps, args.dry_run)
  if "train" in sections:
    results["train"] = []
    for family in families:
      results["train"].append({"model": family, **_guarded(bench_train, family, args.preset, steps, args.dry_run)})
      gc.collect()
  if "sample" in sections:
    results["sample"] = _guarded(bench_sample, args.preset, preset["sample_steps"], args.dry_run)
  if "attention" in sections:
    results["attention"] = _guarded(attention_speed.bench_attention, args.preset, preset, preferred_backend(), _guarded,
                                    args.dry_run)
  if "compile" in sections:
    results["compile"] = _guarded(bench_compile, args.preset, args.dry_run)
  if "peer" in results and "train" in results:
    results["peer"]["ratio"] = peer_ratio(results["peer"], results["train"])

  report = {"device_kind": jax.devices()[0].device_kind, "platform": jax.default_backend(),
            "device_count": jax.device_count(), "jax": jax.__version__, "preset": args.preset,
            "dry_run": args.dry_run,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "peak_tflops_per_device": (flops.peak_flops_per_device(jax.devices()[0].device_kind) or 0) / 1e12 or None,
            **({"dry_run_note": f"configs as built on {jax.default_backend()} (attention {preferred_backend()!r} "
                                "here); traced, nothing compiled or ran"} if args.dry_run else {}),
            "scale_down": CPU_SCALE_DOWN if args.preset == "cpu" else None,
            "input": "synthetic uint8 latents [B, T, H, W, 16] (the step maps uint8 to [-1, 1]) and a fixed prompt",
            "targets": TARGETS, "target_status": target_status(args.preset, results), **results}
  text = json.dumps(report, indent=2)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
