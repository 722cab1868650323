"""A local development C2PA signing chain: a fresh EC P-256 CA ("vdit local development CA") and a
signer certificate it issues, valid for a year, made offline on this machine.

The signer certificate has the extensions C2PA validators require: not a CA, digitalSignature key
usage, an email-protection extended key usage, subject and authority key identifiers. Files signed
with it verify as valid, with `signingCredential.untrusted`: no one else's trust list holds this CA.
It is for trying signing out (the toy demo, tests); to publish, sign with a key from a real CA.

`python -m vdit.provenance keygen DIR` runs `write_chain`. Imports `cryptography` (which c2pa-python
depends on too); vdit.media.c2pa_manifest owns the C2PA SDK itself.
"""
import datetime
import os

from vdit.core.errors import UserError

KEY, CHAIN = "key.pem", "chain.pem"
VALID_DAYS = 365
_ORGANIZATION = "vdit local development (untrusted)"


class ChainExistsError(UserError):
  """key.pem or chain.pem is already there; the message names the file and the fix."""


def _name(common_name):
  from cryptography import x509
  from cryptography.x509.oid import NameOID
  return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION)])


def _usage(sign_certs):
  from cryptography import x509
  return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=sign_certs, crl_sign=sign_certs,
                       encipher_only=False, decipher_only=False)


def make_chain(days: int = VALID_DAYS) -> tuple[bytes, bytes]:
  """(key PEM, chain PEM): the signer's private key (PKCS#8, unencrypted) and its chain, the signer
  certificate first, then the CA's, both valid from a day ago (clock skew) for `days` days."""
  from cryptography import x509
  from cryptography.hazmat.primitives import hashes, serialization
  from cryptography.hazmat.primitives.asymmetric import ec
  from cryptography.x509.oid import ExtendedKeyUsageOID
  now = datetime.datetime.now(datetime.timezone.utc)
  ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

  def certificate(subject, issuer, public_key, is_ca, extra=()):
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
               .add_extension(_usage(is_ca), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    for extension in extra:
      builder = builder.add_extension(extension, critical=False)
    return builder.sign(ca_key, hashes.SHA256())

  ca_name = _name("vdit local development CA")
  ca = certificate(ca_name, ca_name, ca_key.public_key(), True)
  signer = certificate(_name("vdit local development signer"), ca.subject, key.public_key(), False,
                       [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())])
  key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
  pem = serialization.Encoding.PEM
  return key_pem, signer.public_bytes(pem) + ca.public_bytes(pem)


def _write_tmp(path: str, data: bytes, mode: int) -> str:
  tmp = f"{path}.tmp{os.getpid()}"
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # the key is never readable by others
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
  except BaseException:
    os.remove(tmp)
    raise
  return tmp


def write_chain(directory: str, days: int = VALID_DAYS) -> tuple[str, str]:
  """Writes DIRECTORY/key.pem (mode 0600) and DIRECTORY/chain.pem of a fresh chain (make_chain),
  creating the directory if needed; returns their paths. Refuses to replace either file. Each is
  written to a temporary file and renamed into place, so neither is ever left half-written."""
  paths = os.path.join(directory, KEY), os.path.join(directory, CHAIN)
  for path in paths:
    if os.path.lexists(path):
      raise ChainExistsError(f"{path} already exists; keygen never replaces a key: sign with the files in "
                             f"{directory} as they are, or delete {paths[0]} and {paths[1]} to make a new chain.")
  os.makedirs(directory, exist_ok=True)
  key_pem, chain_pem = make_chain(days)
  tmps, placed = [], []
  try:
    for path, data, mode in ((paths[0], key_pem, 0o600), (paths[1], chain_pem, 0o644)):
      tmps.append(_write_tmp(path, data, mode))
    for tmp, path in zip(tmps, paths):
      os.replace(tmp, path)
      placed.append(path)
  except BaseException:
    for path in tmps + placed:  # a key without its chain (or the reverse) is of no use: leave neither
      if os.path.exists(path):
        os.remove(path)
    raise
  return paths
