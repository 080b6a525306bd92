"""A WebRTC call's session config, sent with its offer: checked before the call exists, applied as it starts.

The official ``openai`` SDK's ``client.realtime.calls.create(sdp=…, session={…})`` posts the offer as a
``multipart/form-data`` form whose ``session`` field is the JSON of a Realtime session config (the ``session``
of a ``session.update``, GA shape: ``{"type": "realtime", "output_modalities": ["text"], …}``). Soma gives it
exactly the meaning it would have as the first event on the ``oai-events`` data channel: `CallSessionConfig`
wraps it in a ``session.update`` event, validated here by the very parser the data channel uses
(`voice_server.realtime.protocol.parse_client_event`, so keys that parser ignores, ``type`` and ``model``
among them, are ignored here too), and `voice_server.webrtc.calls.CallManager` feeds that same event text to
the call's `RealtimeConnection` before any event from the data channel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from voice_server.errors import ApiError
from voice_server.realtime import protocol as p
from voice_server.realtime.connection import MEDIA_RATE

# The longest instructions the parser accepts (`protocol.MAX_INSTRUCTIONS_CHARS`, 32,000 characters) fit even
# when every character is sent as a 6-byte ``\uXXXX`` escape (Python's json.dumps default; the SDK sends UTF-8,
# at most 4 bytes a character), with room for the rest of the config. Anything larger is not a session config.
MAX_SESSION_BYTES: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class CallSessionConfig:
    """A call's validated session config.

    Attributes:
        event: The ``session.update`` event text to apply, as a client would have sent it.
        settings: The session settings it sets on a new call (what the parser made of it).
    """

    event: str
    settings: p.SessionSettings

    @classmethod
    def parse(cls, text: str) -> CallSessionConfig:
        """Validate the ``session`` form field (JSON text, at most `MAX_SESSION_BYTES` bytes: the caller bounds
        the read) with the data channel's own rules for ``session.update``.

        Raises:
            ApiError: 400 ``invalid_session`` when ``text`` is not a JSON object; 400 with the `ProtocolError`'s
                code, message and param (``session.…``, which is also where the form field puts it) when the
                data channel would refuse it as a ``session.update``.
        """
        try:
            session = json.loads(text)
        except RecursionError:
            raise ApiError(400, "invalid_session", "the session config nests too deeply", param="session") from None
        except ValueError:  # JSONDecodeError, and Python's limit on digits in an integer
            raise ApiError(400, "invalid_session", "the session config is not valid JSON",
                           param="session") from None
        if not isinstance(session, dict):
            raise ApiError(400, "invalid_session", "the session config must be a JSON object", param="session")
        try:
            # Re-encoded rather than spliced as text: the parsed object is the whole field, so nothing in it can
            # add keys beside "session" or change the event's type. ASCII escapes keep a lone surrogate visible
            # to the parser, which refuses it.
            event = json.dumps({"type": "session.update", "session": session})
        except RecursionError:
            raise ApiError(400, "invalid_session", "the session config nests too deeply", param="session") from None
        # A call's connection starts with the settings of every WebRTC connection (input at the track's rate).
        initial = p.SessionSettings(input_rate=MEDIA_RATE)
        try:
            parsed = p.parse_client_event(event, initial)
        except p.ProtocolError as exc:
            raise ApiError(400, exc.code, exc.message, param=exc.param) from None
        assert isinstance(parsed, p.SessionUpdate)  # the event was built as one
        return cls(event, parsed.settings)
