"""Shared test helpers: toy data on disk and running the CLIs as a user would."""
import atexit
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

from vdit.core.cpu_malloc import MALLOC_ENV

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_toy_data(directory, num_clips=128, num_frames=6, size=16):
  from vdit.toy import world as toy_world
  toy_world.generate(str(directory), num_clips=num_clips, num_frames=num_frames, height=size, width=size,
                     num_held_out=4, num_shards=2, seed=0)
  return str(directory)


# Subprocess runs of the same tiny configs share compiled executables (JAX's persistent cache),
# so only the first run of a config pays for compilation.
_COMPILE_CACHE = os.path.join(tempfile.gettempdir(), f"vdit-test-jax-cache-{os.getuid()}")


# Tests run tiny programs a few times each, so compiling them dominates: XLA's CPU backend compiles
# ~30% faster without LLVM optimisation, and a train step about twice as fast again with the older
# elemental emitters instead of the fusion emitters (5.1 s -> 2.4 s for tests/tiny.py; the compiled
# program runs ~10% slower). tests/conftest.py sets the same for the test processes. A long run
# (training a model that must learn) asks for `optimized=True`: fusion emitters and LLVM level 1,
# which for tests/test_modes_learned.py's 400 steps costs less CPU than level 0 (4x slower steps) or
# XLA's default (compiles 20 s instead of 17, runs 15% faster: 106 -> 91 CPU-s in all).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
OPTIMIZED = "--xla_backend_optimization_level=1"


def cli_env(optimized=False, devices=8):
  env = dict(os.environ, **MALLOC_ENV)
  env.update(PYTHONPATH=REPO, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}" + " " + (OPTIMIZED if optimized else FAST_COMPILE),
             JAX_COMPILATION_CACHE_DIR=_COMPILE_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def cli(module, *args, optimized=False, devices=8, **kwargs):
  """Runs `python -m module args...` from the repo root; returns the CompletedProcess. Runs with the
  default environment are forked from tests/cli_server.py, which has JAX and vdit imported already."""
  argv, env, timeout = [sys.executable, "-m", module, *map(str, args)], cli_env(optimized, devices), kwargs.pop("timeout", 300)
  server = None if kwargs else _CliServer.get(env)
  if server is None:
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)
  reply = server.run(module, argv[3:], env, timeout)
  if reply["returncode"] is None:
    raise subprocess.TimeoutExpired(argv, timeout, reply["stdout"], reply["stderr"])
  return subprocess.CompletedProcess(argv, reply["returncode"], reply["stdout"], reply["stderr"])


class _CliServer:
  """This process's tests/cli_server.py, started on first use."""
  _instance = None
  # Read when JAX is imported, which the server did once: a run that changes them gets a process of its own.
  _IMPORT_TIME = ("JAX_", "XLA_FLAGS", "TF_", "PYTHON")

  def __init__(self, env):
    self.env = {k: v for k, v in env.items() if k.startswith(self._IMPORT_TIME)}
    self.lock = threading.Lock()
    self.proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "cli_server.py")], cwd=REPO, env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    atexit.register(self.proc.stdin.close)

  @classmethod
  def get(cls, env):
    if os.environ.get("VDIT_TEST_CLI_SERVER", "1") == "0":
      return None
    if cls._instance is None or cls._instance.proc.poll() is not None:
      cls._instance = cls(cli_env())  # the default environment: the one most runs ask for
    same = {k: v for k, v in env.items() if k.startswith(cls._IMPORT_TIME)} == cls._instance.env
    return cls._instance if same else None

  def run(self, module, args, env, timeout):
    with self.lock:
      self.proc.stdin.write(json.dumps({"module": module, "args": args, "env": env, "timeout": timeout}) + "\n")
      self.proc.stdin.flush()
      line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"tests/cli_server.py died running {module} (exit {self.proc.wait()})")
    return json.loads(line)


def popen(module, *args):
  return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=cli_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_processes(module, *args, num_processes=2, devices_per_process=4, timeout=300):
  """Runs `python -m module args...` as a multi-process JAX job on this machine (CPU devices,
  gloo collectives via vdit.parallel.distributed); asserts every process exits 0."""
  port = free_port()
  procs = []
  for index in range(num_processes):
    env = cli_env(devices=devices_per_process)
    env.update(VDIT_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", VDIT_NUM_PROCESSES=str(num_processes),
               VDIT_PROCESS_ID=str(index))
    procs.append(subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
  for proc in procs:
    _, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, stderr[-3000:]


def shared_directory(tmp_path_factory, name: str, build) -> str:
  """A directory `build(path)` makes once per test session and every xdist worker shares (one
  builds, the others wait on a file lock); tests only read it."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # the session's directory, above each worker's own
  target = os.path.join(str(root), f"shared-{name}")
  with open(f"{target}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(os.path.join(target, ".complete")):
      shutil.rmtree(target, ignore_errors=True)
      build(target)
      open(os.path.join(target, ".complete"), "w").close()
  return target


def trained_tiny(tmp_path_factory) -> tuple[str, str]:
  """(data dir, workdir) of the tiny model several modules sample, distil and fine-tune: 60 steps
  of tests/tiny.py with frame conditioning on the toy world (built once per session)."""
  def build(root):
    data = make_toy_data(os.path.join(root, "data"))
    result = cli("vdit.main", f"--config=tests/tiny.py:{data}", f"--workdir={os.path.join(root, 'workdir')}",
                 "--config.train.num_steps=60", "--config.train.checkpoint_every=60", "--config.optim.peak_lr=2e-3",
                 "--config.model.frame_conditioning=True",
                 # A text layer (tests/tiny.py has none): distillation needs guidance that changes samples.
                 "--config.text.depth=1")
    assert result.returncode == 0, result.stderr[-3000:]

  root = shared_directory(tmp_path_factory, "trained-tiny", build)
  return os.path.join(root, "data"), os.path.join(root, "workdir")
