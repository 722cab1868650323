"""The command contract (vdit.core.command) for every `python -m` command: a bad argument is one
`error: ...` line on stderr and exit status 2 without a traceback; `--help` lists the command's
flags and exits 0; an internal failure exits 1; importing commands defines no flags."""
import concurrent.futures
import importlib
import os
import subprocess
import sys
import types

import pytest

from tests.helpers import REPO, cli, cli_env

# Every command -> flags its --help must list.
COMMANDS = {
    "vdit.main": ("config", "workdir"),
    "vdit.distill": ("teacher", "workdir", "config"),
    "vdit.finetune": ("base", "workdir", "config", "lora"),
    "vdit.sample": ("workdir", "prompt", "prompts", "out", "sampler", "watermark", "safety_policy", "c2pa", "c2pa_key",
                    "c2pa_cert"),
    "vdit.evaluate": ("eval", "workdir", "checkpoint", "out"),
    "vdit.convert": ("from", "input", "config", "output", "workdir"),
    "vdit.compile_check": ("config", "topology", "memory_per_device_gb"),
    "vdit.provenance": (),
    "vdit.eval.toy_modes": ("workdir", "out", "videos", "modes"),
    "vdit.eval.train_toy_features": ("data", "out", "steps"),
    "vdit.safety.train_prompt_classifier": ("data", "out", "steps", "l2"),
    "vdit.eval.i3d_convert": ("input", "output", "width_divisor"),
    "vdit.toy.judge": ("index", "held_out", "out"),
    "vdit.interop.wan.vae_weights": ("input", "config", "output"),
    "data_prep.toy_world": ("output", "num_clips", "split"),
    "data_prep.toy_prompts": ("data", "out", "num_seen"),
    "data_prep.ingest": ("config", "input", "output", "workers"),
    "data_prep.cache_latents": ("data", "vae", "output", "t5"),
    "data_prep.sample_media": ("output", "seed"),
}

# (command, arguments ({tmp}: a scratch directory), what the error line must say)
_UNKNOWN = ("--no_such_flag=1",)
BAD_ARGUMENTS = [(module, _UNKNOWN, "unknown flag --no_such_flag") for module in COMMANDS] + [
    ("vdit.main", ("--config=configs/toy.py", "--workdir={tmp}/w", "--config.model.dimm=3"),
     "config has no key model.dimm (did you mean model.dim?)"),
    ("vdit.main", ("--config=configs/toy.py", "--workdir={tmp}/w", "--config.model.dim=abc"),
     "--config.model.dim=abc: invalid literal"),
    ("vdit.main", ("--config=configs/no_such_config.py", "--workdir={tmp}/w"),
     "config file 'configs/no_such_config.py' (--config) does not exist"),
    ("vdit.main", ("--config=configs/toy.py",), "missing required flag --workdir"),
    ("vdit.main", ("--config=configs/toy.py", "--workdir={tmp}/w", "extra"), "unexpected argument(s) extra"),
    ("vdit.distill", ("--teacher={tmp}", "--workdir={tmp}/student"), "No config.json in workdir"),
    ("vdit.distill", ("--teacher={tmp}", "--workdir={tmp}/student", "--config.num_steps=9"),
     "unknown flag --config.num_steps"),
    ("vdit.finetune", ("--base={tmp}", "--workdir={tmp}/lora"), "No config.json in workdir"),
    ("vdit.finetune", ("merge", "--base={tmp}", "--workdir={tmp}/merged"), "merge needs at least one --lora"),
    ("vdit.sample", ("--workdir={tmp}", "--prompt=a", "--out={tmp}/out", "--lora={tmp}/a.safetensors:strong"),
     "scale 'strong' is not a number"),
    ("vdit.sample", ("--workdir={tmp}", "--prompt=a", "--out={tmp}/out", "--lora={tmp}/missing.safetensors"),
     "Cannot use --lora={tmp}/missing.safetensors: no such file"),
    ("vdit.finetune", ("fuse", "--base={tmp}", "--workdir={tmp}/merged"), "the one subcommand is `merge`"),
    ("vdit.evaluate", ("--eval=configs/evals/base.py", "--workdir=."),
     "--eval=configs/evals/base.py does not load as a config"),
    ("vdit.convert", ("--from=wan2.1", "--input={tmp}/missing", "--output={tmp}/dit.safetensors"),
     "--input={tmp}/missing: '{tmp}/missing' does not exist"),
    ("vdit.convert", ("--input={tmp}/wan", "--output={tmp}/dit.safetensors"),
     "image_dim=1280 is not supported"),
    ("vdit.sample", ("--workdir=README.md", "--out={tmp}/out", "--prompt=a"), "'README.md' is not a directory"),
    ("vdit.provenance", ("detect", "{tmp}/missing.mp4"), "{tmp}/missing.mp4: no such file"),
    ("vdit.provenance", ("verify", "{tmp}/latin1.txt"), "1 of 1 files could not be read"),
    ("vdit.provenance", ("check", "x.mp4"), "expected `verify|detect FILE [FILE ...] | keygen DIR`"),
    ("vdit.safety.train_prompt_classifier", ("--data={tmp}/latin1.txt", "--out={tmp}/c.safetensors"),
     "{tmp}/latin1.txt is not UTF-8 text (byte 3)"),
    ("data_prep.toy_world", ("--output={tmp}/toy", "--num_held_out=500"), "Cannot hold out 500 combinations"),
    # Output locations, numbers and input files: refused while parsing or before the workdir is read
    # ({tmp}, without a config.json, stands in for it); test_refused_runs_write_nothing checks {tmp}.
    ("vdit.main", ("--config=configs/toy.py", "--workdir=README.md"),
     "--workdir=README.md: 'README.md' is an existing file, not a directory"),
    ("vdit.sample", ("--workdir={tmp}", "--prompt=a", "--out=README.md"),
     "--out=README.md: 'README.md' is an existing file, not a directory"),
    ("vdit.sample", ("--workdir={tmp}", "--prompt=a", "--out=README.md/out"),
     "'README.md/out' cannot be created: 'README.md' is a file"),
    ("vdit.sample", ("--workdir={tmp}", "--prompts={tmp}/latin1.txt", "--out={tmp}/out"),
     "Prompts file '{tmp}/latin1.txt' is not UTF-8 text (byte 3 is 0xe9); save it as UTF-8"),
    *[("vdit.sample", ("--workdir={tmp}", "--prompt=a", "--out={tmp}/out", f"--{flag}={value}"),
       f"--{flag}={value}: {value} is not a positive integer")
      for flag, value in (("num_frames", -4), ("height", -16), ("width", 0), ("steps", 0), ("steps", -3),
                          ("batch_size", 0))],
    ("vdit.sample", ("--workdir={tmp}", "--prompt=a", "--out={tmp}/out", "--seed=-1"),
     "--seed=-1: -1 is not an integer in the range [0, 2147483647]"),
    ("vdit.sample", ("--workdir={tmp}", "--prompt=a", "--out={tmp}/out", "--strength=1.5"),
     "--strength=1.5: 1.5 is not a number in the range [0.0, 1.0]"),
    ("vdit.sample", ("--workdir={tmp}", "--prompt=a", "--out={tmp}/out", "--edit={tmp}/missing.mp4"),
     "Cannot use {tmp}/missing.mp4 (--edit): no such file"),
    ("vdit.sample", ("--workdir={tmp}", "--prompt=a", "--out={tmp}/out", "--safety_policy={tmp}/wan/config.json"),
     "Safety policy {tmp}/wan/config.json line 1: unknown key '_class_name'"),
    ("vdit.sample", ("--workdir={tmp}", "--prompt=a", "--out={tmp}/out", "--c2pa=on"),
     "C2PA signing needs both --c2pa_key=KEY.pem and --c2pa_cert=CHAIN.pem"),
    ("vdit.sample", ("--workdir={tmp}", "--prompt=a", "--out={tmp}/out", "--c2pa_key={tmp}/missing.pem"),
     "--c2pa_key={tmp}/missing.pem: '{tmp}/missing.pem' does not exist"),
    ("vdit.sample", ("--workdir={tmp}", "--prompt=a", "--out={tmp}/out", "--c2pa_key={tmp}/latin1.txt",
                     "--c2pa_cert={tmp}/latin1.txt"), "{tmp}/latin1.txt (--c2pa_key) is not an unencrypted PEM"),
    ("vdit.evaluate", ("--eval=configs/evals/toy.py", "--workdir={tmp}", "--out=README.md"),
     "--out=README.md: 'README.md' is an existing file, not a directory"),
    ("vdit.evaluate", ("--eval=configs/evals/toy.py", "--workdir={tmp}", "--out={tmp}/out", "--eval.sample.steps=-2"),
     "eval config sample.steps=-2 must be >= 1"),
    ("vdit.evaluate", ("--eval=configs/evals/toy.py", "--workdir={tmp}", "--out={tmp}/out",
                       "--eval.safety.policy={tmp}/missing.json"), "Safety policy {tmp}/missing.json does not exist"),
    ("vdit.evaluate", ("--eval=configs/evals/toy.py", "--workdir={tmp}/evalfile"),
     "cannot write results to the default --out: '{tmp}/evalfile/eval/toy' cannot be created: "
     "'{tmp}/evalfile/eval' is a file"),
]

# A command whose body fails as asked, to see the runner's two failure kinds.
_FAILING = '''"""Fails as asked."""
from absl import flags
from vdit.core import command
from vdit.core.errors import UserError

def define_flags():
  flags.DEFINE_enum("fail", "user", ["user", "internal"], "How to fail.")

def main(f):
  raise UserError("bad input; fix it") if f.fail == "user" else RuntimeError("a bug")

if __name__ == "__main__":
  command.run(main, define_flags)
'''


def _cold_jobs(tmp) -> dict:
  """The processes this module starts from a cold interpreter (every command's import, flag
  definition and parsing from scratch): key -> argv."""
  python = sys.executable
  jobs = {("bad",) + case[:2]: [python, "-m", case[0], *case[1]] for case in BAD_ARGUMENTS if case[1] == _UNKNOWN}
  jobs[("fail", "user")] = [python, f"{tmp}/failing.py", "--fail=user"]
  jobs[("fail", "internal")] = [python, f"{tmp}/failing.py", "--fail=internal"]
  return jobs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Runs every command of this module up front; the tests below check one result each. Each
  command starts cold once (an unknown flag; two at a time: Python start-up and imports are most of
  each); --help and the other bad arguments are forked from the test command server
  (tests/helpers.py cli), which has the imports done."""
  tmp = tmp_path_factory.mktemp("commands")
  (tmp / "wan").mkdir()
  (tmp / "wan" / "config.json").write_text('{"_class_name": "WanTransformer3DModel", "image_dim": 1280}')
  (tmp / "failing.py").write_text(_FAILING)
  (tmp / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
  (tmp / "evalfile").mkdir()
  (tmp / "evalfile" / "eval").write_text("")  # where vdit.evaluate's default --out would go
  cold = _cold_jobs(tmp)
  run = lambda argv: subprocess.run(argv, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    results = dict(zip(cold, pool.map(run, cold.values())))
  results.update({("help", module): cli(module, "--help") for module in COMMANDS})
  for module, args, _ in BAD_ARGUMENTS:
    if args != _UNKNOWN:
      results[("bad", module, args)] = cli(module, *(a.format(tmp=tmp) for a in args))
  return str(tmp), results


def _assert_one_error_line(result, message):
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert lines[-1].startswith("error: ") and message in lines[-1], lines[-1]
  assert sum(line.startswith("error: ") for line in lines) == 1, result.stderr


@pytest.mark.parametrize("module, args, message", BAD_ARGUMENTS)
def test_bad_argument_is_one_error_line_and_exit_2(runs, module, args, message):
  tmp, results = runs
  _assert_one_error_line(results[("bad", module, args)], message.format(tmp=tmp))


def test_refused_runs_write_nothing(runs):
  tmp = runs[0]
  assert sorted(os.listdir(tmp)) == ["evalfile", "failing.py", "latin1.txt", "wan"]  # no out/, no eval/
  assert os.listdir(os.path.join(tmp, "evalfile")) == ["eval"]


@pytest.mark.parametrize("module", COMMANDS)
def test_help_lists_the_flags_and_exits_0(runs, module):
  result = runs[1][("help", module)]
  assert result.returncode == 0, result.stderr[-3000:]
  for name in COMMANDS[module] + ("help",):
    assert f"--{name}" in result.stdout or f"--[no]{name}" in result.stdout, (name, result.stdout)
  assert f"usage: python -m {module}" in result.stdout


def test_provenance_help_shows_its_arguments(runs):
  assert "verify|detect FILE [FILE ...] | keygen DIR" in runs[1][("help", "vdit.provenance")].stdout


def test_user_error_from_the_body_is_one_line_and_internal_failure_exits_1(runs):
  results = runs[1]
  _assert_one_error_line(results[("fail", "user")], "error: bad input; fix it")
  internal = results[("fail", "internal")]
  assert internal.returncode == 1 and "RuntimeError: a bug" in internal.stderr


def test_importing_every_command_defines_no_flags():
  from absl import flags
  for module in COMMANDS:
    importlib.import_module(module)  # a flag defined at import would raise DuplicateFlagError here
  assert not {name for flags_ in COMMANDS.values() for name in flags_} & set(flags.FLAGS)


def test_main_trains_a_vae_for_a_vae_config_and_a_dit_otherwise(monkeypatch):
  from configs import toy, vae_toy
  import vdit.training
  from vdit import main
  calls = []
  fakes = {"vae_trainer": types.SimpleNamespace(train_vae=lambda config, workdir: calls.append("vae")),
           "dit_trainer": types.SimpleNamespace(train_and_evaluate=lambda config, workdir: calls.append("dit"))}
  for name, fake in fakes.items():
    monkeypatch.setitem(sys.modules, f"vdit.training.{name}", fake)
    monkeypatch.setattr(vdit.training, name, fake, raising=False)
  monkeypatch.delenv("VDIT_COORDINATOR_ADDRESS", raising=False)
  main.main(types.SimpleNamespace(config=vae_toy.get_config(), workdir=os.devnull))
  main.main(types.SimpleNamespace(config=toy.get_config(), workdir=os.devnull))
  assert calls == ["vae", "dit"]
