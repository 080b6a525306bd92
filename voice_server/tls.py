"""Self-signed TLS certificate for the default HTTPS listener.

Browsers only grant microphone access (``getUserMedia``) to secure origins, so Soma serves HTTPS by default
even on a LAN. The first start writes a certificate for ``localhost`` (and the loopback and configured
addresses) into ``<data_dir>/tls``; later starts reuse it until it is within 30 days of expiry.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)

_VALIDITY = dt.timedelta(days=825)  # the longest lifetime Apple platforms accept for a TLS server cert
_RENEW_BEFORE = dt.timedelta(days=30)


def ensure_self_signed_cert(tls_dir: Path, host: str) -> tuple[Path, Path]:
    """Return ``(cert_path, key_path)``, creating or renewing the self-signed pair when needed.

    Args:
        tls_dir: Directory to keep ``cert.pem`` and ``key.pem`` in (created with mode 0700).
        host: The listen address; added to the subject alternative names when it is a concrete address.
    """
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
    if cert_path.exists() and key_path.exists() and not _expiring(cert_path):
        return cert_path, key_path

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(socket.gethostname())]
    addresses = {"127.0.0.1", "::1"}
    if host not in ("0.0.0.0", "::", "localhost"):
        addresses.add(host)
    for addr in sorted(addresses):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(addr)))
        except ValueError:
            names.append(x509.DNSName(addr))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Soma (self-signed)")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Write the key with restrictive permissions from the start, not chmod after the fact.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("generated a self-signed TLS certificate", extra={"cert": str(cert_path)})
    return cert_path, key_path


def _expiring(cert_path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return True
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < _RENEW_BEFORE
