"""The error type that means "bad input from the user" and the one that means "bad config".

Every boundary check raises a subclass of `UserError` (with ValueError, so existing callers that
catch ValueError keep working); the command runner prints it as one line and exits 2, without a
traceback. Anything else is an internal failure: exit 1 with the traceback.
"""


class UserError(ValueError):
  """Bad input from the user: a flag, a file, a config value. The message names the fix."""


class ConfigError(UserError):
  """A config value that cannot work; the message names the key and the fix."""


def exit_on_user_error(fn, *extra_errors) -> None:
  """Runs an entry point's body; bad input (UserError, extra_errors) becomes one `error: ...`
  line on stderr and exit status 2, without a traceback."""
  import sys
  from absl import logging
  try:
    fn()
  except (UserError,) + tuple(extra_errors) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
