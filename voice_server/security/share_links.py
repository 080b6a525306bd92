"""Share links: signed, expiring, revocable capabilities to read one resource without an account.

A token is ``shr_`` + base64url(link id ‖ expiry ‖ HMAC-SHA256 truncated to 128 bits), signed with a key only
the server holds (derived from its stored server key, see `Keyring.share_key`). A forged or altered token is
refused without touching the database; a genuine one is then checked against its ``share_links`` row, so
revoking (or erasing the owner) ends it at once, and it stops working at its expiry either way.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import struct
import time
import uuid
from typing import Final

PREFIX: Final = "shr_"
_BODY = struct.Struct(">16sQ")
_SIG_LEN: Final = 16


def make_token(key: bytes, link_id: uuid.UUID, expires_at: float) -> str:
    """The token for link ``link_id`` expiring at Unix time ``expires_at``."""
    body = _BODY.pack(link_id.bytes, int(expires_at))
    sig = hmac.digest(key, b"soma/share/v1|" + body, "sha256")[:_SIG_LEN]
    return PREFIX + base64.urlsafe_b64encode(body + sig).decode().rstrip("=")


def check_token(key: bytes, token: str, now: float | None = None) -> uuid.UUID | None:
    """The link id of a genuine, unexpired token; ``None`` for anything else (forged, altered, expired,
    malformed). Constant-time signature check."""
    if not token.startswith(PREFIX) or len(token) > 64:
        return None
    raw = token[len(PREFIX) :]
    try:
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(data) != _BODY.size + _SIG_LEN:
        return None
    body, sig = data[: _BODY.size], data[_BODY.size :]
    if not hmac.compare_digest(hmac.digest(key, b"soma/share/v1|" + body, "sha256")[:_SIG_LEN], sig):
        return None
    link, expires = _BODY.unpack(body)
    if expires <= (time.time() if now is None else now):
        return None
    return uuid.UUID(bytes=link)
