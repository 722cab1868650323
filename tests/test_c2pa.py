"""C2PA manifests (vdit.media.c2pa_manifest) on mp4, GIF and PNG, signed with a fresh local development
chain (vdit.media.c2pa_dev_chain), `python -m vdit.provenance verify` reading them back with the
watermark verdict, and `python -m vdit.provenance keygen` making that chain."""
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, cli, cli_env
from vdit.media import c2pa_dev_chain, c2pa_manifest, video_io, video_reader, watermark
from vdit.media.c2pa_dev_chain import write_chain
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


def _one_error_line(result, message):
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def _snapshot(directory):
  return {p.name: (p.read_bytes(), p.stat().st_mode) for p in directory.iterdir()}


def test_keygen_writes_a_chain_that_signs_valid_files(tmp_path):
  from cryptography import x509
  out = tmp_path / "c2pa_dev"  # created by keygen
  result = cli("vdit.provenance", "keygen", out)
  assert result.returncode == 0, result.stderr[-3000:]
  key, chain = out / "key.pem", out / "chain.pem"
  assert sorted(p.name for p in out.iterdir()) == ["chain.pem", "key.pem"]  # no temporary left behind
  assert key.stat().st_mode & 0o777 == 0o600
  printed = result.stdout.splitlines()
  assert printed[0].startswith(f"{key}\t") and printed[1].startswith(f"{chain}\t")
  assert "signingCredential.untrusted" in printed[2] and "real CA" in printed[2] and len(printed) == 3
  signer, ca = x509.load_pem_x509_certificates(chain.read_bytes())
  assert "vdit local development CA" in ca.subject.rfc4514_string() and signer.issuer == ca.subject
  assert (signer.not_valid_after_utc - signer.not_valid_before_utc).days == c2pa_dev_chain.VALID_DAYS + 1

  credentials = c2pa_manifest.load_credentials(str(key), str(chain))
  frames = world.render_clip("blue", "square", "up", start=(16.0, 16.0), speed=1.0, radius=5.0, num_frames=2,
                             height=16, width=16)
  definition = c2pa_manifest.manifest(TAGS, include_prompt=False)
  seal = lambda suffix: c2pa_manifest.sealer(credentials, definition, c2pa_manifest.MIME[suffix])
  video_io.write_png(str(tmp_path / "k.png"), frames[0], metadata=TAGS, seal=seal(".png"))
  video_io.write_gif(str(tmp_path / "k.gif"), frames, fps=8, scale=1, metadata=TAGS, seal=seal(".gif"))
  for name in ("k.png", "k.gif"):
    found = c2pa_manifest.read(str(tmp_path / name))
    assert found["state"] == "Valid" and found["failures"] == ["signingCredential.untrusted"], (name, found)


@pytest.mark.parametrize("existing", ["key.pem", "chain.pem"])
def test_keygen_never_replaces_a_key_or_chain(tmp_path, existing):
  (tmp_path / existing).write_text("mine")
  before = _snapshot(tmp_path)
  result = cli("vdit.provenance", "keygen", tmp_path)
  _one_error_line(result, f"{tmp_path / existing} already exists")
  assert "delete" in result.stderr and _snapshot(tmp_path) == before


def test_keygen_refuses_a_file_as_its_directory(tmp_path):
  (tmp_path / "notes.txt").write_text("mine")
  before = _snapshot(tmp_path)
  _one_error_line(cli("vdit.provenance", "keygen", tmp_path / "notes.txt"), "is an existing file, not a directory")
  assert _snapshot(tmp_path) == before


def test_keygen_leaves_nothing_when_writing_fails(tmp_path, monkeypatch):
  real_replace = c2pa_dev_chain.os.replace
  calls = []

  def replace(src, dst):  # the key lands, then the chain's rename fails (a full disk, say)
    calls.append(dst)
    if len(calls) == 2:
      raise OSError(28, "No space left on device")
    real_replace(src, dst)

  monkeypatch.setattr(c2pa_dev_chain.os, "replace", replace)
  with pytest.raises(OSError, match="No space"):
    write_chain(str(tmp_path))
  assert len(calls) == 2 and not list(tmp_path.iterdir())
