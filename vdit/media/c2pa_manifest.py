"""C2PA manifests (Content Credentials) on the files vdit writes, through the C2PA SDK (c2pa-python,
which ships the native library and works offline), and reading them back.

The manifest carries a `c2pa.created` action whose digitalSourceType is IPTC's
trainedAlgorithmicMedia, the generator (vdit and its version) as claim generator and software
agent, and the provenance tags (config hash, checkpoint step, seed, mode; the prompt and caption
when the safety policy allows). It is signed with a private key and its certificate chain (PEM
files: the signing certificate first, then its issuers); the algorithm follows the key (EC P-256:
ES256, P-384: ES384, P-521: ES512, RSA: PS256, Ed25519). Signing happens on the temporary file
before it is renamed into place (vdit.media.video_io's `seal`), so a file never appears unsigned.

The one module that imports c2pa.
"""
import dataclasses
import io
import json
import os

from vdit.core.errors import UserError

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MIME = {".mp4": "video/mp4", ".gif": "image/gif", ".png": "image/png"}
# Thumbnails cost ~0.8 s per GIF and show nothing the file does not.
_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}


class SigningError(UserError):
  """A key or certificate that cannot sign; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class Credentials:
  key_pem: bytes
  chain_pem: bytes
  alg: str  # es256, es384, es512, ps256, ed25519


def _read(path: str, flag: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise SigningError(f"Cannot read {path} (--{flag}): {e.strerror}; pass the PEM file.") from None


def _alg(key_pem: bytes, key_path: str) -> str:
  from cryptography.hazmat.primitives import serialization
  from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
  try:
    key = serialization.load_pem_private_key(key_pem, password=None)
  except (ValueError, TypeError) as e:
    raise SigningError(f"{key_path} (--c2pa_key) is not an unencrypted PEM private key ({e}); pass one.") from None
  if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in ("secp256r1", "secp384r1", "secp521r1"):
    return {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}[key.curve.name]
  if isinstance(key, rsa.RSAPrivateKey):
    return "ps256"
  if isinstance(key, ed25519.Ed25519PrivateKey):
    return "ed25519"
  raise SigningError(f"{key_path} (--c2pa_key) holds a key C2PA cannot sign with; use EC P-256/384/521, RSA or "
                     "Ed25519.")


def load_credentials(key_path: str, cert_path: str) -> Credentials:
  """Reads and checks the key and chain by signing a one-pixel PNG, so a bad pair fails before any
  compute, in one line."""
  key_pem, chain_pem = _read(key_path, "c2pa_key"), _read(cert_path, "c2pa_cert")
  credentials = Credentials(key_pem, chain_pem, _alg(key_pem, key_path))
  from PIL import Image
  probe = io.BytesIO()
  Image.new("RGB", (1, 1)).save(probe, format="PNG")
  try:
    probe.seek(0)
    _sign_stream(credentials, manifest({"generator": "vdit", "vdit_version": "probe"}, include_prompt=False),
                 "image/png", probe, io.BytesIO())
  except Exception as e:  # pylint: disable=broad-except  (the SDK's errors carry the reason)
    raise SigningError(f"Cannot sign with {key_path} and {cert_path} ({type(e).__name__}: {e}); pass a private key "
                       "and the certificate chain it belongs to (signing certificate first, then its CA).") from None
  return credentials


def manifest(tags: dict, *, include_prompt: bool) -> dict:
  """The manifest definition for a file with vdit's provenance tags (vdit.media.provenance)."""
  agent = {"name": tags["generator"], "version": tags["vdit_version"]}
  keep = ("config_hash", "checkpoint_step", "seed", "mode", "watermark") + (("prompt", "caption") if include_prompt else ())
  action = {"action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA, "softwareAgent": agent,
            "parameters": {k: tags[k] for k in keep if k in tags}}
  return {"claim_generator_info": [agent], "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [action]}}]}


def _sign_stream(credentials: Credentials, definition: dict, mime: str, source, dest) -> None:
  import c2pa
  info = c2pa.C2paSignerInfo(credentials.alg.encode(), credentials.chain_pem, credentials.key_pem, None)
  context = c2pa.Context.from_dict(_SETTINGS)
  with c2pa.Signer.from_info(info) as signer, c2pa.Builder(definition, context=context) as builder:
    builder.sign(signer, mime, source, dest)


def sealer(credentials: Credentials, definition: dict, mime: str):
  """A `seal` for vdit.media.video_io writers: signs the finished temporary file in place."""
  def seal(tmp_path: str) -> None:
    signed = tmp_path + ".c2pa"
    try:
      with open(tmp_path, "rb") as source, open(signed, "w+b") as dest:
        _sign_stream(credentials, definition, mime, source, dest)
      os.replace(signed, tmp_path)
    finally:
      if os.path.exists(signed):
        os.remove(signed)
  return seal


class ManifestReadError(UserError):
  """A file the C2PA reader cannot open or parse."""


def read(path: str) -> dict | None:
  """The file's active manifest, checked by the SDK: {"state": Valid | Trusted | Invalid, "failures":
  [codes], "manifest": the active manifest}; None when the file carries no manifest."""
  import c2pa
  try:
    reader = c2pa.Reader.try_create(path)
  except c2pa.C2paError as e:
    raise ManifestReadError(f"{path}: the C2PA reader cannot read it ({e}).") from None
  if reader is None:
    return None
  with reader:
    results = reader.get_validation_results() or {}
    failures = [f["code"] for f in (results.get("activeManifest") or {}).get("failure", [])]
    return {"state": reader.get_validation_state(), "failures": failures, "manifest": reader.get_active_manifest()}


def created_action(found: dict) -> dict | None:
  """The `c2pa.created` action of a manifest read by `read`, or None."""
  for assertion in (found.get("manifest") or {}).get("assertions", []):
    if assertion.get("label", "").startswith("c2pa.actions"):
      for action in assertion["data"].get("actions", []):
        if action.get("action") == "c2pa.created":
          return action
  return None


def summary(found: dict | None) -> str:
  """One line: the manifest's state and what it says."""
  if found is None:
    return "c2pa=none"
  action = created_action(found) or {}
  params = action.get("parameters", {})
  agent = action.get("softwareAgent", {})
  source = (action.get("digitalSourceType") or "?").rsplit("/", 1)[-1]
  failed = f" failures={','.join(found['failures'])}" if found["failures"] else ""
  return (f"c2pa={found['state'].lower()}{failed} generator={agent.get('name', '?')} {agent.get('version', '?')} "
          f"source={source} params={json.dumps(params, ensure_ascii=False, sort_keys=True)}")
