"""Memoised shape work of a frozen config: building the abstract model and the train state's
shardings traces the whole model, and one run asks for them several times (state creation, the
step, restore targets, the sampler)."""
import dataclasses
import functools

_MAX_ENTRIES = 16


def per_frozen_config(fn):
  """Memoises `fn(config, *args)` when `config` is a frozen dataclass (an Experiment: immutable, so
  its identity is the key; it holds dicts and so has no hash) and `args` are hashable. A mutable
  ConfigDict is computed every time."""
  cache = {}

  @functools.wraps(fn)
  def wrapper(config, *args):
    params = getattr(type(config), "__dataclass_params__", None)
    if not (dataclasses.is_dataclass(config) and params.frozen):
      return fn(config, *args)
    key = (id(config), *args)
    hit = cache.get(key)
    if hit is None or hit[0] is not config:  # an id is reused only after its object is gone
      if len(cache) >= _MAX_ENTRIES:
        cache.clear()
      hit = cache[key] = (config, fn(config, *args))
    return hit[1]

  return wrapper
