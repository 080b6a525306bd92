"""The one failure for stored data that does not check out, below both the crypto and the HTTP layers.

`voice_server.security.keys.DecryptionError` is one; `voice_server.errors` answers any of them with a 500
``data_integrity`` (nothing of the value returned). Defined here, importing nothing, so that the error shape does
not depend on the crypto module and the crypto module does not depend on the web framework.
"""

from __future__ import annotations


class DataIntegrityError(Exception):
    """Stored data failed its integrity check: moved, altered, or sealed for someone else."""
