"""Structured logging with secret redaction.

All records go through one handler on the root logger (uvicorn's loggers propagate to it), rendered as JSON
lines or as readable text. A filter scrubs bearer tokens, Soma API tokens, passwords and ``token=`` query
parameters from every message and argument before anything is written, so a secret that slips into a log
call or an access-log line never reaches disk; it also keeps user content out (query strings, share-link
tokens and WebSocket frame dumps).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from voice_server.config import LogFormat, LogLevel

_REDACTED = "[REDACTED]"
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + _REDACTED),
    (re.compile(r"soma_[A-Za-z0-9_-]{16,}"), _REDACTED),
    (
        re.compile(r"(?i)((?:password|passwd|secret|token|api_key|access_token)[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"),
        r"\1" + _REDACTED,
    ),
)
# Attributes every LogRecord has; anything else was passed via ``extra=`` and is emitted as a field.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "color_message"}


def redact(text: str) -> str:
    """Return ``text`` with anything that looks like a credential replaced by ``[REDACTED]``."""
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


_SHARED_LINK = re.compile(r"/v1/shared/[^/?\s\"]+")
# websockets logs every frame at DEBUG as "< %s"/"> %s" (the payload: conversation text in Realtime events).
_FRAME_DUMPS = frozenset({"< %s", "> %s"})


def _private_access_line(record: logging.LogRecord) -> None:
    """uvicorn's access line without the query string (file names, search text) or a share-link token."""
    args = record.args
    if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
        path = _SHARED_LINK.sub("/v1/shared/[REDACTED]", args[2].split("?", 1)[0])
        record.args = (args[0], args[1], path, args[3], args[4])


class RedactingFilter(logging.Filter):
    """Renders the message once, redacts it, and drops the args so no formatter re-inserts a secret. User
    content is kept out too: access lines lose their query strings and share tokens, WebSocket frame dumps
    are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _FRAME_DUMPS:
            return False
        if record.name == "uvicorn.access":
            _private_access_line(record)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, ``exc`` and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS:
                payload[key] = value if isinstance(value, str | int | float | bool | None) else repr(value)
        if record.exc_info:
            payload["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level logger: message key=value …`` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD_ATTRS]
        if extras:
            line = f"{line} {' '.join(extras)}"
        return redact(line)


def configure_logging(level: LogLevel = "info", fmt: LogFormat = "auto") -> None:
    """Install the single redacting handler on the root logger (idempotent: replaces earlier handlers).

    Call once at process start, before uvicorn runs (pass ``log_config=None`` to uvicorn so it keeps these).
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    # Chatty third-party loggers that would log at INFO on every connection.
    for name in ("pgserver", "psycopg.pool", "aioice", "aiortc"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
