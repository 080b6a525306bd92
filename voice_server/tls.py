"""TLS for the HTTPS listener: the self-signed certificate, the hardened server context, the fingerprint.

Browsers only grant microphone access (``getUserMedia``) to secure origins, so Soma serves HTTPS by default
even on a LAN. The first start writes a certificate for ``localhost`` (and the loopback and configured
addresses) into ``<data_dir>/tls``; later starts reuse it until it is within 30 days of expiry. A real
certificate comes from ``SOMA_TLS_CERT``/``SOMA_TLS_KEY``; either way the listener speaks TLS 1.2+ only, with
forward-secret AEAD cipher suites (`harden`), and the certificate's SHA-256 fingerprint is logged at start so
a phone user can check the self-signed certificate they are asked to trust.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)

_VALIDITY = dt.timedelta(days=825)  # the longest lifetime Apple platforms accept for a TLS server cert
_RENEW_BEFORE = dt.timedelta(days=30)
# TLS 1.2 suites: ECDHE key exchange (forward secrecy) with an AEAD cipher only — no CBC (Lucky13/POODLE
# family), no RSA key transport, no SHA-1 MACs. TLS 1.3's suites are all AEAD and set separately by OpenSSL.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2


class CertificateError(ValueError):
    """The configured certificate or key cannot be used; the message names the file and the reason."""


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


def harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Restrict a server context to TLS 1.2+ with `TLS12_CIPHERS`; returns the same context.

    OpenSSL 3 still negotiates TLS 1.0/1.1 when a client offers them and the security level allows, and
    uvicorn has no minimum-version option, so the floor is set here explicitly.
    """
    ctx.minimum_version = MIN_TLS_VERSION
    ctx.set_ciphers(TLS12_CIPHERS)
    # Compression enables CRIME; client-initiated renegotiation is a CPU-exhaustion lever and unused by HTTP/1.1.
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    return ctx


def uvicorn_context_factory(_config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """``uvicorn.Config(ssl_context_factory=…)``: uvicorn's own context (certificate, ALPN), hardened.

    Building on uvicorn's default keeps whatever it configures for its HTTP protocol (ALPN) in step with it.
    """
    return harden(default())


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A hardened server context for ``cert_path``/``key_path`` — call before listening to fail early.

    Raises:
        CertificateError: A file is missing or unreadable, not PEM, or the key does not match the certificate.
    """
    ctx = harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    try:
        ctx.load_cert_chain(cert_path, key_path)
    except FileNotFoundError as exc:
        raise CertificateError(f"TLS certificate or key not found: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        # The reason only: OpenSSL's message never contains key material, but keep it short.
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise CertificateError(f"cannot use TLS certificate {cert_path} with key {key_path} ({reason})") from None
    return ctx


def certificate_fingerprint(cert_path: Path) -> str:
    """SHA-256 fingerprint of the (first) certificate in ``cert_path``, as ``AB:CD:…`` (what browsers show).

    Raises:
        CertificateError: The file is not a PEM certificate.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CertificateError(f"cannot read TLS certificate {cert_path} ({type(exc).__name__})") from None
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()
