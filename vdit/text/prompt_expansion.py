"""Prompt expansion (recaptioning): rewrite a user's short prompt into the kind of detailed caption
the model was trained on, before it is encoded.

Expanders are callables `str -> str`. Built in: "none"; "toy", rule-based for the toy grammar
(vdit.toy.expander); and any external command (a local LLM, a script) that reads the prompt
on stdin and writes the caption on stdout, run with a timeout.
"""
import shlex
import subprocess
from typing import Callable
from vdit.core.errors import UserError

EXPANDERS = ("none", "toy", "command")


class ExpansionError(UserError):
  """The expander could not produce a caption (bad spec, command failed, hung or was silent)."""


def command_expander(command: str, timeout_s: float) -> Callable[[str], str]:
  """An expander running `command` (split like a shell would, not run through one) per prompt."""
  argv = shlex.split(command)
  if not argv:
    raise ExpansionError("--expand=command needs --expand_command=\"PROGRAM [ARGS]\".")

  def expand(prompt: str) -> str:
    try:
      done = subprocess.run(argv, input=prompt, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError as e:
      raise ExpansionError(f"Prompt expander {argv[0]!r} was not found ({e}); check --expand_command.") from e
    except subprocess.TimeoutExpired as e:
      raise ExpansionError(f"Prompt expander {command!r} gave no answer within {timeout_s:g} s for "
                           f"{prompt!r}; raise --expand_timeout or fix the command.") from e
    if done.returncode != 0:
      raise ExpansionError(f"Prompt expander {command!r} failed (exit {done.returncode}) for "
                           f"{prompt!r}: {done.stderr.strip()[-500:]}")
    caption = done.stdout.strip()
    if not caption:
      raise ExpansionError(f"Prompt expander {command!r} printed no caption for {prompt!r}.")
    return caption

  return expand


def make_expander(kind: str, command: str = "", timeout_s: float = 30.0) -> Callable[[str], str]:
  if kind == "none":
    return lambda prompt: prompt
  if kind == "toy":
    from vdit.toy import expander as toy_expander
    return toy_expander.expand
  if kind == "command":
    return command_expander(command, timeout_s)
  raise ExpansionError(f"Unknown prompt expander {kind!r}; choose one of {EXPANDERS}.")
