"""vdit.evaluate and periodic evaluation: a tiny trained workdir -> results.json, plots, gallery."""
import json
import os

import numpy as np
import pytest

from vdit.toy import world as toy_world
from tests.helpers import cli, make_toy_data
from tests.tiny import tiny_config
from vdit.media import provenance
from vdit.eval import eval_config as eval_config_lib
from vdit.eval import scores, train_toy_features
from vdit.eval.toy_features import ToyFeatures

pytestmark = pytest.mark.slow  # every test uses a module fixture that trains

_EXPECTED_METRICS = {"fvd", "fid", "kid", "kid_std", "text_alignment", "alignment_top1", "colour_accuracy",
                     "shape_accuracy", "direction_accuracy", "all_accuracy", "seen_colour_accuracy",
                     "held_out_colour_accuracy", "temporal_consistency", "motion", "val_loss"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """Toy data, an eval split of the same world, a briefly trained feature network, and a tiny
  workdir trained 8 steps with an evaluation and a checkpoint every 4 (each checkpoint the CLI
  evaluates costs a full evaluation)."""
  root = tmp_path_factory.mktemp("evaluate")
  data = make_toy_data(root / "data", num_clips=64)
  reference = str(root / "reference")
  toy_world.generate(reference, num_clips=96, num_frames=6, height=16, width=16, num_held_out=4,
                     num_shards=1, seed=0, split="eval")
  features = str(root / "features.safetensors")
  train_toy_features.train(data, features, steps=30, batch_size=16, num_clips=64, log=lambda *_: None)
  overrides = {"reference_dir": reference, "features.path": features, "num_reference": 96,
               "kid.subset_size": 8, "toy_prompts.repeats": 3, "val.num_clips": 16, "gallery.max_videos": 4}
  workdir = str(root / "work")
  config = tiny_config(data)
  with config.unlocked():
    config.eval.every_steps = 4
    config.train.checkpoint_every = 4
    config.eval.config = "configs/evals/toy.py"
    config.eval.overrides = ",".join(f"{k}={v}" for k, v in overrides.items())
  from vdit.training import dit_trainer as train
  train.train_and_evaluate(config, workdir)
  return {"root": root, "workdir": workdir, "reference": reference, "features": features, "overrides": overrides}


def _eval_flags(overrides):
  return [f"--eval.{k}={v}" for k, v in overrides.items()]


def test_training_evaluates_periodically(setup):
  rows = [json.loads(line) for line in open(os.path.join(setup["workdir"], "metrics.jsonl"))]
  evaluated = {r["step"]: r for r in rows if "eval/fvd" in r}
  assert sorted(evaluated) == [4, 8]
  assert {f"eval/{m}" for m in _EXPECTED_METRICS} <= set(evaluated[8])
  assert os.path.isfile(os.path.join(setup["workdir"], "eval", "toy", "step_00000004", "results.json"))


def test_evaluate_every_checkpoint_writes_results_plots_and_gallery(setup):
  out = setup["root"] / "cli_eval"
  result = cli("vdit.evaluate", f"--workdir={setup['workdir']}", "--eval=configs/evals/toy.py",
               "--checkpoint=all", f"--out={out}", *_eval_flags(setup["overrides"]))
  assert result.returncode == 0, result.stderr[-3000:]
  steps = sorted(p.name for p in out.glob("step_*"))
  assert steps == ["step_00000004", "step_00000008"]
  results = json.loads((out / "step_00000008" / "results.json").read_text())
  assert _EXPECTED_METRICS <= set(results["metrics"])
  assert all(np.isfinite(results["metrics"][m]) for m in ("fvd", "fid", "kid", "val_loss"))
  assert results["step"] == 8 and results["num_samples"] == len(results["seeds"]) == 36
  assert "safety" not in results and "safety" not in results["eval_config"]  # no policy: no trace of one
  assert results["seeds"] == list(range(36)) and results["num_reference"] == 96
  assert results["config_hash"] == provenance.config_hash(setup["workdir"])
  assert len(results["val_loss_by_timestep"]["loss"]) == len(results["eval_config"]["val"]["timesteps"])
  assert {"colour_ok", "shape_ok", "direction_ok", "held_out", "alignment"} <= set(results["videos"][0]["scores"])
  # The same checkpoint, prompts and seeds give the same numbers in the trainer and the CLI.
  periodic = json.loads(open(os.path.join(setup["workdir"], "eval", "toy", "step_00000008", "results.json")).read())
  for name, value in periodic["metrics"].items():
    assert results["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-9), name
  page = (out / "step_00000008" / "index.html").read_text()
  assert all(v["prompt"] in page for v in results["videos"])
  for v in results["videos"][:4]:
    assert (out / "step_00000008" / v["webm"]).stat().st_size > 0 and (out / "step_00000008" / v["mp4"]).is_file()
  assert "webm" not in results["videos"][4]  # gallery.max_videos
  assert (out / "plots" / "metrics_vs_step.png").is_file() and (out / "plots" / "val_loss_by_timestep.png").is_file()
  overview = (out / "index.html").read_text()
  assert all(f"{s}/index.html" in overview for s in steps)


def test_scores_are_deterministic(setup):
  config = eval_config_lib.apply_overrides(_toy_eval_config(), ",".join(f"{k}={v}" for k, v in setup["overrides"].items()))
  features = ToyFeatures(setup["features"])
  from vdit.data import dataset_files
  clips = dataset_files.read_clips(setup["reference"])
  reference = scores.reference_statistics(config, features, features, clips, 4)
  videos = np.random.default_rng(0).integers(0, 256, (40, 4, 16, 16, 3), dtype=np.uint8)
  prompts = [c["caption"] for c in clips[:40]]
  first = scores.score(config, videos, prompts, features=features, aligner=features, reference=reference, held_out=set())
  again = scores.score(config, videos.copy(), list(prompts), features=features, aligner=features,
                       reference=reference, held_out=set())
  assert first == again
  assert first[0]["fvd"] > 0 and first[0]["kid"] > 0


def _toy_eval_config():
  from configs.evals import toy
  return toy.get_config()


def test_too_small_reference_is_refused_before_sampling(setup):
  flags = _eval_flags(dict(setup["overrides"], num_reference=20))
  result = cli("vdit.evaluate", f"--workdir={setup['workdir']}", "--eval=configs/evals/toy.py",
               f"--out={setup['root'] / 'small'}", *flags)
  assert result.returncode == 2
  assert "FVD with 32-dim toy features needs at least 33 reference clips, has 20" in result.stderr
  assert not (setup["root"] / "small").exists()


def test_workdir_without_checkpoint_and_bad_feature_weights_are_clear_errors(setup, tmp_path):
  from vdit.core import checkpoint as ckpt_lib
  from vdit.core import weights
  from vdit.eval import toy_features
  empty = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"), read_only=True)
  with pytest.raises(ckpt_lib.CheckpointError, match="No checkpoint in .*train first"):
    empty.select_steps("latest")
  tensors, metadata = weights.load(setup["features"])
  tensors["frame_proj.kernel"] = tensors["frame_proj.kernel"][:, :16]
  bad = str(tmp_path / "bad.safetensors")
  weights.save(bad, tensors, metadata)
  with pytest.raises(weights.WeightsError, match=r"bad.safetensors: tensor 'frame_proj.kernel' has shape"):
    toy_features.ToyFeatures(bad)
  weights.save(bad, tensors, {"format": "vdit-i3d"})
  with pytest.raises(weights.WeightsError, match="not a toy feature network"):
    toy_features.ToyFeatures(bad)


def test_two_processes_give_the_numbers_of_one(setup):
  """2 processes x 4 CPU devices (gloo) sample, score and write like 1 process x 8 devices."""
  from tests.helpers import run_processes
  out = setup["root"] / "two_processes"
  run_processes("vdit.evaluate", f"--workdir={setup['workdir']}", "--eval=configs/evals/toy.py", "--checkpoint=8",
                f"--out={out}", *_eval_flags(setup["overrides"]))
  got = json.loads((out / "step_00000008" / "results.json").read_text())
  expected = json.loads(open(os.path.join(setup["workdir"], "eval", "toy", "step_00000008", "results.json")).read())
  assert got["seeds"] == expected["seeds"]
  # Tolerance: the same samples up to float reduction order across the gloo all-gathers.
  for name, value in expected["metrics"].items():
    assert got["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_eval_safety_policy_reports_rates_and_withholds_blocked_videos(setup, tmp_path):
  """An eval config naming a policy: per-category rates in results.json, a decision per video (the
  frame stage reproduced by an independent FrameChecker on the same samples), blocked videos
  unwritten, the Safety table in the gallery."""
  from vdit.config import pretrained
  from vdit.eval.evaluator import Evaluator
  from vdit.parallel import sharding
  from vdit.safety import policy
  from vdit.safety.frame_check import FrameChecker
  prompts = ["a red circle moving left", "a blue square moving up", "a shoot circle", "a green triangle moving down"]
  (tmp_path / "prompts.txt").write_text("\n".join(prompts))
  (tmp_path / "policy.json").write_text(json.dumps({"version": 1, "categories": {
      "red_objects": {"action": "block", "checks": [{"type": "frames", "classifier": "toy_colour", "colour": "red"}]},
      "words": {"action": "flag", "checks": [{"type": "terms", "terms": ["shoot"]}]}}}))
  overrides = {"prompts": str(tmp_path / "prompts.txt"), "safety.policy": str(tmp_path / "policy.json"),
               "reference_dir": "",
               **{f"metrics.{m}": "false" for m in ("fvd", "fid", "kid", "temporal", "alignment", "val_loss")}}
  config = eval_config_lib.apply_overrides(_toy_eval_config(), ",".join(f"{k}={v}" for k, v in overrides.items()))
  model_config = pretrained.load_config(setup["workdir"])
  mesh = sharding.make_mesh({"data": -1})
  with pretrained.Checkpoints(setup["workdir"], model_config, mesh) as checkpoints:
    params = checkpoints.restore(8)
  evaluator = Evaluator(model_config, config, workdir=setup["workdir"], out_dir=str(tmp_path / "out"), mesh=mesh)
  results = evaluator.run(params, 8)
  red = [FrameChecker(policy.load(str(tmp_path / "policy.json"))).check(v)[0].blocked for v in evaluator.sample(params)]
  safety = results["safety"]
  assert safety["categories"]["words"] == {"action": "flag", "prompt_rate": 0.25, "frames_rate": 0.0, "rate": 0.25}
  assert safety["categories"]["red_objects"]["frames_rate"] == sum(red) / 4 == safety["blocked_rate"]
  assert results["metrics"]["safety_blocked_rate"] == sum(red) / 4
  step_dir = tmp_path / "out" / "step_00000008"
  for entry, blocked in zip(results["videos"], red):
    assert entry["safety"]["decision"] == ("blocked" if blocked else "flagged" if entry["index"] == 2 else "allowed")
    assert ("mp4" in entry) != blocked
    assert (step_dir / "videos" / f"{entry['index']:03d}.mp4").is_file() != blocked
  assert results["eval_config"]["safety"]["policy"] == str(tmp_path / "policy.json")
  assert "<h2>Safety</h2>" in (step_dir / "index.html").read_text()


def test_pixel_validation_clips_are_cut_to_whole_temporal_patches():
  """Reference clips longer than the model's window go through the validation loss whole, as far
  as the model's temporal patch divides them (12 frames: all of them at patch 2, 8 at patch 8)."""
  from types import SimpleNamespace
  from vdit.eval.evaluator import validation_clip
  frames = np.zeros((12, 16, 16, 3), np.uint8)
  pixels_space = SimpleNamespace(is_latent=False)
  assert validation_clip(frames, pixels_space, 2).shape[0] == 12
  assert validation_clip(frames, pixels_space, 8).shape[0] == 8
