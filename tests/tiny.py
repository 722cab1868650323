"""Tiny configs shared by tests: the toy config shrunk to run a step in well under a second."""
from configs import toy


def tiny_config(data_dir: str = "", **overrides):
  config = toy.get_config()
  with config.unlocked():
    config.data.dir = data_dir
    config.data.num_frames = 4
    config.sample.num_frames = 4
    config.model.dim = 32
    config.model.depth = 2
    config.model.num_heads = 2
    config.model.mlp_ratio = 2.0
    config.text.dim = 32
    config.text.depth = 0  # word embeddings only, as configs/toy.py: a layer less in every program to compile
    config.text.num_heads = 2
    config.text.max_length = 12
    config.train.global_batch_size = 8
    config.train.num_steps = 8
    config.train.log_every = 1
    config.train.checkpoint_every = 2
    config.optim.warmup_steps = 2
    config.sample.steps = 3
  return apply_overrides(config, overrides)


def apply_overrides(config, overrides: dict):
  """Sets {"a.b.c": value} keys on an unlocked ConfigDict; returns it."""
  for dotted, value in overrides.items():
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def get_config(arg: str | None = None):
  """Config-file entry point (`--config=tests/tiny.py:DATA_DIR`) for subprocess tests."""
  config = tiny_config(arg or "")
  config.lock()
  return config
