"""Non-finite training steps: "stop" exits with one line and writes nothing after the last good step,
"skip" drops those updates and stops after too many in a row, sampling refuses non-finite weights,
and a resumed run's metrics.jsonl keeps one record per step."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import cli, make_toy_data
from tests.tiny import tiny_config
from vdit.core import checkpoint as ckpt_lib
from vdit.training import jsonl_writer


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
  return make_toy_data(tmp_path_factory.mktemp("toy_data"), num_clips=32)


@pytest.fixture(scope="module")
def diverged(toy_data, tmp_path_factory):
  """(workdir, result) of the tiny config run with peak_lr=1e30 (checkpoints every 2 steps): the
  warmup's lr is 0 at step 1 and 5e29 at step 2, so the weights blow up and step 3 is NaN."""
  workdir = str(tmp_path_factory.mktemp("diverged"))
  result = cli("vdit.main", "--config=tests/tiny.py:" + toy_data, f"--workdir={workdir}",
               "--config.optim.peak_lr=1e30")
  return workdir, result


def _steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def _checkpoints(workdir):
  from vdit.config import pretrained
  from vdit.parallel import sharding
  config = pretrained.load_config(workdir)
  return config, pretrained.Checkpoints(workdir, config, sharding.make_mesh({"data": -1}))


def test_stop_exits_with_one_line_and_writes_nothing_after_the_last_good_step(diverged):
  workdir, result = diverged
  assert result.returncode == 3, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: training diverged: the loss, gradient norm or updated weights were not "
                         "finite at step 3; nothing was written after step 2 (the last checkpoint is step 2)."), last
  assert "train.nonfinite=skip" in last and "resume from step 2" in last
  assert _steps(workdir) == [2]
  assert max(r["step"] for r in jsonl_writer.read(os.path.join(workdir, "metrics.jsonl"))) == 2


def test_sampling_restores_finite_weights_and_refuses_nonfinite_ones(diverged, tmp_path):
  workdir = str(tmp_path / "workdir")
  shutil.copytree(diverged[0], workdir)
  from vdit.config import config_io
  config, checkpoints = _checkpoints(workdir)
  with checkpoints:
    params = checkpoints.restore(2)  # the last checkpoint the diverged run wrote is finite
  with ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(workdir)) as writer:
    nan = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), params)
    writer.save_weights(4, nan, meta={"model_signature": config_io.model_signature(config)})
  _, checkpoints = _checkpoints(workdir)
  with checkpoints:
    with pytest.raises(ckpt_lib.CheckpointError, match=r"Checkpoint step 4 in .* holds non-finite EMA weights "
                       r"\(the run diverged\); choose an earlier one \(kept: 2\) with --checkpoint_step=N"):
      checkpoints.restore(4)


def _poison(monkeypatch, bad_steps):
  """The DiT step sees a NaN video at the (1-based) steps in `bad_steps`: their loss is NaN."""
  from vdit.media import pixels
  from vdit.training import dit_trainer
  make = dit_trainer.make_train_step

  def make_poisoned(*args, **kwargs):
    step_fn = make(*args, **kwargs)

    def train_step(state, batch, key):
      bad = jnp.isin(state["step"] + 1, jnp.asarray(bad_steps))
      video = pixels.to_model_space(batch["video"]) + jnp.where(bad, jnp.nan, 0.0)
      return step_fn(state, dict(batch, video=video), key)
    return train_step

  monkeypatch.setattr(dit_trainer, "make_train_step", make_poisoned)


@pytest.mark.slow  # compiles the step in skip mode: ~10 s warm, ~30 s with a cold compile cache
def test_skip_drops_nonfinite_updates_then_stops_after_too_many_in_a_row(toy_data, tmp_path, monkeypatch):
  from vdit.training import nonfinite
  from vdit.training.dit_trainer import train_and_evaluate
  _poison(monkeypatch, [3, 4, 6, 7, 8])
  config = tiny_config(toy_data, **{"train.nonfinite": "skip", "train.max_consecutive_skips": 3})
  with pytest.raises(nonfinite.TrainingDiverged, match=r"3 steps in a row \(6-8\) had a non-finite loss.*"
                     r"max_consecutive_skips=3\); nothing was written after step 7 \(the last checkpoint is step 6\)"):
    train_and_evaluate(config, str(tmp_path))
  records = {r["step"]: r for r in jsonl_writer.read(os.path.join(tmp_path, "metrics.jsonl"))
             if "nonfinite_skips" in r}
  assert sorted(records) == list(range(1, 8))  # nothing of step 8's window
  assert [records[s]["nonfinite_skips"] for s in range(1, 8)] == [0, 0, 1, 1, 0, 1, 1]
  assert all(np.isfinite(records[s]["loss"]) for s in (1, 2, 5))
  assert not any("loss" in records[s] for s in (3, 4, 6, 7))  # a skipped step's NaN is not averaged in
  _, checkpoints = _checkpoints(str(tmp_path))
  with checkpoints:
    assert checkpoints.select("all") == [2, 4, 6]
    at = {step: checkpoints.restore(step) for step in (2, 4, 6)}  # each restore checks finiteness
  same = lambda a, b: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
  assert same(at[2], at[4]) and not same(at[4], at[6])  # steps 3-4 changed nothing, step 5 trained


def test_keep_through_drops_later_records_and_an_unfinished_line(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  writer = jsonl_writer.JsonlWriter(path)
  for step in range(1, 6):
    writer.write_scalars(step, {"loss": step / 10})
  with open(path, "a") as f:
    f.write('{"step": 6, "lo')  # a writer killed mid-line
  jsonl_writer.keep_through(path, 3)
  assert [r["step"] for r in jsonl_writer.read(path)] == [1, 2, 3]
  writer.write_scalars(4, {"loss": 0.0})  # the open writer appends to the rewritten file
  with open(path) as f:
    assert [json.loads(line)["step"] for line in f] == [1, 2, 3, 4]
  assert os.listdir(tmp_path) == ["metrics.jsonl"]
