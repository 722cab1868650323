"""The error types that mean "bad input from the user": entry points print them without a traceback."""
from vdit.checkpoint import CheckpointError
from vdit.config_io import ConfigError
from vdit.data.errors import DataError
from vdit.latents import LatentSpaceError
from vdit.prompt_expansion import ExpansionError
from vdit.sample_modes import ModeError
from vdit.sharding import MeshConfigError
from vdit.text.sentencepiece_tokenizer import TokenizerFileError
from vdit.text.tokenizer import PromptError
from vdit.weights import WeightsError

USER_ERRORS = (CheckpointError, ConfigError, DataError, ExpansionError, LatentSpaceError, MeshConfigError,
               ModeError, PromptError, TokenizerFileError, WeightsError)


def exit_on_user_error(fn, *extra_errors) -> None:
  """Runs an entry point's body; bad input (USER_ERRORS, extra_errors) becomes one `error: ...`
  line on stderr and exit status 2, without a traceback."""
  import sys
  from absl import logging
  try:
    fn()
  except USER_ERRORS + tuple(extra_errors) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
