"""The serving application's one typed state: the resources and the services the lifespan starts over them.

Built by the app's lifespan once everything has started and held at ``app.state.soma``; `app_state` is the one
way to read it (routes use it through `voice_server.api.deps`), so no code reads loosely typed attributes off
Starlette's ``app.state``.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette

from voice_server.avatar.imports.service import ImportService
from voice_server.avatar.proactive.service import ProactiveService
from voice_server.resources import Resources
from voice_server.sip.calls import SipCallManager
from voice_server.webrtc.calls import CallManager


@dataclass(frozen=True, slots=True)
class AppState:
    """What a serving app holds, all of it started by the lifespan and stopped by it in reverse.

    Attributes:
        resources: The long-lived stores, models and metrics.
        calls: Browser (WebRTC) calls.
        sip: Phone calls, or ``None`` when SIP is off or its address could not be bound.
        imports: Chat-export and recording imports.
        proactive: The avatar's own messages and their event streams.
    """

    resources: Resources
    calls: CallManager
    sip: SipCallManager | None
    imports: ImportService
    proactive: ProactiveService


def app_state(app: Starlette) -> AppState:
    """The serving state of ``app``.

    Raises:
        RuntimeError: The app's lifespan has not started: nothing is being served.
    """
    try:
        state = app.state.soma
    except AttributeError:  # Starlette's state raises it for an attribute never set
        state = None
    if not isinstance(state, AppState):
        raise RuntimeError("the app is not serving: its lifespan has not started")
    return state
