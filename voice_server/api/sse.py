"""Server-Sent Events framing shared by the streaming routes (``text/event-stream``)."""

from __future__ import annotations

import json
from typing import Any, Final

HEARTBEAT_S: Final = 15.0  # proxies and clients drop a silent stream; a comment every 15 s keeps it open
KEEP_ALIVE: Final = b": keep-alive\n\n"
HEADERS: Final = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def event(kind: str, data: Any, event_id: str | None = None) -> bytes:
    """One event: optional ``id:``, ``event:`` and one ``data:`` line of JSON (JSON has no raw newlines)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, default=str, ensure_ascii=False)}\n\n".encode()


def retry(ms: int) -> bytes:
    """Tell ``EventSource`` how long to wait before reconnecting."""
    return f"retry: {ms}\n\n".encode()
