"""The config schema and its defaults live with the config boundary (vdit/config/schema.py); every
experiment config here starts from `default_config()`."""
from vdit.config.schema import default_config, parse_args  # noqa: F401  (re-exported for configs/*.py)
