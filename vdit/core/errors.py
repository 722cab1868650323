"""The error type that means "bad input from the user" and the one that means "bad config".

Every boundary check raises a subclass of `UserError` (with ValueError, so existing callers that
catch ValueError keep working); the command runner prints it as one line and exits 2, without a
traceback (vdit.core.command). Anything else is an internal failure: exit 1 with the traceback.
"""


class UserError(ValueError):
  """Bad input from the user: a flag, a file, a config value. The message names the fix."""


class ConfigError(UserError):
  """A config value that cannot work; the message names the key and the fix."""

