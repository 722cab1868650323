"""Mesh construction and the logical-axis rules that map parameter/activation names to mesh axes.

Every parameter carries `logical_axes` metadata (e.g. ('embed', 'mlp')); activations are constrained
through `constrain`. One rules table turns those names into mesh axes, so a new topology is a change
of the mesh shape or of the rules, never of the model code.
"""
import contextlib
import math
import threading

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axis (or tuple of axes, or None). Parameters: 'embed' is sharded over fsdp
# (ZeRO-3 style), 'mlp'/'heads' over tensor (Megatron style) and also over fsdp where 'embed' has
# not taken it (vectors like biases, output projections), so every large parameter is split.
# Activations: the batch over data+fsdp.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("embed", "fsdp"),
    ("mlp", ("tensor", "fsdp")),
    ("heads", ("tensor", "fsdp")),
    ("kv", None),
    ("vocab", "tensor"),
    ("patch", None),
    ("layers", None),
    ("norm", None),
    ("modulation", None),
    ("freq", None),
)

_context = threading.local()


class MeshConfigError(ValueError):
  pass


def make_mesh(mesh_shape: dict, devices=None) -> jax.sharding.Mesh:
  """Builds a mesh from {'data': -1, 'fsdp': 1, 'tensor': 1}; one -1 fills the remaining devices."""
  devices = jax.devices() if devices is None else devices
  unknown = set(mesh_shape) - set(MESH_AXES)
  if unknown:
    raise MeshConfigError(f"Unknown mesh axes {sorted(unknown)}; valid axes are {MESH_AXES}.")
  sizes = [int(mesh_shape.get(name, 1)) for name in MESH_AXES]
  if sizes.count(-1) > 1:
    raise MeshConfigError(f"At most one mesh axis may be -1 (fill), got {dict(zip(MESH_AXES, sizes))}.")
  if any(s == 0 or s < -1 for s in sizes):
    raise MeshConfigError(f"Mesh axis sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise MeshConfigError(
          f"Cannot fill mesh {dict(zip(MESH_AXES, sizes))}: {len(devices)} devices is not a multiple of {known}.")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise MeshConfigError(
        f"Mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but {len(devices)} are available; "
        "set one axis to -1 to fill.")
  # Auto axes: GSPMD propagates shardings from our explicit constraints.
  axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  device_array = np.asarray(devices).reshape(sizes)
  return jax.sharding.Mesh(device_array, MESH_AXES, axis_types=axis_types)


def logical_to_spec(logical_axes, rules=DEFAULT_RULES, shape=None, mesh=None) -> P:
  """Maps logical axis names to a PartitionSpec. With shape and mesh, a dim whose size the mesh axes
  do not divide is replicated instead, and no mesh axis is used twice."""
  table = dict(rules)
  used = set()
  spec = []
  for i, name in enumerate(logical_axes):
    axes = table.get(name) if name is not None else None
    if axes is None:
      spec.append(None)
      continue
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    axes = tuple(a for a in axes if a not in used)
    if mesh is not None:
      axes = tuple(a for a in axes if mesh.shape[a] > 1)
      if shape is not None and shape[i] % math.prod(mesh.shape[a] for a in axes):
        axes = ()
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return P(*spec)


def param_logical_axes(variable) -> tuple:
  """A variable's logical axes; scanned (stacked) parameters gain a leading 'layers' axis."""
  axes = tuple(variable.get_metadata().get("logical_axes", ()))
  ndim = len(variable.get_value().shape)
  if len(axes) == ndim - 1:
    axes = ("layers",) + axes
  if len(axes) != ndim:
    axes = (None,) * ndim
  return axes


def state_shardings(state: nnx.State, mesh, rules=DEFAULT_RULES):
  """NamedShardings for every variable of an (abstract) nnx.State, as a pure-dict tree."""

  def one(variable):
    spec = logical_to_spec(param_logical_axes(variable), rules, variable.get_value().shape, mesh)
    return NamedSharding(mesh, spec)

  shardings = jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(shardings)


@contextlib.contextmanager
def activation_rules(rules):
  """Sets the rules `constrain` uses while tracing (set by the trainer/sampler, not by layers)."""
  previous = getattr(_context, "rules", None)
  _context.rules = tuple(rules)
  try:
    yield
  finally:
    _context.rules = previous


def constrain(x, logical_axes):
  """Sharding constraint on an activation by logical names; a no-op outside a mesh context."""
  rules = getattr(_context, "rules", None)
  mesh = jax.sharding.get_abstract_mesh()
  if rules is None or mesh is None or mesh.empty:
    return x
  spec = logical_to_spec(logical_axes, rules, x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, spec)


def batch_sharding(mesh, ndim: int, rules=DEFAULT_RULES) -> NamedSharding:
  """Sharding of a global batch array: leading dim over the batch axes, the rest replicated."""
  return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules))


def to_host(x) -> np.ndarray:
  """A (possibly multi-host) global array as one numpy array on every process."""
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
