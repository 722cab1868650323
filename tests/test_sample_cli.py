"""`vdit.sample` as a user runs it: outputs, index.jsonl, and one clear error per bad input."""
import json
import os

import numpy as np
import pytest

from tests import tiny
from tests.helpers import cli, trained_tiny
from tests.tiny_weights import vae_file
from vdit.media import video_reader


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return trained_tiny(tmp_path_factory)[1]  # shared with other modules: read only


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
  """Workdirs with a config.json and no checkpoint: a pixel model with patch (2, 8, 8) and a latent
  one with patch (1, 2, 2) over a VAE of factors 4 (time) and 8 (space). A check that comes before
  the weights are read fails here with its own message, not with "No checkpoint"."""
  from vdit.config import config_io
  root = tmp_path_factory.mktemp("untrained")
  sizes = {"sample.height": 16, "sample.width": 16}
  config_io.save(tiny.tiny_config(**sizes), str(root / "pixel"))
  vae = vae_file(root / "vae.safetensors", seed=0)
  config_io.save(tiny.tiny_config(**sizes, **{"latent.vae": vae, "model.in_channels": 4, "model.patch_size": (1, 2, 2),
                                               "sample.num_frames": 5}), str(root / "latent"))
  (root / "clip.mp4").write_bytes(b"")  # exists; never read, the checks come first
  return root


def _assert_refused(result, message, out):
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert lines[-1].startswith("error: ") and message in lines[-1], lines[-1]
  assert not os.path.exists(out)


# Flags -> the one-line refusal, or None where the sizes fit (the run then goes on to the weights).
_SIZE_CASES = [
    ("pixel", {"num_frames": 5}, "--num_frames=5 is not a multiple of 2, which the model's patch (2, 8, 8) needs; use "
     "--num_frames=4 or 6."),
    ("pixel", {"height": 36, "width": 4}, "--height=36 is not a multiple of 8 and --width=4 is not a multiple of 8, "
     "which the model's patch (2, 8, 8) needs; use --height=32 or 40, --width=8."),
    ("latent", {"num_frames": 6, "width": 24}, "--num_frames=6 is not 1 + 4k and --width=24 is not a multiple of 16, "
     "which the model's patch (1, 2, 2) over VAE latents (1 + (T - 1)/4 frames, sides / 8) needs; use "
     "--num_frames=5 or 9, --width=16 or 32."),
    ("pixel", {"total_frames": 4}, "--total_frames=4 must exceed the window num_frames=4"),
    ("pixel", {"video": "{root}/clip.mp4", "extend": "forward", "extend_frames": 4},
     "--extend_frames=4 must be between 1 and 3 for --extend at num_frames=4"),
    ("pixel", {"loop": True, "extend_frames": 2}, "--extend_frames=2 must be between 1 and 1 for --loop at num_frames=4"),
    ("pixel", {"num_frames": 6, "height": 24, "width": 8}, None),
    ("latent", {"num_frames": 9, "height": 32}, None),
    ("latent", {"num_frames": 1}, None),  # text-to-image: the window is one latent frame
]


@pytest.mark.parametrize("model, values, message", _SIZE_CASES)
def test_sizes_the_model_cannot_make_are_refused(untrained, model, values, message):
  """The checks `vdit.sample` runs on the workdir's config before reading weights (in process: the
  command's wiring is the CLI test below)."""
  import types
  from vdit import sample
  from vdit.config import pretrained
  from vdit.vae import latents
  flags = dict(num_frames=None, height=None, width=None, image=None, video=None, extend=None, extend_frames=None,
               connect=None, loop=False, edit=None, strength=0.8, total_frames=None)
  flags.update({k: v.format(root=untrained) if isinstance(v, str) else v for k, v in values.items()})
  f = types.SimpleNamespace(**flags)
  config = pretrained.load_config(str(untrained / model))
  mode, _ = sample.resolve_mode(f)
  if message is None:
    sample._sizes(f, mode, config, latents.from_config(config))
  else:
    with pytest.raises(sample.UsageError) as refusal:
      sample._sizes(f, mode, config, latents.from_config(config))
    assert message in str(refusal.value)


@pytest.mark.parametrize("model, args, message", [
    ("pixel", ["--num_frames=5"], "error: --num_frames=5 is not a multiple of 2, which the model's patch (2, 8, 8) "
     "needs; use --num_frames=4 or 6."),
    ("latent", ["--num_frames=6", "--width=24"], "--num_frames=6 is not 1 + 4k and --width=24 is not a multiple of 16"),
    # Sizes that fit pass the check and get as far as the (missing) weights.
    ("latent", ["--num_frames=9", "--height=32"], "No checkpoint in"),
])
def test_sizes_the_model_cannot_make_are_refused_before_the_weights(untrained, tmp_path, model, args, message):
  out = tmp_path / "out"
  result = cli("vdit.sample", f"--workdir={untrained / model}", "--prompt=a red circle", f"--out={out}", *args)
  _assert_refused(result, message, out)


# (Flag-level refusals, --out naming a file and --steps=0 among them, are tests/test_commands.py's.)
@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--num_frames=5", "--height=36"], "--num_frames=5 is not a multiple of 2 and --height=36 is not a multiple of 8"),
    (["--cache=cfg", "--frame_cfg=2"], "--cache='cfg' reuses the text-guidance difference alone"),
])
def test_bad_sizes_and_outputs_with_a_trained_workdir(workdir, tmp_path, args, message):
  (tmp_path / "file").write_text("keep me")
  out = tmp_path / "out"
  result = cli("vdit.sample", f"--workdir={workdir}", "--prompt=a red circle", f"--out={out}",
               *(a.format(file=tmp_path / "file") for a in args))  # a second --out wins
  _assert_refused(result, message, out)
  assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.slow
def test_sample_writes_videos_sheet_and_index(workdir, tmp_path):
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("a red circle moving left\n\na blue square moving up\nrot ö\n", encoding="utf-8")
  out = tmp_path / "out"
  result = cli("vdit.sample", f"--workdir={workdir}", f"--prompts={prompts}", f"--out={out}", "--seed=7",
               "--steps=2", "--cfg=2.5", "--negative_prompt=blurry", "--scale=2", "--cache=cfg")
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in (out / "index.jsonl").read_text(encoding="utf-8").splitlines()]
  assert [r["prompt"] for r in records] == ["a red circle moving left", "a blue square moving up", "rot ö"]
  assert [r["seed"] for r in records] == [7, 8, 9]
  for r in records:
    assert {"prompt", "path", "seed", "steps", "cfg"} <= set(r)
    assert r["steps"] == 2 and r["cfg"] == 2.5 and r["negative_prompt"] == "blurry"
    # Both passes on the first guided step, the conditional pass and the cached difference on the second.
    assert (r["cache"], r["network_passes"]) == ("cfg", 3)
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
  assert summary["extend_forward"]["given_kept_psnr"] == 99.0
  with open(os.path.join(workdir, "config.json")) as f:
    t = json.load(f)["sample"]["num_frames"]
  assert summary["loop"]["frames"] == 2 * t - 2 * max(1, t // 4)  # the clip, then its bridge's new frames
  assert sorted(p.name for p in out.glob("*.gif")) == sorted(
      f"{m}.gif" for m in ("text", "image", "extend_forward", "extend_backward", "connect", "loop",
                           "edit", "text_to_image", "long"))


@pytest.mark.slow
def test_safety_blocks_flags_and_signs(workdir, tmp_path):
  from vdit.media.c2pa_dev_chain import write_chain
  from vdit.media import c2pa_manifest, video_io
  key, chain = write_chain(tmp_path)
  out = tmp_path / "out"
  result = cli("vdit.sample", f"--workdir={workdir}", "--prompt=a blue square moving up", "--prompt=a red circle, k1ll it",
               "--prompt=mickey mouse moving left", f"--out={out}", "--steps=2", f"--c2pa_key={key}",
               f"--c2pa_cert={chain}")
  assert result.returncode == 4, result.stderr[-3000:]  # some were blocked; the rest were written
  blocked = [line for line in result.stderr.splitlines() if line.startswith("blocked: ")]
  assert blocked == ["blocked: video 001 (prompt 'a red circle, k1ll it'): category violence at the prompt stage, "
                     "term 'kill' (as 'kill'); nothing of it was written."]
  records = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
  assert [r["safety"]["decision"] for r in records] == ["allowed", "blocked", "flagged"]
  assert records[2]["safety"]["category"] == "intellectual_property" and "path" not in records[1]
  assert sorted(p.name for p in out.iterdir()) == ["000.gif", "000.mp4", "002.gif", "002.mp4", "contact_sheet.png",
                                                   "index.jsonl"]
  for name in ("000.mp4", "000.gif", "002.mp4", "contact_sheet.png"):
    found = c2pa_manifest.read(str(out / name))
    assert found["state"] == "Valid" and c2pa_manifest.created_action(found)["parameters"]["config_hash"] == \
        records[0]["config_hash"]
  # A forbidden conditioning image under a neutral prompt: blocked before any weights are read.
  video_io.write_png(str(tmp_path / "red.png"), np.full((16, 16, 3), (230, 25, 25), np.uint8))
  red = cli("vdit.sample", f"--workdir={workdir}", "--prompt=a shape moving", f"--out={tmp_path / 'i2v'}",
            f"--image={tmp_path / 'red.png'}", "--safety_policy=configs/safety/toy_no_red.json", "--c2pa=off")
  assert red.returncode == 4, red.stderr[-3000:]
  record = json.loads((tmp_path / "i2v" / "index.jsonl").read_text())
  assert record["safety"]["stage"] == "frames" and record["safety"]["category"] == "red_objects"
  assert os.listdir(tmp_path / "i2v") == ["index.jsonl"]
  assert "warning: files are written without C2PA manifests (--c2pa=off)." in red.stderr
