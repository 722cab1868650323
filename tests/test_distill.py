"""Few-step distillation (vdit.distill): a mean-flow student of a tiny trained teacher starts as the
teacher, gets closer to the teacher's guided many-step samples at one step, samples every mode
with the ordinary command, and bad input is one error line with nothing written."""
import functools
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.helpers import cli, trained_tiny

pytestmark = pytest.mark.slow  # trains a teacher, then a student


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  data, workdir = trained_tiny(tmp_path_factory)  # shared with other modules: read only
  return Path(data).parent, Path(workdir)


@pytest.fixture(scope="module")
def teacher_sampler(teacher):
  return _sampler(teacher[1])  # (sampler, config), restored once: the tests only read it


def _sampler(workdir):
  from vdit.config import pretrained
  from vdit.diffusion.generation import VideoSampler
  from vdit.model import factory
  from vdit.parallel import sharding
  from vdit.text import conditioner
  config = pretrained.load_config(str(workdir))
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  with pretrained.Checkpoints(str(workdir), config, mesh) as checkpoints:
    params = checkpoints.restore(checkpoints.select(None)[0])
  return VideoSampler(factory.abstract_model(config)[0], params, conditioner.for_sampling(config, mesh), mesh=mesh), config


_PROMPTS = ["a red circle moving left", "a blue square moving up", "a green triangle moving right",
            "a yellow circle moving down"]
_SIZE = dict(num_frames=4, height=16, width=16, channels=3, patch_size=(2, 8, 8))


def _distance_to_teacher(student_sampler, reference):
  videos = np.asarray(student_sampler.generate(_PROMPTS, list(range(4)), **_SIZE, steps=1, cfg=1.0))
  return float(np.sqrt(np.mean(np.square(videos - reference))))


def test_student_improves_on_the_teacher_at_one_step_and_samples_every_mode(teacher, teacher_sampler, tmp_path):
  root, teacher_workdir = teacher
  sampler, config = teacher_sampler
  reference = np.asarray(sampler.generate(_PROMPTS, list(range(4)), **_SIZE, steps=20, cfg=config.sample.cfg))
  # Before distillation a student is its teacher (test below), so at one step it is one Euler step
  # of the teacher without guidance.
  one_step = np.asarray(sampler.generate(_PROMPTS, list(range(4)), **_SIZE, steps=1, cfg=1.0))
  before = float(np.sqrt(np.mean(np.square(one_step - reference))))

  student = tmp_path / "student"
  result = cli("vdit.distill", f"--teacher={teacher_workdir}", "--config=configs/distill_toy.py", f"--workdir={student}",
               "--config.num_steps=80", "--config.checkpoint_every=80", "--config.log_every=10",
               "--config.warmup_steps=5", "--config.peak_lr=1e-3")
  assert result.returncode == 0, result.stderr[-3000:]
  recorded = json.loads((student / "config.json").read_text())
  assert recorded["model"]["interval_conditioning"] and recorded["distill"]["teacher"] == str(teacher_workdir)
  assert recorded["sample"]["cfg"] == 1.0 and recorded["distill"]["guidance"] == config.sample.cfg
  student_sampler, _ = _sampler(student)
  after = _distance_to_teacher(student_sampler, reference)
  assert after < 0.8 * before, (before, after)

  # The ordinary sampling command takes the student's mean-flow steps, one pass each.
  out = tmp_path / "out"
  result = cli("vdit.sample", f"--workdir={student}", "--prompt=a red circle moving left", "--prompt=a blue square",
               f"--out={out}", "--steps=2")
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
  assert [(r["network_passes"], r["cfg"]) for r in records] == [(2, 1.0)] * 2
  refused = cli("vdit.sample", f"--workdir={student}", "--prompt=a red circle", f"--out={tmp_path / 'x'}", "--cfg=4")
  assert refused.returncode == 2 and "guidance distilled in" in refused.stderr.splitlines()[-1]
  assert not (tmp_path / "x").exists()
  # Every mode: conditioning frames held, one pass per step (loop: a video, then its bridge back to its start).
  from vdit.diffusion import modes
  opts = dict(_SIZE, steps=2, cfg=1.0)
  image = np.full((16, 16, 3), 128, np.uint8)
  from vdit.media import video_io
  video_io.write_png(str(tmp_path / "first.png"), image)
  for mode, inputs, passes in (("image", {"image": str(tmp_path / "first.png")}, 2), ("loop", {}, 4)):
    student_sampler.network_passes = 0
    videos = modes.run(mode, student_sampler, _PROMPTS[:2], [0, 1], opts, **inputs)
    assert student_sampler.network_passes == passes * 2 and len(videos) == 2
    # loop: the clip, then its bridge's new frames (a quarter of the window given at each end)
    t = opts["num_frames"]
    assert np.array_equal(videos[0][0], image) if mode == "image" else len(videos[0]) == 2 * t - 2 * max(1, t // 4)


def test_student_starts_as_its_teacher(teacher, teacher_sampler):
  """The step-length embedding is zero at its output: before training, u(x, t, h) = v(x, t) for any h."""
  from vdit.config import config_io, distill, experiment
  from vdit.model import factory
  from flax import nnx
  _, teacher_workdir = teacher
  sampler, config = teacher_sampler
  student_config = experiment.freeze(distill.student_config(config_io.load(str(teacher_workdir)), str(teacher_workdir),
                                                            distill.default_settings()))
  params = factory.init_params(student_config, jax.random.key(3))
  params["text_encoder"], dit = sampler.params["text_encoder"], dict(params["dit"])
  params["dit"] = {**sampler.params["dit"], "interval_embed": dit["interval_embed"]}
  x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
  tokens, mask = sampler.tokenizer.encode_batch(_PROMPTS[:2])
  t = np.array([0.9, 0.4], np.float32)

  def velocity(graphdef, params, **interval):  # jitted as sampling runs it; one program per model
    model = nnx.merge(graphdef, params)
    return model.velocity(x, t, model.encode_text(tokens, mask), mask, **interval)

  expected = jax.jit(functools.partial(velocity, sampler.graphdef))(sampler.params)
  got = jax.jit(functools.partial(velocity, factory.abstract_model(student_config)[0],
                                  interval=np.array([0.5, 0.3], np.float32)))(params)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_bad_teachers_are_one_error_line_and_write_nothing(teacher, tmp_path):
  root, teacher_workdir = teacher
  for args, message in (([f"--teacher={root / 'data'}"], "No config.json in workdir"),
                        ([f"--teacher={tmp_path / 'missing'}"], "does not exist"),
                        ([f"--teacher={teacher_workdir}", f"--workdir={teacher_workdir}"], "is the teacher's workdir")):
    result = cli("vdit.distill", f"--workdir={tmp_path / 'student'}", *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[-1].startswith("error: ") and message in lines[-1], lines[-1]
    assert not (tmp_path / "student").exists()


def test_dmd_regulariser_trains_a_fake_score_network_beside_the_student(teacher, tmp_path):
  """distill.dmd_weight > 0: the state gains the fake-score network (checkpointed as `aux`, never read
  by sampling) and both losses are logged; resuming `aux` is tested with the checkpointer below."""
  _, teacher_workdir = teacher
  student = tmp_path / "student"
  result = cli("vdit.distill", f"--teacher={teacher_workdir}", "--config=configs/distill_toy.py", f"--workdir={student}",
               "--config.num_steps=2", "--config.checkpoint_every=2", "--config.log_every=1", "--config.dmd_weight=0.5")
  assert result.returncode == 0, result.stderr[-3000:]
  assert (student / "checkpoints" / "2" / "aux").is_dir()
  rows = [json.loads(line) for line in (student / "metrics.jsonl").read_text().splitlines()]
  logged = [r for r in rows if "dmd_loss" in r]
  assert [r["step"] for r in logged] == [1, 2]
  assert all(np.isfinite(r["dmd_loss"]) and np.isfinite(r["fake_loss"]) for r in logged)
  assert json.loads((student / "config.json").read_text())["distill"]["dmd_weight"] == 0.5
  sampler, _ = _sampler(student)  # sampling restores the student's weights alone
  assert np.isfinite(np.asarray(sampler.generate(_PROMPTS[:1], [0], **_SIZE, steps=1, cfg=1.0))).all()


def test_a_trainers_aux_state_is_checkpointed_and_restored_with_the_rest(tmp_path):
  from vdit.core import checkpoint
  state = {"params": {"w": np.ones(3, np.float32)}, "ema": {"w": np.ones(3, np.float32)},
           "opt_state": {"m": np.zeros(3, np.float32)}, "aux": {"fake": {"w": np.arange(3, dtype=np.float32)}}}
  with checkpoint.Checkpointer(str(tmp_path / "ckpt"), async_save=False) as saver:
    saver.save(1, state, meta={}, force=True)
  with checkpoint.Checkpointer(str(tmp_path / "ckpt"), read_only=True) as reader:
    restored, _ = reader.restore(1, jax.tree.map(jax.numpy.asarray, state))
    without_aux, _ = reader.restore(1, {k: v for k, v in state.items() if k != "aux"})
  np.testing.assert_array_equal(np.asarray(restored["aux"]["fake"]["w"]), [0, 1, 2])
  assert "aux" not in without_aux  # a reader that does not ask for it never reads it
