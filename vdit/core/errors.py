"""The error types a command reports as one line: bad input from the user, bad config, and a run
that stopped for a reason it explains.

Every boundary check raises a subclass of `UserError` (with ValueError, so existing callers that
catch ValueError keep working); the command runner prints it as one line and exits 2, without a
traceback (vdit.core.command). An `ExplainedFailure` is printed the same way and exits with its
`exit_code`. Anything else is an internal failure: exit 1 with the traceback.
"""


class UserError(ValueError):
  """Bad input from the user: a flag, a file, a config value. The message names the fix."""


class ConfigError(UserError):
  """A config value that cannot work; the message names the key and the fix."""


class ExplainedFailure(Exception):
  """Not bad input and not a bug: the run stopped for a reason the message explains in full, with the
  fix (e.g. training diverged). The command runner prints it as one line, no traceback, and exits
  with `exit_code` so scripts can tell it from a user error (2) and a crash (1)."""
  exit_code = 3
