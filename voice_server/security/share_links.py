"""Share links: signed, expiring, revocable capabilities to read one resource without an account.

A token is ``shr_`` + base64url(link id ‖ expiry ‖ HMAC-SHA256 truncated to 128 bits), signed with a key only
the server holds (derived from its stored server key, see `Keyring.share_key`). A forged or altered token is
refused without touching the database; a genuine one is then checked against its ``share_links`` row, so
revoking (or erasing the owner) ends it at once, and it stops working at its expiry either way.

Exactly one spelling of a token is accepted, the one `make_token` writes: Python's base64 decoder would also
take padding, the standard alphabet, skipped junk characters and other trailing bits for the same bytes, so a
link could be passed around (and logged, cached, compared) under many names.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import struct
import time
import uuid
from typing import Any, Final

from voice_server.security.keys import Conn

PREFIX: Final = "shr_"
_BODY = struct.Struct(">16sQ")
_SIG_LEN: Final = 16
# The canonical body: unpadded url-safe base64 of the 40 signed bytes is exactly 54 characters.
_CANONICAL: Final = re.compile(r"[A-Za-z0-9_-]{54}")


def make_token(key: bytes, link_id: uuid.UUID, expires_at: float) -> str:
    """The token for link ``link_id`` expiring at Unix time ``expires_at``."""
    body = _BODY.pack(link_id.bytes, int(expires_at))
    sig = hmac.digest(key, b"soma/share/v1|" + body, "sha256")[:_SIG_LEN]
    return PREFIX + _encode(body + sig)


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def check_token(key: bytes, token: str, now: float | None = None) -> uuid.UUID | None:
    """The link id of a genuine, unexpired token; ``None`` for anything else (forged, altered, expired,
    malformed, or another spelling of a genuine token's bytes). Constant-time signature check."""
    if not token.startswith(PREFIX) or not _CANONICAL.fullmatch(raw := token[len(PREFIX) :]):
        return None
    try:
        data = base64.urlsafe_b64decode(raw + "==")
    except (binascii.Error, ValueError):
        return None
    # 54 characters carry 324 bits for 320: re-encoding catches the 15 other last characters that decode to
    # the same bytes.
    if len(data) != _BODY.size + _SIG_LEN or _encode(data) != raw:
        return None
    body, sig = data[: _BODY.size], data[_BODY.size :]
    if not hmac.compare_digest(hmac.digest(key, b"soma/share/v1|" + body, "sha256")[:_SIG_LEN], sig):
        return None
    link, expires = _BODY.unpack(body)
    if expires <= (time.time() if now is None else now):
        return None
    return uuid.UUID(bytes=link)


async def export_links(conn: Conn, user_id: uuid.UUID) -> list[dict[str, Any]]:
    """``user_id``'s share links (their rows, never a token), for their export, oldest first."""
    cur = await conn.execute(
        "SELECT id, resource_kind, resource_id, created_at, expires_at, revoked_at FROM share_links"
        " WHERE user_id = %s ORDER BY created_at",
        (user_id,),
    )
    return await cur.fetchall()
