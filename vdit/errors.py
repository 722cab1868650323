"""The error types that mean "bad input from the user": entry points print them without a traceback."""
from vdit.checkpoint import CheckpointError
from vdit.config_io import ConfigError
from vdit.data.errors import DataError
from vdit.prompt_expansion import ExpansionError
from vdit.sample_modes import ModeError
from vdit.sharding import MeshConfigError
from vdit.text.sentencepiece_tokenizer import TokenizerFileError
from vdit.text.tokenizer import PromptError
from vdit.weights import WeightsError

USER_ERRORS = (CheckpointError, ConfigError, DataError, ExpansionError, MeshConfigError, ModeError,
               PromptError, TokenizerFileError, WeightsError)
