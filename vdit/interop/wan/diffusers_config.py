"""Reading a diffusers `config.json` (the transformer's or the VAE's) with one clear error per fault."""
import json
import os

from vdit.core.errors import ConfigError


def read(path: str, what: str) -> dict:
  """The JSON object in `path`; ConfigError naming the file if absent, unreadable or not an object.
  `what` names the folder it belongs to ("the transformer's", "the VAE's")."""
  if not os.path.isfile(path):
    raise ConfigError(f"Config file {path!r} does not exist; pass {what} diffusers config.json.")
  try:
    with open(path) as f:
      cfg = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"Config file {path!r} is not readable JSON ({e}).") from None
  if not isinstance(cfg, dict):
    raise ConfigError(f"Config file {path!r} is not a diffusers config (not a JSON object).")
  return cfg
