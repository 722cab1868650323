"""A throwaway C2PA signing chain for tests: an ES256 CA and an end-entity certificate with the
extensions C2PA validators require (not a CA, digitalSignature key usage, an email-protection
extended key usage, key identifiers)."""
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name):
  return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vdit tests")])


def _usage(sign_certs):
  return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=sign_certs, crl_sign=sign_certs,
                       encipher_only=False, decipher_only=False)


def write_chain(directory) -> tuple[str, str]:
  """Writes key.pem (the signer's private key) and chain.pem (signer certificate, then the CA);
  returns their paths."""
  now = datetime.datetime.now(datetime.timezone.utc)
  ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

  def certificate(subject, issuer, public_key, is_ca, extra=()):
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
               .add_extension(_usage(is_ca), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    for extension in extra:
      builder = builder.add_extension(extension, critical=False)
    return builder.sign(ca_key, hashes.SHA256())

  ca = certificate(_name("vdit test CA"), _name("vdit test CA"), ca_key.public_key(), True)
  signer = certificate(_name("vdit test signer"), ca.subject, key.public_key(), False,
                       [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())])
  key_path, chain_path = f"{directory}/key.pem", f"{directory}/chain.pem"
  with open(key_path, "wb") as f:
    f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
  with open(chain_path, "wb") as f:
    f.write(signer.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
  return key_path, chain_path
