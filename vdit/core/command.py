"""The one command contract: every `python -m vdit...` and `python -m data_prep...` runs through `run`.

  def define_flags():
    command.define_output_dir("out", None, "Output directory (created if missing).", required=True)
    command.define_path("workdir", None, "A training workdir.", kind="dir", required=True)

  def main(f):  # f: the parsed flags, read by attribute (f.out; f.config.model.dim for a config file)
    ...           # import jax and other heavy modules here, after the flags are known to be good

  if __name__ == "__main__":
    command.run(main, define_flags)

Flags are absl flags, defined only when the command runs, so importing two commands defines none;
config files are ml_collections config flags (`--config=FILE[:ARG]`, overrides `--config.a.b=v`).
`--help` prints the module docstring and the command's flags, and exits 0.
Exit status: 0 done (or the int `main` returns); 2 a user error, printed as the single stderr line
`error: <problem>; <what to do>` without a traceback: an unknown, malformed or missing flag, a path
flag naming nothing or the wrong kind of thing, an output directory that cannot be created or
written, a config file that is missing or does not load, a misspelt config key, or a `UserError`
raised by `main`; 3 (an `ExplainedFailure`'s `exit_code`) a run that stopped for a reason it
explains, e.g. training diverged, also one `error:` line; 1 anything else (an internal failure,
traceback included).
"""
import dataclasses
import difflib
import os
import re
import sys
import textwrap
from typing import Callable

from absl import app, flags
from ml_collections import config_dict, config_flags
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

from vdit.core.errors import ExplainedFailure, UserError

FLAGS = flags.FLAGS
_HELP = {"-h", "-?", "-help", "--help", "-helpshort", "--helpshort", "-helpfull", "--helpfull"}
_KINDS = {"file": (os.path.isfile, "file"), "dir": (os.path.isdir, "directory"),
          "any": (os.path.exists, "file or directory")}


def run(main: Callable, define_flags: Callable[[], None] | None = None, *, positional: str | None = None):
  """Defines the command's flags, parses sys.argv, calls `main(FLAGS)` and exits by the contract.

  positional: the arguments the command takes besides flags, as a usage string (e.g.
  "detect FILE [FILE ...]"); `main(FLAGS, args)` then receives them. Without it an argument that
  is not a flag is a user error.
  """
  known = set(FLAGS)
  if define_flags:
    define_flags()
  own = [name for name in FLAGS if name not in known and FLAGS[name].name == name]  # not short names
  doc = sys.modules[main.__module__].__doc__ or ""
  app.run(lambda argv: _call(main, argv[1:], positional),
          flags_parser=lambda argv: _parse(argv, own, doc, positional))


def define_path(name: str, default: str | None, help_text: str, *, kind: str = "file", required: bool = False):
  """A string flag naming an existing file, directory or either (kind "file", "dir", "any"),
  checked while parsing: a wrong path is one error line before any work starts."""
  exists, what = _KINDS[kind]
  flags.DEFINE_string(name, default, help_text, required=required)

  def check(path):
    if not path or "://" in path or exists(path):  # remote paths (gs://) are checked by their reader
      return True
    problem = f"is not a {what}" if os.path.exists(path) else "does not exist"
    raise flags.ValidationError(f"{path!r} {problem}; pass an existing {what}")

  flags.register_validator(name, check)


def define_output_dir(name: str, default: str | None, help_text: str, *, required: bool = False):
  """A string flag naming a directory the command writes into, existing or not, checked while
  parsing (see output_dir_problem): a file there fails before any work, not after it."""
  flags.DEFINE_string(name, default, help_text, required=required)

  def check(path):
    problem = None if path is None else output_dir_problem(path)
    if problem:
      raise flags.ValidationError(problem)
    return True

  flags.register_validator(name, check)


def output_dir_problem(path: str) -> str | None:
  """Why `path` cannot be used as an output directory (the fix included), or None when it is a
  writable directory or one that can be created. Creates nothing: a refused run leaves no trace."""
  if not path:
    return "is empty; pass a directory to write into"
  if "://" in path:  # remote paths (gs://) are checked by their writer
    return None
  if os.path.exists(path):
    if not os.path.isdir(path):
      return f"{path!r} is an existing file, not a directory; pass a new or existing directory"
    if not os.access(path, os.W_OK | os.X_OK):
      return f"{path!r} is not writable; pass a directory you can write to"
    return None
  parent = os.path.dirname(os.path.normpath(path)) or "."
  while not os.path.exists(parent):  # the nearest existing ancestor decides whether makedirs works
    parent = os.path.dirname(parent) or "."
  if not os.path.isdir(parent):
    return f"{path!r} cannot be created: {parent!r} is a file; pass a path whose parents are directories"
  if not os.access(parent, os.W_OK | os.X_OK):
    return f"{path!r} cannot be created: {parent!r} is not writable; pass a directory you can write to"
  return None


def _call(main, args, positional):
  try:
    return main(FLAGS, args) if positional else main(FLAGS)
  except UserError as e:
    _fail(str(e))
  except ExplainedFailure as e:
    _fail(str(e), e.exit_code)


def _fail(message: str, status: int = 2):
  print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)
  sys.exit(status)


def _command() -> str:
  spec = getattr(sys.modules["__main__"], "__spec__", None)
  return spec.name if spec else os.path.basename(sys.argv[0])


def _see_help() -> str:
  return f"see `python -m {_command()} --help`"


def _parse(argv, own, doc, positional):
  args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  if _HELP & set(args):
    print(_help(doc, own, positional, full=bool({"-helpfull", "--helpfull"} & set(args))))
    sys.exit(0)
  configs = [name for name in own if isinstance(FLAGS[name].parser, ConfigFileFlagParser)]
  try:
    _check_config_files(args, configs)
    rest = FLAGS(argv)
    for name in configs:
      _check_loaded(name)
  except flags.UnrecognizedFlagError as e:
    close = difflib.get_close_matches(e.flagname, own, n=1)
    _fail(f"unknown flag --{e.flagname}{f' (did you mean --{close[0]}?)' if close else ''}; {_see_help()}.")
  except flags.IllegalFlagValueError as e:
    _fail(_explain_value_error(str(e)))
  except flags.Error as e:
    _fail(f"{e}; {_see_help()}.")
  except UserError as e:
    _fail(str(e))
  except Exception as e:  # pylint: disable=broad-except
    # ml_collections raises plain errors for an override naming no key or a config that does not load.
    _fail(_explain_config_error(e, args, configs))
  if len(rest) > 1 and not positional:
    _fail(f"unexpected argument(s) {' '.join(rest[1:])}: this command takes only --flags; {_see_help()}.")
  return rest


def _help(doc: str, own: list[str], positional: str | None, full: bool) -> str:
  lines = [doc.strip(), "", f"usage: python -m {_command()} {positional or '--flag=value ...'}", "", "Flags:"]
  for name in own:
    flag = FLAGS[name]
    default = "" if flag.default is None else f" (default: {flag.default_as_str})"
    text = f"--{'[no]' if flag.boolean else ''}{name}: {' '.join(flag.help.split())}{default}"
    lines.append(textwrap.fill(text, 100, initial_indent="  ", subsequent_indent="      "))
    if isinstance(flag.parser, ConfigFileFlagParser):
      lines.append(f"  --{name}.KEY=VALUE: overrides a key of the --{name} file (e.g. --{name}.a.b=3)")
  lines.append("  --help: this help (--helpfull: also absl's logging and debugging flags)")
  if full:
    lines += ["", FLAGS.get_help()]
  return "\n".join(lines)


def _config_value(name: str, args: list[str]) -> str | None:
  """The value given for config flag `name` (`--name=V` or `--name V`), or None."""
  for i, arg in enumerate(args):
    m = re.match(rf"^--?{re.escape(name)}(=(.*))?$", arg)
    if m:
      return m.group(2) if m.group(1) is not None else (args[i + 1] if i + 1 < len(args) else None)
  return None


def _check_config_files(args: list[str], configs: list[str]):
  # Checked first: ml_collections defers a missing file's error to the first read of the config.
  for name in configs:
    value = _config_value(name, args)
    path = (value or "").split(":", 1)[0]
    if value is not None and not os.path.isfile(path):
      _fail(f"config file {path!r} (--{name}) does not exist in {os.getcwd()}; pass an existing file: "
            f"{FLAGS[name].help}")


def _check_loaded(name: str):
  try:
    getattr(FLAGS[name].value, "lock", None)  # a config that failed to load raises on any read
  except OSError as e:
    _fail(f"--{name}={config_flags.get_config_filename(FLAGS[name])} does not load ({e}); fix the file or "
          "pass another.")


def _explain_value_error(message: str) -> str:
  missing = re.findall(r"Flag --(\S+) must have a value other than None", message)
  if missing:
    names = ", ".join(f"--{n}" for n in missing)
    return f"missing required flag{'s' if len(missing) > 1 else ''} {names}; {_see_help()}."
  if "Traceback (most recent call last)" in message:  # a config file's get_config raised: keep its last line
    head = message.split(": Error whilst parsing config file", 1)[0].removeprefix("flag ")
    last = [line for line in message.splitlines() if line.strip()][-1]
    return f"{head}: {re.sub(r'^[A-Za-z_.]*(Error|Exception): ', '', last.strip())}"
  problems = "; ".join(line.strip().removeprefix("flag ") for line in message.splitlines() if line.strip())
  if "; " in problems:  # a validator's message already says what to do
    return problems + "."
  if re.match(r"--\w+\.", problems):  # a config override
    return problems + "; give a value of the type the config file sets for that key."
  return problems + f"; {_see_help()}."


def _explain_config_error(error: Exception, args: list[str], configs: list[str]) -> str:
  for name in configs:
    value = _config_value(name, args)
    if value is None:
      continue
    try:
      config = FLAGS[name].parser.parse(value)  # loads the file afresh, without the overrides
    except Exception as e:  # pylint: disable=broad-except
      return (f"--{name}={value} does not load as a config ({type(e).__name__}: {e}); pass a file whose "
              "get_config() returns the config.")
    for key in _overrides(name, args):
      problem = _missing_key(config, key)
      if problem:
        owner = "config" if name == "config" else f"{name} config"
        return f"{owner} has no key {problem}; fix --{name}.{key} (the config file lists its keys)."
  return f"cannot parse the flags ({type(error).__name__}: {error}); {_see_help()}."


def _overrides(name: str, args: list[str]) -> list[str]:
  pattern = rf"^--?(no)?{re.escape(name)}\.([^=]+)"
  return [m.group(2) for m in (re.match(pattern, arg) for arg in args) if m]


def _keys(node) -> list[str] | None:
  if isinstance(node, (config_dict.ConfigDict, config_dict.FrozenConfigDict, dict)):
    return list(node.keys())
  if dataclasses.is_dataclass(node):
    return [field.name for field in dataclasses.fields(node)]
  return None


def _missing_key(config, path: str) -> str | None:
  """`path` with a hint if some part of it is not a key of `config`, else None."""
  node, done = config, []
  for part in (p.split("[", 1)[0] for p in path.split(".")):
    keys = _keys(node)
    if keys is None:
      return None
    if part not in keys:
      close = difflib.get_close_matches(part, keys, n=1)
      where = ".".join(done) or "the top level"
      hint = f"did you mean {'.'.join(done + close)}?" if close else f"{where} has {', '.join(sorted(keys))}"
      return f"{'.'.join(done + [part])} ({hint})"
    node = getattr(node, part)
    done.append(part)
  return None
