"""Start and stop the SIP bridge from the app's lifespan."""

from __future__ import annotations

import logging

from voice_server.resources import Resources
from voice_server.sip.calls import SipCallManager

log = logging.getLogger(__name__)


async def start_sip(res: Resources) -> SipCallManager | None:
    """The running SIP call manager, or ``None`` when SIP is off or its address cannot be bound.

    A SIP port already in use (another Soma, a PBX on the same host) is logged as an error and the rest of the
    server keeps serving: browser calls and chat must not depend on the phone line. `SipCallManager.aclose`
    must be called at shutdown.
    """
    if res.settings.sip_address is None:
        log.info("sip: off (sip_bind is empty)")
        return None
    manager = SipCallManager(res)
    try:
        await manager.start()
    except OSError as exc:
        log.error("sip: cannot listen on %s (%s); phone calls are disabled", res.settings.sip_bind, exc.strerror)
        return None
    return manager
