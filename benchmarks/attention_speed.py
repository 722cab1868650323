"""The attention section of benchmarks/scale.py: one self-attention layer, forward + backward, per
local kernel (xla, cudnn, splash) and per context-parallel mode (none, ring, ulysses) on the devices
present. Unavailable kernels are recorded with the reason vdit gives.
"""
import time

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from vdit.parallel import sharding
from vdit.model import rope
from vdit.model.attention import BACKENDS, Attention, backend_error
from vdit.model.context_parallel import MODES


def time_attention(backend, mode, mesh, length, dim, heads, dtype, iters) -> dict:
  """Forward + backward of one self-attention layer (QKV/out projections, QK RMSNorm, RoPE,
  attention) on [1, length, dim], the video tokens sharded over the mesh's context axis."""
  module = Attention(dim, heads, rngs=nnx.Rngs(0), backend=backend, context_parallel=mode, dtype=dtype)
  graphdef, params = nnx.split(module)
  angles = rope.sequence_angles(length, dim // heads)

  def loss(params, x):
    y = nnx.merge(graphdef, params)(x, angles=angles)
    return jnp.sum(jnp.square(y.astype(jnp.float32)))

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  x = jax.device_put(jax.random.normal(jax.random.key(1), (1, length, dim), dtype),
                     NamedSharding(mesh, P(None, "context" if mesh.shape["context"] > 1 else None, None)))
  with jax.set_mesh(mesh), sharding.activation_rules(sharding.DEFAULT_RULES):
    try:
      start = time.perf_counter()
      jax.block_until_ready(grad(params, x))
      first_s = time.perf_counter() - start
      start = time.perf_counter()
      for _ in range(iters):
        result = grad(params, x)
      jax.block_until_ready(result)
    except ValueError as e:  # a mode the shape or mesh does not allow (e.g. ulysses heads)
      return {"tokens": length, "available": False, "reason": str(e)}
  call_s = (time.perf_counter() - start) / iters
  layer_flops = 3 * (2.0 * length * dim * 4 * dim + 4.0 * length * length * dim)
  return {"tokens": length, "fwd_bwd_ms": round(call_s * 1e3, 3), "first_call_s": round(first_s, 2),
          "tflops_per_device": round(layer_flops / call_s / mesh.size / 1e12, 4)}



def bench_attention(preset: str, p: dict, preferred: str, guarded, dry_run=False) -> dict:
  """Forward + backward time of one self-attention layer per backend and context-parallel mode."""
  dim, heads = p["attention_dim"]
  dtype = jnp.bfloat16 if preset == "gpu" else jnp.float32
  iters = 5 if preset == "gpu" else 2
  lengths = p["attention_lengths"]
  out = {"what": "one self-attention layer, forward + backward, batch 1", "dim": dim, "heads": heads,
         "head_dim": dim // heads, "dtype": jnp.dtype(dtype).name, "tokens": list(lengths)}
  if dry_run:
    return out
  single = sharding.make_mesh({"data": -1}, jax.local_devices()[:1])
  backends = {}
  for backend in BACKENDS:
    error = backend_error(backend)
    if error:
      backends[backend] = {"available": False, "reason": error}
      continue
    runs = [guarded(time_attention, backend, "none", single, n, dim, heads, dtype, iters) for n in lengths]
    backends[backend] = {"available": True, "runs": runs}
  out["backends"] = backends
  count = len(jax.local_devices())
  if count < 2:
    out["context_parallel"] = {"available": False, "reason": f"needs more than one device; {count} here."}
    return out
  mesh = sharding.make_mesh({"context": -1}, jax.local_devices())
  local = preferred
  modes = {}
  for mode in MODES:
    runs = [guarded(time_attention, local, mode, mesh, n, dim, heads, dtype, iters)
            if n % count == 0 else {"tokens": n, "available": False, "reason": f"not divisible by {count}"}
            for n in lengths]
    modes[mode] = {"runs": runs}
  out["context_parallel"] = {"mesh": dict(mesh.shape), "local_backend": local, "modes": modes}
  return out


# ---- compile -----------------------------------------------------------------------------------
