"""Numbers written by other programs (SIP, SDP, RTP ports, settings) read as ASCII digits only.

Why not ``int()`` alone: ``str.isdigit()`` is true for ``²`` (which ``int()`` then refuses with a
``ValueError`` far from the check) and ``int()`` accepts Arabic-Indic and other scripts' digits, none of which
the wire formats allow (RFC 3261 §25.1 DIGIT is ASCII; SDP likewise). Bounding the digit count also keeps
``int()`` far from the interpreter's length limit.
"""

from __future__ import annotations


def ascii_int(text: str, *, max_digits: int) -> int | None:
    """``text`` as a number when it is 1 to ``max_digits`` ASCII digits, else ``None``."""
    if not 0 < len(text) <= max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)
