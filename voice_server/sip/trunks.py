"""The ``sip_trunks`` setting: which trunks and phones may call in, and which carry outbound calls.

Pure parsing, no I/O and nothing of the SIP stack: `voice_server.config` validates the setting with it at
start-up, and the SIP modules (`routing`, `calls`, `outbound`, `guard`) use the parsed `Trunk`.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from voice_server.ascii_numbers import ascii_int

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The digest algorithms `voice_server.sip.auth` implements, in the order they are offered by default
# (tests/sip/test_sip_settings.py keeps the two in step).
DIGEST_ALGORITHMS = ("SHA-256", "MD5")


class TrunkError(ValueError):
    """The ``sip_trunks`` setting is malformed; the message says where (never echoes a password)."""


@dataclass(frozen=True, slots=True)
class Trunk:
    """One configured trunk or phone allowed to call in (and to carry outbound calls).

    Attributes:
        name: For logs.
        allow: Source networks admitted; empty = any source.
        username: Digest user a caller must authenticate as (with ``password``); ``None`` = no digest.
        password: Its password (never logged or shown).
        algorithms: Digest algorithms offered, in order (``SHA-256``, ``MD5``).
        proxy: ``host:port`` outbound calls are sent to (the PBX or provider); ``None``: no outbound calls
            through this trunk.
        proxy_username: Digest user we answer the proxy's 401/407 challenges with (with ``proxy_password``):
            a PBX often admits us by our address but makes us authenticate our calls.
    """

    name: str
    allow: tuple[Network, ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    algorithms: tuple[str, ...] = DIGEST_ALGORITHMS
    proxy: str | None = None
    proxy_username: str | None = None
    proxy_password: str | None = field(default=None, repr=False)

    def admits(self, ip: str) -> bool:
        """Whether a request from ``ip`` belongs to this trunk."""
        if not self.allow:
            return True
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.allow)


def parse_trunks(text: str) -> list[Trunk]:
    """Parse the ``sip_trunks`` JSON list (empty text: no trunks).

    Example: ``[{"name": "pbx", "allow": ["192.168.1.0/24"], "username": "soma", "password": "…"}]``.

    Raises:
        TrunkError: On malformed JSON, unknown keys, bad networks or algorithms.
    """
    if not text.strip():
        return []
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrunkError(f"invalid JSON at character {exc.pos}") from None
    if not isinstance(raw, list):
        raise TrunkError("expected a JSON list of trunk objects")
    trunks: list[Trunk] = []
    for i, item in enumerate(raw):
        trunks.append(_trunk(i, item))
    return trunks


def _trunk(i: int, item: Any) -> Trunk:
    where = f"trunk {i}"
    if not isinstance(item, dict):
        raise TrunkError(f"{where}: expected an object")
    unknown = set(item) - {"name", "allow", "username", "password", "algorithms", "proxy",
                         "proxy_username", "proxy_password"}
    if unknown:
        raise TrunkError(f"{where}: unknown keys {sorted(unknown)}")
    name = str(item.get("name") or f"trunk{i}")
    try:
        allow = tuple(ipaddress.ip_network(str(n), strict=False) for n in item.get("allow") or [])
    except ValueError:
        raise TrunkError(f"{where} ({name}): 'allow' must list IP addresses or networks") from None
    username, password = item.get("username"), item.get("password")
    if (username is None) != (password is None):
        raise TrunkError(f"{where} ({name}): set both username and password, or neither")
    algorithms = tuple(str(a).upper() for a in item.get("algorithms") or DIGEST_ALGORITHMS)
    if not algorithms or not set(algorithms) <= set(DIGEST_ALGORITHMS):
        raise TrunkError(f"{where} ({name}): algorithms must be SHA-256 and/or MD5")
    if not allow and username is None:
        raise TrunkError(f"{where} ({name}): give 'allow' networks, credentials, or both")
    proxy = item.get("proxy")
    if proxy is not None:
        host, colon, port = str(proxy).rpartition(":")
        number = ascii_int(port, max_digits=5)
        if not colon or not host or number is None or not 0 < number < 65536:
            raise TrunkError(f"{where} ({name}): 'proxy' must be host:port")
    proxy_user, proxy_password = item.get("proxy_username"), item.get("proxy_password")
    if (proxy_user is None) != (proxy_password is None) or (proxy_user is not None and proxy is None):
        raise TrunkError(f"{where} ({name}): proxy_username and proxy_password go together, with a proxy")
    return Trunk(name, allow, None if username is None else str(username),
                 None if password is None else str(password), algorithms,
                 None if proxy is None else str(proxy), None if proxy_user is None else str(proxy_user),
                 None if proxy_password is None else str(proxy_password))
