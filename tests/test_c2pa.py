"""C2PA manifests (vdit.media.c2pa_manifest) on mp4, GIF and PNG, signed with a throwaway chain, and
`python -m vdit.provenance verify` reading them back with the watermark verdict."""
import os
import subprocess
import sys

import pytest

from tests.c2pa_chain import write_chain
from tests.helpers import REPO, cli_env
from vdit.media import c2pa_manifest, video_io, video_reader, watermark
from vdit.toy import world

TAGS = {"generator": "vdit", "vdit_version": "0.1.0", "config_hash": "0123456789abcdef", "checkpoint_step": "2",
        "seed": "7", "prompt": "a red circle", "caption": "a red circle moving left", "mode": "text",
        "watermark": "none"}


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
  """A key and chain, and a signed mp4 (watermarked), GIF and PNG."""
  root = tmp_path_factory.mktemp("c2pa")
  credentials = c2pa_manifest.load_credentials(*write_chain(root))
  frames = world.render_clip("red", "circle", "left", start=(20.0, 16.0), speed=1.0, radius=5.0, num_frames=4,
                             height=32, width=32)
  definition = c2pa_manifest.manifest(TAGS, include_prompt=True)
  seal = lambda suffix: c2pa_manifest.sealer(credentials, definition, c2pa_manifest.MIME[suffix])
  video_io.write_mp4(str(root / "a.mp4"), watermark.embed(frames), fps=8, scale=4, metadata=TAGS, seal=seal(".mp4"))
  video_io.write_gif(str(root / "a.gif"), frames, fps=8, scale=2, metadata=TAGS, seal=seal(".gif"))
  video_io.write_png(str(root / "a.png"), frames[0], metadata=TAGS, seal=seal(".png"))
  video_io.write_png(str(root / "plain.png"), frames[0])
  return root, frames


@pytest.mark.parametrize("name", ["a.mp4", "a.gif", "a.png"])
def test_written_files_carry_a_valid_created_manifest(signed, name):
  root, frames = signed
  found = c2pa_manifest.read(str(root / name))
  assert found["state"] == "Valid" and found["failures"] == ["signingCredential.untrusted"]  # our own CA
  action = c2pa_manifest.created_action(found)
  assert action["digitalSourceType"] == c2pa_manifest.TRAINED_ALGORITHMIC_MEDIA
  assert action["softwareAgent"] == {"name": "vdit", "version": "0.1.0"}
  assert action["parameters"]["config_hash"] == TAGS["config_hash"] and action["parameters"]["prompt"] == "a red circle"
  assert video_reader.read_tags(str(root / name))["prompt"] == "a red circle"  # vdit's own tags survive signing
  assert video_reader.read_video(str(root / name)).shape[0] == (1 if name.endswith("png") else 4)
  assert not [n for n in os.listdir(root) if n.endswith((".tmp", ".c2pa"))]  # no temporary left behind


def test_prompt_left_out_when_the_policy_says_so():
  definition = c2pa_manifest.manifest(TAGS, include_prompt=False)
  params = definition["assertions"][0]["data"]["actions"][0]["parameters"]
  assert "prompt" not in params and "caption" not in params and params["seed"] == "7"


def test_a_changed_file_fails_validation(signed, tmp_path):
  root, _ = signed
  data = bytearray((root / "a.mp4").read_bytes())
  data[-40] ^= 0xFF  # inside the last frame's compressed data
  (tmp_path / "changed.mp4").write_bytes(bytes(data))
  found = c2pa_manifest.read(str(tmp_path / "changed.mp4"))
  assert found["state"] == "Invalid" and any("mismatch" in code for code in found["failures"]), found["failures"]


def test_bad_key_or_certificate_is_one_clear_error(tmp_path):
  key, chain = write_chain(tmp_path)
  (tmp_path / "junk.pem").write_text("not a key")
  with pytest.raises(c2pa_manifest.SigningError, match="is not an unencrypted PEM private key"):
    c2pa_manifest.load_credentials(str(tmp_path / "junk.pem"), chain)
  with pytest.raises(c2pa_manifest.SigningError, match="missing.pem \\(--c2pa_cert\\)"):
    c2pa_manifest.load_credentials(key, str(tmp_path / "missing.pem"))
  with pytest.raises(c2pa_manifest.SigningError, match="Cannot sign with"):
    c2pa_manifest.load_credentials(key, str(tmp_path / "junk.pem"))


def test_verify_command_reports_manifest_and_watermark(signed):
  root, _ = signed
  files = [str(root / n) for n in ("a.mp4", "plain.png", "missing.gif")]
  result = subprocess.run([sys.executable, "-m", "vdit.provenance", "verify", *files], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
  lines = result.stdout.splitlines()
  assert "\tc2pa=valid failures=signingCredential.untrusted generator=vdit 0.1.0 source=trainedAlgorithmicMedia" \
      in lines[0] and "\twatermarked\tscore=" in lines[0]
  assert "\tc2pa=none\tclean\tscore=" in lines[1]
  assert lines[2].startswith(f"{files[2]}\terror\t")
  assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: 1 of 3 files")
