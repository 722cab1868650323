"""Every `python -m MODULE` that the README, the launch scripts and the configs' docstrings tell a
user to run names a module that is a command (a silent `python -m` of a library module exits 0)."""
import glob
import os
import re

from tests.helpers import REPO

_MODULE = re.compile(r"-m ((?:vdit|data_prep)(?:\.\w+)+)")


def _documented_modules() -> dict:
  found = {}
  for pattern in ("README.md", "launch/*", "configs/*.py", "configs/evals/*.py", "docs/*.md"):
    for path in glob.glob(os.path.join(REPO, pattern)):
      with open(path) as f:
        for module in _MODULE.findall(f.read()):
          found.setdefault(module, os.path.relpath(path, REPO))
  return found


def test_every_documented_command_module_exists_and_runs_as_a_command():
  modules = _documented_modules()
  assert "vdit.main" in modules and "data_prep.toy_prompts" in modules  # the scan finds them
  problems = []
  for module, where in sorted(modules.items()):
    path = os.path.join(REPO, *module.split(".")) + ".py"
    if not os.path.exists(path):
      problems.append(f"{where}: python -m {module}: no such module")
    elif '__name__ == "__main__"' not in open(path).read():
      problems.append(f"{where}: python -m {module}: not a command (no __main__ block)")
  assert not problems, "\n".join(problems)
