"""Test certificates made with `cryptography`: CAs, intermediates, server and client certificates written as
PEM files (shared by test_tls.py and test_model_access.py)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"


@dataclass
class Issued:
    """A certificate and its key, in memory and as PEM files."""

    cert: x509.Certificate
    key: object
    crt: Path
    key_path: Path

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def serial(self) -> int:
        return self.cert.serial_number


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _new_key(kind: str):
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(kind)


def _key_pem(key, fmt: str) -> bytes:
    """fmt: pkcs8 ("BEGIN PRIVATE KEY") or traditional (RSA: PKCS#1 "BEGIN RSA PRIVATE KEY"; EC: SEC1
    "BEGIN EC PRIVATE KEY")."""
    private_format = {"pkcs8": serialization.PrivateFormat.PKCS8, "traditional": serialization.PrivateFormat.TraditionalOpenSSL}[fmt]
    return key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption())


def issue(
    directory: Path,
    stem: str,
    cn: str,
    issuer: Issued | None = None,
    *,
    role: str,
    key_kind: str = "ec",
    key_format: str = "pkcs8",
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    chain: tuple[Issued, ...] = (),
    sans: list | None = None,
) -> Issued:
    """Make a certificate. role: "ca" (self-signed when issuer is None, else an intermediate), "server"
    (SAN DNS:localhost, IP:127.0.0.1, EKU serverAuth) or "client" (EKU clientAuth; subject-alternative names
    `sans`, by default DNS:<stem>.client.rampart.test, none when `sans` is empty). The .crt file holds the
    certificate followed by `chain` (intermediates), the .key file the key in `key_format`."""
    key = _new_key(key_kind)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Rampart tests"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer_key = issuer.key if issuer is not None else key
    issuer_name = issuer.cert.subject if issuer is not None else subject
    nb = not_before or (now() - datetime.timedelta(hours=1))
    na = not_after or (now() + datetime.timedelta(days=30))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), critical=False
        )
    )
    if role == "ca":
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True).add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=(key_kind == "rsa"),
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        if role == "server":
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        elif role == "client":
            names = [x509.DNSName(f"{stem}.client.rampart.test")] if sans is None else list(sans)
            if names:
                builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        else:
            raise ValueError(role)
    cert = builder.sign(signer_key, hashes.SHA256())
    crt, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    crt.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, *(i.cert for i in chain))))
    key_path.write_bytes(_key_pem(key, key_format))
    return Issued(cert, key, crt, key_path)
