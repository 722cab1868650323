"""`vdit.sample` as a user runs it: outputs, index.jsonl, and one clear error per bad input."""
import json
import os

import numpy as np
import pytest

from tests.helpers import cli, make_toy_data
from vdit.media import video_reader


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  data = make_toy_data(tmp_path_factory.mktemp("data"))
  workdir = str(tmp_path_factory.mktemp("run"))
  result = cli("vdit.main", "--config=tests/tiny.py:" + data, f"--workdir={workdir}", "--config.train.num_steps=2")
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


@pytest.mark.slow
def test_sample_writes_videos_sheet_and_index(workdir, tmp_path):
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("a red circle moving left\n\na blue square moving up\nrot ö\n", encoding="utf-8")
  out = tmp_path / "out"
  result = cli("vdit.sample", f"--workdir={workdir}", f"--prompts={prompts}", f"--out={out}", "--seed=7",
               "--steps=2", "--cfg=2.5", "--negative_prompt=blurry", "--scale=2")
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in (out / "index.jsonl").read_text(encoding="utf-8").splitlines()]
  assert [r["prompt"] for r in records] == ["a red circle moving left", "a blue square moving up", "rot ö"]
  assert [r["seed"] for r in records] == [7, 8, 9]
  for r in records:
    assert {"prompt", "path", "seed", "steps", "cfg"} <= set(r)
    assert r["steps"] == 2 and r["cfg"] == 2.5 and r["negative_prompt"] == "blurry"
    assert not os.path.isabs(r["path"])
    frames = video_reader.read_video(str(out / r["path"]))
    assert frames.shape == (4, 32, 32, 3)  # 4 frames of 16x16 at scale 2
    assert video_reader.read_video(str(out / r["gif"])).shape == (4, 32, 32, 3)
  assert (out / "contact_sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_same_seed_same_video(workdir, tmp_path):
  outs = []
  for name in ("a", "b"):
    result = cli("vdit.sample", f"--workdir={workdir}", "--prompt=a red circle moving left", f"--out={tmp_path / name}",
                 "--steps=2", "--seed=3")
    assert result.returncode == 0, result.stderr[-3000:]
    outs.append(video_reader.read_video(str(tmp_path / name / "000.gif")))
  np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--prompt="], "empty"),
    (["--prompt=" + "word " * 40], "the limit is"),
    (["--prompts=/no/such/file.txt"], "does not exist"),
    ([], "exactly one"),
])
def test_bad_prompts_give_one_clear_error(workdir, tmp_path, args, message):
  result = cli("vdit.sample", f"--workdir={workdir}", f"--out={tmp_path / 'out'}", *args)
  assert result.returncode == 2
  assert message in result.stderr.lower()
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "out").exists()


def test_workdir_without_checkpoint_is_a_clear_error(tmp_path):
  result = cli("vdit.sample", f"--workdir={tmp_path}", "--prompt=a red circle moving left", f"--out={tmp_path / 'o'}")
  assert result.returncode == 2
  assert "config.json" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_modes_from_the_command_line(workdir, tmp_path):
  from vdit.media import video_io
  image = np.random.default_rng(0).integers(0, 8, (16, 16, 3), dtype=np.uint8) * 32
  video_io.write_png(str(tmp_path / "first.png"), image)
  out = tmp_path / "i2v"
  result = cli("vdit.sample", f"--workdir={workdir}", "--prompt=red ball going left", f"--out={out}",
               "--steps=2", f"--image={tmp_path / 'first.png'}", "--scale=1", "--sampler=dpmpp_2m", "--expand=toy",
               "--frame_cfg=2")
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads((out / "index.jsonl").read_text())
  assert record["mode"] == "image" and record["inputs"] == {"image": str(tmp_path / "first.png")}
  assert (record["prompt"], record["caption"]) == ("red ball going left", "a red circle moving left")
  assert record["frame_cfg"] == 2.0
  for name in (record["path"], record["gif"]):  # provenance travels inside the files
    tags = video_reader.read_tags(str(out / name))
    assert tags["generator"] == "vdit" and tags["prompt"] == "red ball going left"
    assert (tags["mode"], tags["seed"], tags["config_hash"]) == ("image", "0", record["config_hash"])
  np.testing.assert_array_equal(video_reader.read_video(str(out / record["gif"]))[0], image)
  out = tmp_path / "t2i"
  result = cli("vdit.sample", f"--workdir={workdir}", "--prompt=a red circle", f"--out={out}", "--steps=2",
               "--num_frames=1", "--scale=2", "--watermark")
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads((out / "index.jsonl").read_text())
  assert record["path"] == "000.png" and record["frames"] == 1 and "gif" not in record
  assert video_reader.read_video(str(out / "000.png")).shape == (1, 32, 32, 3)
  tags = video_reader.read_tags(str(out / "000.png"))
  assert tags["caption"] == "a red circle" and tags["watermark"] == "vdit-grid16"
  from vdit.media import watermark
  assert watermark.detect(video_reader.read_video(str(out / "000.png")))[0]
  both = cli("vdit.sample", f"--workdir={workdir}", "--prompt=a", f"--out={tmp_path / 'x'}", "--loop",
             f"--image={tmp_path / 'first.png'}")
  assert both.returncode == 2 and "Choose one mode" in both.stderr
  bad = cli("vdit.sample", f"--workdir={workdir}", "--prompt=a", f"--out={tmp_path / 'y'}", "--edit=/no/file.mp4")
  assert bad.returncode == 2 and "Cannot use /no/file.mp4" in bad.stderr
  assert not (tmp_path / "y").exists()
  hung = cli("vdit.sample", f"--workdir={workdir}", "--prompt=a", f"--out={tmp_path / 'z'}", "--expand=command",
             "--expand_command=sleep 20", "--expand_timeout=0.5")
  assert hung.returncode == 2 and "no answer within 0.5 s" in hung.stderr
  assert not (tmp_path / "z").exists()


@pytest.mark.slow
def test_toy_modes_eval_runs_every_mode(workdir, tmp_path):
  out = tmp_path / "modes"
  result = cli("vdit.eval.toy_modes", f"--workdir={workdir}", f"--out={out}", "--videos=1")
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((out / "results.json").read_text())["summary"]
  assert set(summary) == {"text", "image", "extend_forward", "extend_backward", "connect", "loop", "edit",
                          "text_to_image", "long"}
  # Exact by construction, whatever the model: the given frames come back unchanged.
  assert summary["image"]["psnr_frame0"] == summary["connect"]["start_psnr"] == 99.0
  assert summary["extend_forward"]["given_kept_psnr"] == summary["loop"]["last_vs_first_psnr"] == 99.0
  assert sorted(p.name for p in out.glob("*.gif")) == sorted(
      f"{m}.gif" for m in ("text", "image", "extend_forward", "extend_backward", "connect", "loop",
                           "edit", "text_to_image", "long"))
