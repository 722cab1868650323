"""Speed and peak memory of Wan 2.1's causal 3D VAE (vdit.vae.wan_vae), tiled and untiled, as JSON.

  python benchmarks/vae_speed.py [--preset=cpu|gpu] [--dtype=float32|bfloat16] [--reps=N] [--out=FILE.json]

Wan 2.1's architecture (WanVAEConfig's defaults, 127M parameters) with random weights: there is no
network here, and the speed does not depend on the values. Each case (clip size, tiling, encode or
decode) runs in a process of its own, so its peak memory is its own and the parent never claims the
accelerator: the chunk steps it needs are compiled ahead (compile_s), then a random clip is encoded,
or random latents of the clip's latent shape decoded, `reps` times (seconds: the median). Encoding
takes the first frame, then 4 frames per step; decoding 1 latent frame per step (the defaults).

Peak memory, two figures:
- measured. CPU: `rss_peak_delta_bytes`, the process's resident-set high-water mark over the timed
  runs (reset after setup and compilation through /proc/self/clear_refs) minus the resident set
  before them: activations, caches, outputs and XLA's buffers, not the weights or the input. GPU:
  `device_peak_bytes`, the allocator's peak_bytes_in_use over the whole process (weights, input and
  the compiler's autotuning included: JAX cannot reset it), and `device_peak_delta_bytes` above the
  bytes in use before the timed runs.
- analytic: `xla_step`, XLA's memory_analysis of the largest compiled chunk step (most temp bytes):
  temp (scratch: activations), argument (the weights the step reads, the chunk and the cache) and
  output (the chunk's output and the new cache) bytes.

`cpu` runs 5 x 64 x 64 and 17 x 128 x 128 (also tiled) once each, ~2.5 minutes on 2 cores: it checks
the benchmark and gives CPU figures. `gpu` runs 17 and 33 frames at 128 and 256 px and Wan's 81 x 480 x 832, each
largest size also tiled.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ENCODE_CHUNK, DECODE_CHUNK = 4, 1  # frames per encode step, latent frames per decode step
# (frames, height, width, tile, tile_overlap); tile sizes in pixels, None: untiled. Tiles of 80 px
# every 48 on 128 px, and of 160 every 96 on 256 px, are 2 x 2 equal tiles (one compiled shape);
# 256 every 192 (diffusers' default) on 480 x 832 is 3 x 5 tiles, the edge ones clipped.
PRESETS = {
    "cpu": dict(reps=1, cases=[(5, 64, 64, None, None), (17, 128, 128, None, None), (17, 128, 128, 80, 32)]),
    "gpu": dict(reps=3, cases=[(17, 128, 128, None, None), (17, 256, 256, None, None), (33, 256, 256, None, None),
                               (33, 256, 256, 160, 64), (81, 480, 832, None, None), (81, 480, 832, 256, 64)]),
}
MEMORY_NOTES = {
    "rss_peak_delta_bytes": "CPU: resident-set high-water mark over the timed runs minus the resident set "
                            "before them (weights and input excluded, XLA buffers included)",
    "device_peak_bytes": "GPU: allocator peak_bytes_in_use over the process (weights, input, autotuning included)",
    "device_peak_delta_bytes": "GPU: device_peak_bytes minus the bytes in use before the timed runs",
    "xla_step": "XLA memory_analysis of the largest compiled chunk step: temp, argument and output bytes",
}


# ---------------------------------------------------------------------------- one case (child)


def random_vae(dtype):
  """Wan 2.1's VAE with fan-in scaled random kernels (numpy: eager nnx init is slow), on device."""
  import jax
  import numpy as np
  from flax import nnx
  from vdit.core import weights
  from vdit.vae import wan_vae
  config = wan_vae.WanVAEConfig()
  vae = nnx.eval_shape(lambda: wan_vae.WanVAE(config, rngs=nnx.Rngs(0), dtype=dtype))
  rng, tensors = np.random.default_rng(0), {}
  for name, shape in wan_vae.tensor_shapes(config).items():
    if name.endswith("kernel"):
      tensors[name] = rng.standard_normal(shape, np.float32) / np.float32(np.sqrt(np.prod(shape[:-1])))
    else:
      tensors[name] = (np.ones if name.endswith("scale") else np.zeros)(shape, np.float32)
  weights.load_into(vae, tensors, "random weights")
  nnx.update(vae, jax.device_put(nnx.state(vae)))
  return vae, sum(v.size for v in tensors.values())


def compile_steps(vae, op, x, tile, overlap):
  """Compiles every chunk step `op` will run on x (per tile shape: the first chunk, then the later
  ones) ahead of the timed runs; returns XLA's memory analysis of the one with the most temp bytes."""
  import functools
  import jax
  from flax import nnx
  from vdit.vae import tiling
  graphdef, state = nnx.split(vae)
  b, t, h, w, c = x.shape
  sf = vae.config.spatial_factor
  in_scale = sf if op == "encode" else 1
  tiles = tiling.check_tile(tile, overlap, sf)
  if tiles is None:
    sizes = {(h, w)}
  else:
    hs, ws = (tiling.spans(n // in_scale, size, o) for n, size, o in zip((h, w), *tiles))
    sizes = {((hb - ha) * in_scale, (wb - wa) * in_scale) for ha, hb in hs for wa, wb in ws}
  step = tiling.encode_step if op == "encode" else tiling.decode_step
  bounds = tiling.chunks(t, 1, ENCODE_CHUNK) if op == "encode" else tiling.chunks(t, DECODE_CHUNK, DECODE_CHUNK)
  lengths = [e - a for a, e in bounds]
  analyses = []
  for th, tw in sorted(sizes):
    chunk = lambda n: jax.ShapeDtypeStruct((b, n, th, tw, c), x.dtype)  # noqa: E731
    cache = jax.eval_shape(functools.partial(step, graphdef), state, chunk(lengths[0]), None)[1]
    analyses.append(step.lower(graphdef, state, chunk(lengths[0]), None).compile().memory_analysis())
    for n in sorted(set(lengths[1:])):
      analyses.append(step.lower(graphdef, state, chunk(n), cache).compile().memory_analysis())
  top = max(analyses, key=lambda m: m.temp_size_in_bytes)
  return {"temp_bytes": int(top.temp_size_in_bytes), "argument_bytes": int(top.argument_size_in_bytes),
          "output_bytes": int(top.output_size_in_bytes)}


def _proc_status(key):
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def _reset_rss_peak() -> bool:
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")  # resets VmHWM to the current resident set (Linux >= 4.0)
    return True
  except OSError:
    return False


def run_case(case, dtype_name, reps):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from vdit.vae import wan_vae
  op, frames, height, width, tile, overlap = case
  dtype = jnp.dtype(dtype_name)
  vae, params = random_vae(dtype)
  cfg, rng = vae.config, np.random.default_rng(1)
  if op == "encode":
    x = rng.uniform(-1, 1, (1, frames, height, width, cfg.in_channels))
    fn = lambda: wan_vae.encode(vae, x, chunk_frames=ENCODE_CHUNK, tile=tile, tile_overlap=overlap)[0]  # noqa: E731
  else:
    sf, tf = cfg.spatial_factor, cfg.temporal_factor
    x = rng.standard_normal((1, 1 + (frames - 1) // tf, height // sf, width // sf, cfg.z_dim))
    fn = lambda: wan_vae.decode(vae, x, chunk_frames=DECODE_CHUNK, tile=tile, tile_overlap=overlap)  # noqa: E731
  x = jax.block_until_ready(jnp.asarray(x, jnp.float32))
  start = time.perf_counter()
  xla_step = compile_steps(vae, op, x, tile, overlap)
  compile_s = time.perf_counter() - start

  device = jax.devices()[0]
  on_cpu = device.platform == "cpu"
  memory = {"xla_step": xla_step}
  if on_cpu:
    rss_before, reset = _proc_status("VmRSS"), _reset_rss_peak()
    if not reset:
      memory["rss_note"] = "clear_refs not writable: the peak includes setup and compilation"
  else:
    in_use_before = device.memory_stats()["bytes_in_use"]
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  if on_cpu:
    memory["rss_peak_delta_bytes"] = _proc_status("VmHWM") - rss_before
  else:
    memory["device_peak_bytes"] = int(device.memory_stats()["peak_bytes_in_use"])
    memory["device_peak_delta_bytes"] = memory["device_peak_bytes"] - int(in_use_before)
  seconds = statistics.median(times)
  num_tiles = 1
  if tile is not None:
    from vdit.vae import tiling
    (th, tw), (oh, ow) = tiling.check_tile(tile, overlap, cfg.spatial_factor)
    sf = cfg.spatial_factor
    num_tiles = len(tiling.spans(height // sf, th, oh)) * len(tiling.spans(width // sf, tw, ow))
  return {"op": op, "frames": frames, "height": height, "width": width, "tile": tile, "tile_overlap": overlap,
          "tiles": num_tiles, "compile_s": round(compile_s, 2), "seconds": round(seconds, 3),
          "clips_per_s": round(1 / seconds, 4), "frames_per_s": round(frames / seconds, 3),
          "memory": memory, "device": device.device_kind, "platform": device.platform, "params": int(params)}


# ----------------------------------------------------------------------------- driver (parent)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  parser.add_argument("--reps", type=int, default=None, help="timed runs per case (default: the preset's)")
  parser.add_argument("--out", default=None, help="also write the JSON here")
  parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: one case, in a child
  args = parser.parse_args()
  preset = PRESETS[args.preset]
  reps = args.reps or preset["reps"]
  if args.case:
    print(json.dumps(run_case(json.loads(args.case), args.dtype, reps)))
    return
  results, start = [], time.perf_counter()
  for frames, height, width, tile, overlap in preset["cases"]:
    for op in ("encode", "decode"):
      case = [op, frames, height, width, tile, overlap]
      run = subprocess.run([sys.executable, os.path.abspath(__file__), f"--case={json.dumps(case)}",
                            f"--dtype={args.dtype}", f"--reps={reps}"], capture_output=True, text=True, check=False)
      if run.returncode:
        results.append({"case": case, "error": run.stderr[-2000:]})
      else:
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
      print(json.dumps(results[-1]), file=sys.stderr, flush=True)
  ok = [r for r in results if "error" not in r]
  report = {"device": ok[0]["device"] if ok else None, "platform": ok[0]["platform"] if ok else None,
            "preset": args.preset, "dtype": args.dtype, "reps": reps,
            "model": {"config": "Wan 2.1 VAE (vdit.vae.wan_vae.WanVAEConfig defaults), random weights",
                      "params": ok[0]["params"] if ok else None},
            "chunking": {"encode_frames_per_step": ENCODE_CHUNK, "decode_latent_frames_per_step": DECODE_CHUNK},
            "memory_notes": MEMORY_NOTES, "total_s": round(time.perf_counter() - start, 1),
            "results": [{k: v for k, v in r.items() if k not in ("device", "platform", "params")} for r in results]}
  text = json.dumps(report, indent=2)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
