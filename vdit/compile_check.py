"""Compiles the train step ahead of time for a target topology: memory per device, FLOPs, fit.

  python -m vdit.compile_check --config=configs/dit_xl.py --topology=tpu:v5p:4x4x4 \
      --height=256 --width=256 [--config.mesh.fsdp=-1 ...] [--memory_per_device_gb=95]

Lowers and compiles the jitted step that vdit.training.dit_trainer runs (sharded, donated state) on abstract
arrays: nothing is allocated and nothing runs, so a mesh, batch or memory problem shows up on a
CPU machine in minutes rather than after a pod is allocated. Prints one JSON object.
Exit status: 0 fits (or no memory limit is known); 1 would not fit; 2 bad config, topology or mesh.

Topologies:
  cpu:N           N simulated CPU devices on this machine.
  tpu:CHIP:SHAPE  a Cloud TPU slice, CHIP one of v4, v5e, v5p, v6e: tpu:v5e:4x4, tpu:v5p:2x2x2
                  (--num_slices=K for K slices). Needs libtpu, not a TPU: `pip install "jax[tpu]==$JAX_VERSION"` (the libtpu
                  your jax pins) on any CPU host.
  local           this machine's devices as they are (e.g. on a GPU host).
Clip size: --num_frames/--height/--width, else config.data.num_frames and config.sample.*, else
the largest bucket of config.data.dir. Batch: as the trainer plans it (train.global_batch_size,
or data.tokens_per_batch // tokens per clip; train.grad_accum_steps microbatches per step).
"""
import importlib.util
import json
import os
import sys
import time

from absl import flags
from ml_collections import config_flags

from vdit.core import command
from vdit.core.errors import UserError


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/NAME.py[:args]).",
                                  lock_config=True)
  flags.DEFINE_string("topology", None, "cpu:N, tpu:CHIP:SHAPE (e.g. tpu:v5e:4x4) or local.")
  flags.DEFINE_integer("num_slices", 1, "TPU slices (multislice) for tpu:... topologies.", lower_bound=1)
  flags.DEFINE_integer("num_frames", 0, "Frames per clip (0: from the config).", lower_bound=0)
  flags.DEFINE_integer("height", 0, "Clip height (0: from the config).", lower_bound=0)
  flags.DEFINE_integer("width", 0, "Clip width (0: from the config).", lower_bound=0)
  flags.DEFINE_float("memory_per_device_gb", None,
                     "Memory per device in GiB (default: the target's known HBM; none for CPU).")
  flags.mark_flags_as_required(["config", "topology"])


# chip name -> (name in libtpu's topology strings, chip config, dims of the shape, HBM GiB per chip)
_TPU_CHIPS = {
    "v4": ("v4", "megacore", 3, 32),
    "v5p": ("v5", "megacore", 3, 95),
    "v5e": ("v5e", "default", 2, 16),
    "v6e": ("v6e", "default", 2, 32),
}
# vdit.training.flops.device_family names -> HBM GiB, for `local` devices that do not report their limit.
_HBM_GIB = {"tpu_v4": 32, "tpu_v5e": 16, "tpu_v5p": 95, "tpu_v6e": 32, "a100": 80, "h100": 80, "gh200": 96,
            "h200": 141, "b200": 180}
_GIB = 2**30


class TopologyError(UserError):
  pass


def _use_cpu_devices(count: int) -> None:
  """Sets XLA_FLAGS for `count` CPU devices; re-executes this command if JAX was imported already,
  since XLA reads the device count once, when JAX creates its CPU client."""
  flag = "--xla_force_host_platform_device_count="
  kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(flag)]
  if not any(f.startswith("--xla_backend_optimization_level=") for f in kept):
    # The program never runs, so LLVM's optimisations would only slow the check (the HLO passes and
    # buffer assignment, which the memory report comes from, are unchanged).
    kept.append("--xla_backend_optimization_level=0")
  wanted = " ".join(kept + [f"{flag}{count}"])
  changed = os.environ.get("XLA_FLAGS") != wanted or os.environ.get("JAX_PLATFORMS") != "cpu"
  os.environ.update(XLA_FLAGS=wanted, JAX_PLATFORMS="cpu")
  if changed and "jax" in sys.modules:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", "vdit.compile_check", *sys.argv[1:]])


def parse_topology(topology: str) -> tuple[str, tuple]:
  """'cpu:8' -> ('cpu', (8,)); 'tpu:v5e:4x4' -> ('tpu', ('v5e', (4, 4))); 'local' -> ('local', ())."""
  kind, _, rest = topology.partition(":")
  if kind == "local" and not rest:
    return "local", ()
  if kind == "cpu" and rest.isdigit() and int(rest) > 0:
    return "cpu", (int(rest),)
  if kind == "tpu":
    chip, _, shape = rest.partition(":")
    dims = shape.split("x")
    if chip in _TPU_CHIPS and len(dims) == _TPU_CHIPS[chip][2] and all(d.isdigit() and int(d) > 0 for d in dims):
      return "tpu", (chip, tuple(int(d) for d in dims))
    if chip in _TPU_CHIPS:
      raise TopologyError(f"--topology={topology}: a {chip} slice shape has {_TPU_CHIPS[chip][2]} dims "
                          f"(e.g. tpu:{chip}:{'x'.join(['2'] * _TPU_CHIPS[chip][2])}).")
  raise TopologyError(f"--topology={topology!r} is not one of cpu:N, tpu:CHIP:SHAPE with CHIP in "
                      f"{sorted(_TPU_CHIPS)} (e.g. tpu:v5e:4x4), or local.")


def jax_version() -> str:
  from importlib.metadata import version
  return version("jax")


def _tpu_devices(chip: str, dims: tuple, num_slices: int) -> list:
  if not (importlib.util.find_spec("libtpu") or os.environ.get("TPU_LIBRARY_PATH")):
    raise TopologyError(f"--topology=tpu:{chip}:... compiles with libtpu, which is not installed here; "
                        f"`pip install 'jax[tpu]=={jax_version()}'` (the libtpu this jax pins; no TPU needed), or check the "
                        "mesh on CPU with --topology=cpu:N.")
  from jax.experimental import topologies
  name, chip_config, _, _ = _TPU_CHIPS[chip]
  # Torus wraparound as Cloud TPU slices have it: full cubes (>= 4 per dim) on 3D chips, 16-chip rows on 2D ones.
  wrap = tuple(min(dims) >= 4 for _ in dims) if len(dims) == 3 else tuple(d == 16 for d in dims) + (False,)
  shape = "x".join(map(str, dims))
  try:
    return topologies.get_topology_desc(
        platform="tpu", topology_name=f"{name}:{shape}", chip_config_name=chip_config,
        chips_per_host_bounds=(2, 2, 1), num_slices=num_slices, wrap=wrap).devices
  except (RuntimeError, ValueError, NotImplementedError) as e:
    raise TopologyError(f"libtpu cannot describe --topology=tpu:{chip}:{shape} with --num_slices={num_slices}: "
                        f"{e}") from None


def _memory_limit_gib(kind: str, spec: tuple, devices) -> float | None:
  """The target's memory per device: the chip's HBM, or what a local accelerator reports."""
  from vdit.training import flops
  if kind == "tpu":
    return float(_TPU_CHIPS[spec[0]][3])
  if kind == "local" and devices[0].platform != "cpu":
    stats = devices[0].memory_stats() or {}
    if "bytes_limit" in stats:
      return stats["bytes_limit"] / _GIB
    return _HBM_GIB.get(flops.device_family(devices[0].device_kind))
  return None


def clip_shape(config, frames: int, height: int, width: int):
  """(frames, height, width, bucket name or None): the flags, else the config, else the data's largest bucket."""
  from vdit.core.errors import ConfigError
  frames = frames or config.data.num_frames or config.sample.num_frames
  height, width = height or config.sample.height, width or config.sample.width
  _, ph, pw = config.model.patch_size
  if frames and height and width:
    if height % ph or width % pw:
      raise ConfigError(f"Clip size {height}x{width} is not divisible by the patch {ph}x{pw}; choose --height and "
                        "--width (or config.sample.height/width) that are multiples of it.")
    return frames, height, width, None
  if not config.data.dir:
    raise ConfigError("No clip size: pass --num_frames, --height and --width (or set config.sample.num_frames/"
                      "height/width, or config.data.dir to take the data's largest bucket).")
  from vdit.data import dataset_files
  largest = max(dataset_files.read_metadata(config.data.dir)["buckets"],
                key=lambda b: b["num_frames"] * b["height"] * b["width"])
  return (min(frames or largest["num_frames"], largest["num_frames"]), largest["height"], largest["width"],
          largest["name"])


def check(config, devices, *, frames=0, height=0, width=0, memory_limit_gib=None) -> dict:
  """Compiles the train step of `config` for `devices` (real or compile-only); returns the report."""
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P

  import numpy as np
  from vdit.config import prepare
  from vdit.training import flops
  from vdit.vae import latents
  from vdit.parallel import sharding
  from vdit.training import train_state
  from vdit.data import bucket_plan
  from vdit.text import conditioner
  from vdit.text.tokenizer import Tokenizer

  # The boundary: checked (kernels against the target's platform, not this host's) and frozen.
  config = prepare.for_compile(config, platform=devices[0].platform)
  accum = config.train.grad_accum_steps
  frozen_text = config.text.encoder != "trainable"
  # As vdit.training.dit_trainer plans batches: each splits over the batch devices, the hosts and, on each
  # device, into the gradient-accumulation microbatches.
  mesh = sharding.make_mesh(dict(config.mesh), devices, dcn_mesh_shape=dict(config.dcn_mesh))
  batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]
  num_hosts = len({d.process_index for d in devices})
  multiple = bucket_plan.lcm(batch_devices * accum, num_hosts)
  batch_size = config.train.global_batch_size
  if not config.data.tokens_per_batch and batch_size % multiple:
    raise sharding.MeshConfigError(
        f"config.train.global_batch_size={batch_size} does not split over mesh {dict(mesh.shape)}: "
        f"{batch_devices} batch devices x grad_accum_steps={accum} on {num_hosts} host(s) need a multiple "
        f"of {multiple}.")
  frames, height, width, bucket = clip_shape(config, frames, height, width)
  plan, = bucket_plan.plan(
      [{"name": bucket or "clip", "shard_paths": [], "num_clips": 1, "num_frames": frames, "height": height,
        "width": width}], patch_size=tuple(config.model.patch_size), global_batch_size=batch_size,
      tokens_per_batch=config.data.tokens_per_batch, batch_multiple=multiple, max_frames=0, image_ratio=-1.0)
  video_shape = (plan.batch_size, plan.frames, height, width, config.model.in_channels)

  tx = train_state.make_optimizer(config.optim, config.train.num_steps)
  state = train_state.abstract_state(config, mesh, tx)
  length = config.text.max_length
  # A frozen text encoder's embeddings come from the latent cache ([B, L, D] float), as do latents.
  video_dtype = "float32" if latents.vae_path(config) else "uint8"
  text = ((plan.batch_size, length, config.text.dim), "float32") if frozen_text else ((plan.batch_size, length), "int32")
  batch = {name: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.batch_sharding(mesh, len(shape)))
           for name, shape, dtype in (("video", video_shape, video_dtype), ("tokens", *text),
                                      ("text_mask", (plan.batch_size, length), "bool"))}
  key_dtype = jax.eval_shape(lambda: jax.random.key(0)).dtype
  key = jax.ShapeDtypeStruct((), key_dtype, sharding=NamedSharding(mesh, P()))
  from vdit.training.dit_trainer import build_train_step  # after the checks above: it loads the trainer's heavy imports
  empty = (conditioner.CachedEmptyCaption(np.zeros((1, config.text.dim)), length) if frozen_text
           else Tokenizer(length))
  step = build_train_step(config, mesh, tx, empty)
  start = time.perf_counter()
  out_of_memory = None
  # With LoRA the step also takes the frozen base (vdit/training/dit_trainer.py Base).
  frozen = ()
  if config.lora.rank:
    from vdit.model import factory, lora
    frozen = (lora.without_adapters(factory.abstract_params(config, mesh)),)
  with jax.set_mesh(mesh):
    lowered = step.lower(state, *frozen, batch, key)
    try:
      compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
      # The TPU compiler refuses a program whose buffers exceed HBM: the ordinary "would not fit".
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      out_of_memory = _first_line(str(e))
  compile_seconds = time.perf_counter() - start

  model_flops = flops.train_step_flops(config, video_shape)
  memory, cost, fits, kernels = None, None, False, None
  if out_of_memory is None:
    # Fused attention kernels in the compiled program (Mosaic TPU custom calls, cuDNN attention):
    # proof that model.attention=splash/cudnn runs its kernel at this shape.
    hlo = compiled.as_text() or ""
    kernels = hlo.count('custom_call_target="tpu_custom_call"') + hlo.count('custom_call_target="__cudnn$fmha')
    memory = _memory_report(compiled.memory_analysis())
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    fits = None
    if memory and memory_limit_gib is not None:
      fits = memory["total_bytes"] <= memory_limit_gib * _GIB
  return {
      "device_kind": devices[0].device_kind, "num_devices": len(devices), "num_hosts": num_hosts,
      "mesh": dict(mesh.shape), "batch_shape": list(video_shape), "bucket": bucket,
      "attention": config.model.attention, "remat": config.model.remat, "lora_rank": config.lora.rank,
      "compile_seconds": round(compile_seconds, 2), "memory_per_device": memory,
      "memory_limit_gib": memory_limit_gib, "fits": fits, "out_of_memory": out_of_memory,
      "fused_kernel_calls": kernels,
      "model_flops_per_step": model_flops, "model_flops_per_device": model_flops / len(devices),
      # XLA's count for one device's program; it counts a loop body (scanned blocks, accumulated
      # microbatches) once.
      "hlo_flops_per_device": (cost or {}).get("flops"),
  }


def _first_line(message: str) -> str:
  """XLA's out-of-memory message without its allocation dump: the line that says what exceeded what."""
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  return next((line for line in lines if "exceeds" in line or "RESOURCE_EXHAUSTED" in line), lines[0])[:500]


def _memory_report(stats) -> dict | None:
  """Bytes per device from XLA's memory analysis; the total is the step's peak: inputs, temporaries,
  outputs not aliased to (donated) inputs, and the program itself."""
  if stats is None:
    return None
  fields = {"argument_bytes": stats.argument_size_in_bytes, "output_bytes": stats.output_size_in_bytes,
            "alias_bytes": stats.alias_size_in_bytes, "temp_bytes": stats.temp_size_in_bytes,
            "generated_code_bytes": stats.generated_code_size_in_bytes}
  total = (fields["argument_bytes"] + fields["output_bytes"] - fields["alias_bytes"] + fields["temp_bytes"]
           + fields["generated_code_bytes"])
  return {**fields, "total_bytes": total, "total_gib": round(total / _GIB, 3)}


def main(f):
  kind, spec = parse_topology(f.topology)
  if kind == "cpu":
    _use_cpu_devices(spec[0])
  elif kind == "tpu":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # tracing runs on the host; the TPU, if any, stays free
  from vdit.core import logs
  logs.quiet_library_logs()
  import jax
  # Cached executables would report load time as compile time.
  jax.config.update("jax_enable_compilation_cache", False)
  devices = _tpu_devices(*spec, f.num_slices) if kind == "tpu" else jax.devices()
  limit = f.memory_per_device_gb if f.memory_per_device_gb is not None else _memory_limit_gib(kind, spec, devices)
  report = check(f.config, devices, frames=f.num_frames, height=f.height, width=f.width, memory_limit_gib=limit)
  report = {"topology": f.topology, **report}
  print(json.dumps(report, indent=2))
  if report["fits"] is False:
    need = (f"XLA: {report['out_of_memory']}" if report["out_of_memory"] else
            f"needs {report['memory_per_device']['total_bytes'] / _GIB:.2f} GiB per device of {limit:g} GiB")
    print(f"would not fit on {f.topology}: {need}; shard more (config.mesh.fsdp), set config.model.remat=full, "
          "use model.attention=splash/cudnn/blockwise, or a smaller batch or clip.", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  command.run(main, define_flags)
