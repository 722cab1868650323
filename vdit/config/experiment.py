"""A validated experiment config as typed, frozen values: what every service below the boundary gets.

`freeze(config)` turns a resolved ml_collections ConfigDict into an `Experiment`: one frozen dataclass
per section (model, text, data, train, sample, ...), fields typed from the schema's defaults
(vdit/config/schema.py, the one written schema), with the same attribute names, so services read
`experiment.model.dim` and can neither mutate it nor fall back on `.get(key, default)`: a key an
older workdir lacks is filled once, by `vdit.config.upgrade`. Mesh shapes stay plain read-only maps.
"""
import dataclasses
import functools
import types

import ml_collections

_MAPPINGS = ("mesh", "dcn_mesh", "train.conditioning")  # name -> size/weight tables: read-only dicts


def _frozen_value(value, path: str):
  if isinstance(value, ml_collections.ConfigDict):
    if path in _MAPPINGS:
      return types.MappingProxyType(value.to_dict())
    fields = {k: _frozen_value(value[k], f"{path}.{k}".lstrip(".")) for k in sorted(value.keys())}
    return _section_type(path, tuple((k, type(v)) for k, v in fields.items()))(**fields)
  if isinstance(value, list):
    return tuple(value)
  return value


@functools.cache
def _section_type(path: str, fields: tuple):
  """One frozen dataclass per section shape, fields typed by their values (cached per shape)."""
  name = "".join(part.title().replace("_", "") for part in (path or "experiment").split("."))
  return dataclasses.make_dataclass(name, list(fields), frozen=True,
                                    namespace={"__doc__": f"The `{path or 'experiment'}` config section."})


def freeze(config) -> "Experiment":
  """A resolved, validated ConfigDict -> the Experiment services take (a frozen dataclass tree)."""
  if is_frozen(config):
    return config
  return _frozen_value(config, "")


def is_frozen(config) -> bool:
  return dataclasses.is_dataclass(config) and type(config).__name__ == "Experiment"


def thaw(experiment) -> ml_collections.ConfigDict:
  """Back to a ConfigDict (for writing config.json and for tools that edit a copy)."""
  return ml_collections.ConfigDict(to_dict(experiment))


def to_dict(value):
  if dataclasses.is_dataclass(value):
    return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
  if isinstance(value, types.MappingProxyType):
    return dict(value)
  if isinstance(value, tuple):
    return list(value)
  return value


Experiment = object  # for annotations: the type freeze() builds for the schema's top level
