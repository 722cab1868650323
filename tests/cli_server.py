"""Runs `python -m MODULE ARGS` for the tests without paying Python's start-up each time.

Every command the tests run first imports JAX, Flax, Orbax and vdit (2-3 s of CPU, most of a
refused run's cost); the suite runs about a hundred of them. This process imports them once, then
forks one child per request (tests/helpers.py `cli`): the child runs the module as `__main__`
exactly as `python -m` would, exits through the normal interpreter shutdown (atexit handlers, thread
joins: what a user sees at exit), and its stdout and stderr come back to the test.

Fork is safe here because nothing before it starts threads or a JAX backend (checked at start-up).
Protocol: one JSON request per stdin line, {"module", "args", "env", "timeout"}; one JSON reply
per stdout line, {"returncode", "stdout", "stderr"} (returncode None: it ran past its timeout
and was killed). The server exits when stdin closes.
"""
import atexit
import gc
import json
import os
import runpy
import signal
import sys
import tempfile
import threading
import time

# `python -m` puts the working directory first on sys.path, not the script's directory.
sys.path[0] = os.getcwd()

import absl.app  # noqa: E402,F401  (preloaded for the children)
import flax.nnx  # noqa: E402,F401
import grain  # noqa: E402,F401
import jax  # noqa: E402
import numpy  # noqa: E402,F401
import optax  # noqa: E402,F401
import orbax.checkpoint  # noqa: E402,F401
import vdit.config.pretrained  # noqa: E402,F401
import vdit.diffusion.generation  # noqa: E402,F401
import vdit.training.dit_trainer  # noqa: E402,F401
from jax._src import xla_bridge  # noqa: E402

assert not xla_bridge._backends, "a JAX backend was created before fork"  # pylint: disable=protected-access


def _serve():
  """Returns (module, args, env, out, err) in a forked child; never returns in the server."""
  replies = sys.stdout
  for line in sys.stdin:
    request = json.loads(line)
    out, err = (tempfile.NamedTemporaryFile(delete=False) for _ in range(2))
    out.close()
    err.close()
    replies.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
      return request["module"], request["args"], request["env"], out.name, err.name
    returncode = _wait(pid, request["timeout"])
    texts = []
    for path in (out.name, err.name):
      with open(path, encoding="utf-8", errors="replace") as f:
        texts.append(f.read())
      os.unlink(path)
    replies.write(json.dumps({"returncode": returncode, "stdout": texts[0], "stderr": texts[1]}) + "\n")
    replies.flush()
  sys.exit(0)


def _wait(pid, timeout):
  deadline = time.monotonic() + timeout
  while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
      return os.waitstatus_to_exitcode(status)
    if time.monotonic() > deadline:
      os.kill(pid, signal.SIGKILL)
      os.waitpid(pid, 0)
      return None
    time.sleep(0.005)


def _become(module, args, env, out, err):
  """Turns this forked child into `python -m module args` with `env`, output to the two files."""
  os.environ.clear()
  os.environ.update(env)
  null = os.open(os.devnull, os.O_RDONLY)
  os.dup2(null, 0)
  for fd, path in ((1, out), (2, err)):
    target = os.open(path, os.O_WRONLY | os.O_TRUNC)
    os.dup2(target, fd)
    os.close(target)
  sys.argv = [module, *args]


def _exit_code(error: SystemExit) -> int:
  """The status `python -m` would exit with for this SystemExit (a message goes to stderr, status 1)."""
  if error.code is None or isinstance(error.code, int):
    return error.code or 0
  print(error.code, file=sys.stderr)
  return 1


def _run_as_main(module):
  """Runs the module as `__main__` and exits as the interpreter would. The child's heap is the
  server's, shared copy-on-write: the interpreter's own teardown would touch (so copy) every page of
  it, costing more than the run. When only the main thread is left after the thread joins and
  atexit handlers, nothing else can still print, so the child skips that teardown; otherwise (a
  daemon thread alive) it shuts down normally, where such a thread's late traceback would show."""
  try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    code = 0
  except SystemExit as error:
    code = _exit_code(error)
  except BaseException:  # pylint: disable=broad-except  (reported as the interpreter would, status 1)
    sys.excepthook(*sys.exc_info())
    code = 1
  threading._shutdown()  # pylint: disable=protected-access  (joins non-daemon threads, as at exit)
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  if threading.active_count() > 1:
    sys.exit(code)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


if __name__ == "__main__":
  gc.freeze()  # the imported modules' objects: the children's garbage collections leave their pages shared
  child = _serve()
  _become(*child)
  _run_as_main(child[0])
