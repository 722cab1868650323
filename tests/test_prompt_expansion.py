"""Prompt expansion: the toy rules, external commands (with timeouts and failures), and the
caption vdit.sample records."""
import sys

import pytest

from vdit.toy import expander as toy_expander
from vdit.text import prompt_expansion


@pytest.mark.parametrize("prompt, caption", [
    ("red ball going left", "a red circle moving left"),
    ("Orange box, upwards!", "an orange square moving up"),
    ("a pink pyramid falling", "a magenta triangle moving down"),
    ("a cat on a sofa", "a cat on a sofa"),  # not the toy grammar: left as it is
])
def test_toy_expander(prompt, caption):
  assert toy_expander.expand(prompt) == caption
  assert prompt_expansion.make_expander("toy")(prompt) == caption


def test_command_expander_reads_stdout(tmp_path):
  script = tmp_path / "upper.py"
  script.write_text("import sys\nprint('detailed: ' + sys.stdin.read().upper())\n")
  expand = prompt_expansion.make_expander("command", f"{sys.executable} {script}", 10)
  assert expand("a red ball") == "detailed: A RED BALL"


@pytest.mark.parametrize("body, timeout, message", [
    ("import sys\nsys.exit(3)\n", 10, "failed \\(exit 3\\)"),
    ("import time\ntime.sleep(30)\n", 0.5, "no answer within 0.5 s"),
    ("pass\n", 10, "printed no caption"),
])
def test_command_expander_failures_are_clear(tmp_path, body, timeout, message):
  script = tmp_path / "bad.py"
  script.write_text(body)
  expand = prompt_expansion.make_expander("command", f"{sys.executable} {script}", timeout)
  with pytest.raises(prompt_expansion.ExpansionError, match=message):
    expand("a red ball")


def test_missing_program_and_unknown_kind():
  with pytest.raises(prompt_expansion.ExpansionError, match="was not found"):
    prompt_expansion.make_expander("command", "/no/such/llm --fast", 5)("x")
  with pytest.raises(prompt_expansion.ExpansionError, match="needs --expand_command"):
    prompt_expansion.make_expander("command", "", 5)
  with pytest.raises(prompt_expansion.ExpansionError, match="Unknown prompt expander"):
    prompt_expansion.make_expander("gpt", "", 5)
