"""SIP digest authentication (RFC 3261 §22, RFC 2617, RFC 8760 SHA-256), both sides, no I/O.

Server side: `DigestServer.challenge` builds a ``WWW-Authenticate`` value per algorithm with a stateless nonce
(a timestamp and its HMAC under a per-process key, so no table of outstanding nonces can be flooded), and
`DigestServer.verify` checks an ``Authorization`` value. Client side: `client_authorization` answers a challenge
(used by outbound calls and the test UAC). Passwords never appear in return values or exceptions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from enum import Enum

from voice_server.sip.message import parse_params

ALGORITHMS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
NONCE_TTL_S = 300.0


class Verdict(Enum):
    """The outcome of checking credentials."""

    OK = "ok"
    MISSING = "missing"  # no credentials for our realm: challenge
    STALE = "stale"  # right password, expired nonce: challenge again with stale=true
    BAD = "bad"  # wrong user, password or malformed: 403


def _h(algorithm: str, text: str) -> str:
    return ALGORITHMS[algorithm](text.encode()).hexdigest()


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """``Digest a="b", c=d`` → ``("digest", {"a": "b", "c": "d"})`` (commas inside quotes kept)."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    for key, val in parse_params(_commas_to_semicolons(rest)).items():
        params[key] = val or ""
    return scheme.lower(), params


def _commas_to_semicolons(text: str) -> str:
    out, quoted = [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        out.append(";" if ch == "," and not quoted else ch)
    return "".join(out)


def digest_response(
    algorithm: str, username: str, realm: str, password: str, method: str, uri: str, nonce: str,
    qop: str | None = None, nc: str = "", cnonce: str = "",
) -> str:
    """The ``response`` value of RFC 2617 §3.2.2.1 (qop ``auth`` or none)."""
    ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{ha2}")


class DigestServer:
    """Challenges and verifies one realm.

    Args:
        realm: The realm shown to callers (e.g. ``soma``).
        algorithms: Offered in this order (RFC 8760: SHA-256 first, MD5 for older phones).
        clock: Wall-clock seconds (injected for tests).
    """

    def __init__(self, realm: str, algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
                 clock: Callable[[], float] = time.time) -> None:
        self.realm = realm
        self.algorithms = algorithms
        self._key = secrets.token_bytes(32)
        self._clock = clock

    def _nonce(self, issued: int) -> str:
        mac = hmac.new(self._key, str(issued).encode(), hashlib.sha256).hexdigest()[:32]
        return f"{issued:x}.{mac}"

    def challenge(self, *, stale: bool = False) -> list[str]:
        """One ``WWW-Authenticate`` value per algorithm."""
        nonce = self._nonce(int(self._clock()))
        extra = ", stale=true" if stale else ""
        return [f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={alg}, qop="auth"{extra}'
                for alg in self.algorithms]

    def verify(self, header: str | None, method: str, lookup: Callable[[str], str | None]) -> tuple[Verdict, str]:
        """Check an ``Authorization`` value.

        Args:
            lookup: Username → password, or ``None`` for an unknown user.

        Returns:
            The verdict and the username claimed (for logs; empty when absent).
        """
        if header is None:
            return Verdict.MISSING, ""
        scheme, p = parse_auth_header(header)
        user = p.get("username", "")[:64]
        if scheme != "digest" or p.get("realm") != self.realm:
            return Verdict.MISSING, user
        algorithm = (p.get("algorithm") or "MD5").upper()
        nonce, response = p.get("nonce", ""), p.get("response", "").lower()
        if algorithm not in self.algorithms or not nonce or not response or "uri" not in p:
            return Verdict.BAD, user
        issued_hex, _, _mac = nonce.partition(".")
        if len(issued_hex) > 16:  # ours are a Unix time; a huge number would only cost CPU (and int->str limits)
            return Verdict.BAD, user
        if not issued_hex.isascii():  # int() takes Unicode digits ("٣"); ours are plain hex
            return Verdict.BAD, user
        try:
            issued = int(issued_hex, 16)
        except ValueError:
            return Verdict.BAD, user
        # Bytes, not str: compare_digest raises TypeError on non-ASCII text, and header values may hold any.
        if not hmac.compare_digest(self._nonce(issued).encode(), nonce.encode()):
            return Verdict.BAD, user
        password = lookup(user)
        if password is None:
            return Verdict.BAD, user
        qop = p.get("qop") or None
        if qop not in (None, "auth"):
            return Verdict.BAD, user
        expected = digest_response(algorithm, user, self.realm, password, method, p["uri"], nonce, qop,
                                   p.get("nc", ""), p.get("cnonce", ""))
        if not hmac.compare_digest(expected.encode(), response.encode()):
            return Verdict.BAD, user
        if self._clock() - issued > NONCE_TTL_S:
            return Verdict.STALE, user
        return Verdict.OK, user


def client_authorization(challenge: str, *, username: str, password: str, method: str, uri: str) -> str:
    """An ``Authorization``/``Proxy-Authorization`` value answering one ``WWW-Authenticate`` challenge.

    Raises:
        ValueError: When the challenge is not a digest challenge with a supported algorithm.
    """
    scheme, p = parse_auth_header(challenge)
    algorithm = (p.get("algorithm") or "MD5").upper()
    if scheme != "digest" or algorithm not in ALGORITHMS or "nonce" not in p:
        raise ValueError("unsupported authentication challenge")
    realm, nonce = p.get("realm", ""), p["nonce"]
    qop = "auth" if "auth" in (p.get("qop") or "").split(",") else None
    nc, cnonce = "00000001", secrets.token_hex(8)
    response = digest_response(algorithm, username, realm, password, method, uri, nonce, qop, nc, cnonce)
    value = (f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
             f'response="{response}", algorithm={algorithm}')
    if qop:
        value += f', qop={qop}, nc={nc}, cnonce="{cnonce}"'
    return value
