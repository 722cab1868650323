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
from jax.experimental import mesh_utils
from jax.sharding import NamedSharding, PartitionSpec as P
from vdit.core.errors import UserError

# Ordered by increasing communication per step (the order mesh_utils expects): tensor-parallel
# collectives run in every layer on the fastest links; data-parallel ones once per step.
MESH_AXES = ("data", "fsdp", "context", "tensor")

# Logical name -> mesh axis (or tuple of axes, or None). Parameters: 'embed' is sharded over fsdp
# (ZeRO-3 style), 'mlp'/'heads' over tensor (Megatron style) and also over fsdp where 'embed' has
# not taken it (vectors like biases, output projections), so every large parameter is split.
# Activations: the batch over data+fsdp, video tokens ('length') over context (sequence
# parallelism); text tokens ('text_length') stay whole: they are short and every video token
# attends to all of them.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", "context"),
    ("text_length", None),
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
    ("lora_rank", None),
)

_context = threading.local()


class MeshConfigError(UserError):
  pass


def mesh_sizes(mesh_shape: dict, num_devices: int, what: str = "Mesh") -> dict:
  """{'data': -1, 'tensor': 2} -> every axis of MESH_AXES with its size; one -1 fills num_devices."""
  unknown = set(mesh_shape) - set(MESH_AXES)
  if unknown:
    raise MeshConfigError(f"Unknown mesh axes {sorted(unknown)}; valid axes are {MESH_AXES}.")
  sizes = {name: int(mesh_shape.get(name, 1)) for name in MESH_AXES}
  if list(sizes.values()).count(-1) > 1:
    raise MeshConfigError(f"At most one mesh axis may be -1 (fill), got {sizes}.")
  if any(s == 0 or s < -1 for s in sizes.values()):
    raise MeshConfigError(f"Mesh axis sizes must be positive or -1, got {sizes}.")
  known = math.prod(s for s in sizes.values() if s != -1)
  fill = [name for name, s in sizes.items() if s == -1]
  if fill:
    if num_devices % known:
      raise MeshConfigError(f"Cannot fill {what.lower()} {sizes}: {num_devices} devices is not a multiple of {known}.")
    sizes[fill[0]] = num_devices // known
  if math.prod(sizes.values()) != num_devices:
    raise MeshConfigError(f"{what} {sizes} needs {math.prod(sizes.values())} devices but {num_devices} are "
                          "available; set one axis to -1 to fill.")
  return sizes


def dcn_sizes(dcn_mesh_shape: dict | None) -> dict:
  """Slices along each mesh axis (multi-slice ICI x DCN); every axis defaults to 1, no -1."""
  dcn_mesh_shape = dict(dcn_mesh_shape or {})
  unknown = set(dcn_mesh_shape) - set(MESH_AXES)
  if unknown:
    raise MeshConfigError(f"Unknown dcn_mesh axes {sorted(unknown)}; valid axes are {MESH_AXES}.")
  sizes = {name: int(dcn_mesh_shape.get(name, 1)) for name in MESH_AXES}
  if any(s < 1 for s in sizes.values()):
    raise MeshConfigError(f"dcn_mesh sizes must be positive (the number of slices along each axis; "
                          f"no -1), got {sizes}.")
  return sizes


def hybrid_device_array(ici: dict, dcn: dict, devices) -> np.ndarray:
  """Devices arranged so each axis is (slices along it) x (devices along it within a slice).

  Slices are what devices' `slice_index` says (TPU slices; NVLink domains where a GPU runtime sets
  it) or, without one, processes (one per host): only collectives over an axis with dcn size > 1
  cross the slow data-centre network.
  """
  by_process = not hasattr(devices[0], "slice_index")
  granules = {d.process_index if by_process else d.slice_index for d in devices}
  wanted = math.prod(dcn.values())
  if len(granules) != wanted:
    unit = "processes (these devices have no slice_index)" if by_process else "slices (by slice_index)"
    raise MeshConfigError(
        f"dcn_mesh {dcn} asks for {wanted} slices, but the {len(devices)} devices form {len(granules)} {unit}; "
        f"make the dcn_mesh sizes multiply to {len(granules)}, or set them all to 1 for a single slice.")
  return mesh_utils.create_hybrid_device_mesh([ici[a] for a in MESH_AXES], [dcn[a] for a in MESH_AXES], devices,
                                               process_is_granule=by_process)


def make_mesh(mesh_shape: dict, devices=None, dcn_mesh_shape: dict | None = None) -> jax.sharding.Mesh:
  """Builds a mesh from {'data': -1, 'fsdp': 1, 'context': 1, 'tensor': 1}; one -1 fills.

  Axes left out have size 1. With `dcn_mesh_shape` (slices per axis, e.g. {'data': 2}), mesh_shape
  is the shape within one slice and each axis's size is the product of the two.
  """
  devices = jax.devices() if devices is None else devices
  dcn = dcn_sizes(dcn_mesh_shape)
  slices = math.prod(dcn.values())
  if len(devices) % slices:
    raise MeshConfigError(f"dcn_mesh {dcn} asks for {slices} slices, which do not divide the {len(devices)} devices.")
  ici = mesh_sizes(mesh_shape, len(devices) // slices, "Mesh" if slices == 1 else f"Per-slice mesh (of {slices} slices)")
  if slices == 1:
    device_array = np.asarray(devices).reshape([ici[a] for a in MESH_AXES])
  else:
    device_array = hybrid_device_array(ici, dcn, devices)
  # Auto axes: GSPMD propagates shardings from our explicit constraints.
  axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
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


def current_mesh():
  """The mesh set by `jax.set_mesh` while tracing, or None outside one."""
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh is None or mesh.empty else mesh


def axis_size(name: str) -> int:
  """Size of mesh axis `name` in the current mesh; 1 outside a mesh or where the axis is absent."""
  mesh = current_mesh()
  return 1 if mesh is None else dict(mesh.shape).get(name, 1)


def constrain(x, logical_axes):
  """Sharding constraint on an activation by logical names; a no-op outside a mesh context."""
  rules = getattr(_context, "rules", None)
  mesh = current_mesh()
  if rules is None or mesh is None:
    return x
  spec = logical_to_spec(logical_axes, rules, x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, spec)


def activation_spec(logical_axes, shape) -> P:
  """The PartitionSpec `constrain` gives an activation (default rules when none are set), for
  code that lays activations out itself (shard_map); call inside a mesh context."""
  rules = getattr(_context, "rules", None) or DEFAULT_RULES
  return logical_to_spec(logical_axes, rules, shape, current_mesh())


def batch_sharding(mesh, ndim: int, rules=DEFAULT_RULES) -> NamedSharding:
  """Sharding of a global batch array: leading dim over the batch axes, the rest replicated."""
  return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules))


def to_host(x) -> np.ndarray:
  """A (possibly multi-host) global array as one numpy array on every process."""
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
