"""The platform's certificate authority for mutual TLS between workers and ``renkei gateway``.

The platform makes one CA (``renkei keys tls-ca``) and issues each party a client certificate
and key (``renkei keys tls-issue PARTY``): the party is the certificate's subject common name and
its URI name ``renkei:party:<party>`` (the hub's is ``hub``). The gateway gets a server
certificate for the names its clients dial (``renkei keys tls-issue gateway --server-name ...``).
Keys are written with mode 0600, like the parties' key files; a certificate is public.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PARTY_URI = "renkei:party:"
CA_NAME = "renkei platform CA"
GATEWAY = "gateway"
CA_YEARS = 10
CERT_DAYS = 397


class TlsError(ValueError):
    """A CA or certificate file that cannot be used (missing, not PEM, not the right kind)."""


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ca_paths(folder: Path) -> tuple[Path, Path]:
    return folder / "ca.pem", folder / "ca.key"


def party_paths(folder: Path, party: str) -> tuple[Path, Path]:
    return folder / f"{party}.pem", folder / f"{party}.key"


def make_ca(folder: Path, now: dt.datetime | None = None) -> Path:
    """Create the CA's certificate and key in ``folder`` (never overwritten); its cert's path."""
    cert_path, key_path = ca_paths(folder)
    if cert_path.exists() or key_path.exists():
        raise TlsError(f"{cert_path} exists; a CA is never overwritten")
    at = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - dt.timedelta(minutes=5))
        .not_valid_after(at + dt.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert_path


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = ca_paths(folder)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as err:
        raise TlsError(f"no usable CA in {folder} (`renkei keys tls-ca` makes it): {err}") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{key_path} is not the CA's key")
    return cert, key


def issue(
    folder: Path,
    party: str,
    *,
    server_names: list[str] | None = None,
    out: Path | None = None,
    now: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """Issue ``party``'s certificate and key, signed by the CA in ``folder``, into ``out``
    (default: ``folder``); (cert, key) paths. With ``server_names``: a server certificate for
    those DNS names or IP addresses (the gateway's), else a client certificate naming
    ``party``."""
    ca_cert, ca_key = _load_ca(folder)
    cert_path, key_path = party_paths(out or folder, party)
    if cert_path.exists() or key_path.exists():
        raise TlsError(f"{cert_path} exists; issue into another folder or remove it first")
    at = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName]
    if server_names:
        names = []
        for n in server_names:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                names.append(x509.DNSName(n))
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        names = [x509.UniformResourceIdentifier(f"{PARTY_URI}{party}")]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - dt.timedelta(minutes=5))
        .not_valid_after(min(at + dt.timedelta(days=CERT_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert_path, key_path


def serial_of(pem: bytes) -> int | None:
    """A certificate's serial number (``None``: not a certificate)."""
    try:
        return x509.load_pem_x509_certificate(pem).serial_number
    except ValueError:
        return None


def party_of(pem: bytes) -> str | None:
    """The party a client certificate names (its ``renkei:party:`` URI), ``None`` if none or
    several. The caller has verified the certificate's chain to the CA."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    found = [
        uri.removeprefix(PARTY_URI)
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(PARTY_URI)
    ]
    return found[0] if len(found) == 1 and found[0] else None
