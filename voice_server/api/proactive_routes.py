"""The bond, proactive settings, milestones and the avatar's own messages.

- ``GET/DELETE /v1/bond`` (scope ``proactive``): the bond as it stands now; reset to the starting state.
- ``GET/PUT /v1/proactive/settings``, ``GET/POST /v1/milestones``, ``DELETE /v1/milestones/{id}`` (scope
  ``proactive``): when and how the avatar reaches out. A change wakes the scheduler.
- ``GET /v1/notifications``, ``POST /v1/notifications/{id}/read``, ``GET /v1/events`` (scope ``events``):
  the messages, stored so nothing is missed offline. ``/v1/events`` is Server-Sent Events: on connect the
  unread ones (or those after ``Last-Event-ID``), then new ones live, each ``id: <uuid>``, ``event:
  notification``, ``data: <notification>``; a ``: keep-alive`` comment every 15 s. A client that stops
  reading is disconnected (and replayed on reconnect), never waited for.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date, time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from voice_server.accounts import Principal
from voice_server.api import sse
from voice_server.api.deps import ProactiveDep, ResourcesDep, require_scope
from voice_server.avatar.bond.service import BondService
from voice_server.avatar.proactive.rules import Kind, MilestoneKind, Preferences, SettingsError, zone_of
from voice_server.avatar.proactive.settings_store import (
    create_milestone,
    delete_milestone,
    list_milestones,
    load_preferences,
    public_settings,
    save_preferences,
)
from voice_server.errors import ApiError, not_found
from voice_server.resources import Resources

router = APIRouter(prefix="/v1", tags=["proactive"])
Reader = Annotated[Principal, Depends(require_scope("proactive:read"))]
Writer = Annotated[Principal, Depends(require_scope("proactive:write"))]
Listener = Annotated[Principal, Depends(require_scope("events"))]
HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
RETRY_MS = 5000


def _bond(res: Resources) -> BondService:
    if res.bond is None:
        raise ApiError(503, "bond_unavailable", "the bond service is not running")
    return res.bond


# ------------------------------------------------------------------------------------------------- bond


@router.get("/bond", summary="The emotional bond as it stands now")
async def get_bond(user: Reader, res: ResourcesDep) -> dict[str, Any]:
    """``{"affinity", "trust", "streak_days", "last_contact", "mood": {"label", "score"} | null, "tone",
    "reach_out"}`` — values decayed to now."""
    return await _bond(res).public(user.user_id)


@router.delete("/bond", status_code=204, summary="Reset the bond to its starting state")
async def reset_bond(user: Writer, res: ResourcesDep) -> Response:
    await _bond(res).reset(user.user_id)
    return Response(status_code=204)


# --------------------------------------------------------------------------------------------- settings


class QuietHours(BaseModel):
    """Nothing is delivered from ``start`` to ``end`` (local time; equal times: no quiet hours)."""

    model_config = ConfigDict(extra="forbid")
    start: str = Field(pattern=HHMM, examples=["22:00"])
    end: str = Field(pattern=HHMM, examples=["07:00"])


class SettingsUpdate(BaseModel):
    """Any subset of the settings; omitted ones keep their value, ``birthday: null`` removes it."""

    model_config = ConfigDict(extra="forbid")
    timezone: str | None = Field(default=None, min_length=1, max_length=64, examples=["Europe/Lisbon"])
    morning_time: str | None = Field(default=None, pattern=HHMM, examples=["08:00"])
    quiet_hours: QuietHours | None = None
    checkin_after_days: int | None = Field(default=None, ge=1, le=365)
    disabled_kinds: list[Kind] | None = Field(default=None, max_length=4)
    birthday: date | None = None


def _time(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def _apply(prefs: Preferences, body: SettingsUpdate) -> Preferences:
    """``prefs`` with ``body`` applied. Raises ApiError 400 for an unknown timezone or a future birthday."""
    timezone = prefs.timezone
    if body.timezone is not None:
        try:
            zone_of(body.timezone)
        except SettingsError as exc:
            raise ApiError(400, "invalid_timezone", str(exc), param="timezone") from None
        timezone = body.timezone
    birthday = body.birthday if "birthday" in body.model_fields_set else prefs.birthday
    if birthday is not None and not date(1900, 1, 1) <= birthday <= date.today():
        raise ApiError(400, "invalid_birthday", "birthday: a date between 1900-01-01 and today", param="birthday")
    quiet = body.quiet_hours
    return Preferences(
        timezone=timezone,
        morning_time=_time(body.morning_time) if body.morning_time else prefs.morning_time,
        quiet_start=_time(quiet.start) if quiet else prefs.quiet_start,
        quiet_end=_time(quiet.end) if quiet else prefs.quiet_end,
        checkin_after_days=body.checkin_after_days or prefs.checkin_after_days,
        disabled_kinds=frozenset(body.disabled_kinds) if body.disabled_kinds is not None else prefs.disabled_kinds,
        birthday=birthday,
    )


@router.get("/proactive/settings", summary="When and how the avatar reaches out")
async def get_settings(user: Reader, res: ResourcesDep) -> dict[str, Any]:
    async with res.db.pool.connection() as conn:
        return public_settings(await load_preferences(conn, await res.keys.for_user(conn, user.user_id)))


@router.put("/proactive/settings", summary="Change when and how the avatar reaches out")
async def put_settings(
    body: SettingsUpdate, user: Writer, res: ResourcesDep, service: ProactiveDep
) -> dict[str, Any]:
    """``400 invalid_timezone`` unless ``timezone`` is an IANA name (``Europe/Lisbon``, ``UTC``)."""
    async with res.db.pool.connection() as conn, conn.transaction():
        key = await res.keys.for_user(conn, user.user_id)
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 1))", (str(user.user_id),))
        prefs = _apply(await load_preferences(conn, key), body)
        await save_preferences(conn, key, prefs)
    service.wake()
    return public_settings(prefs)


# ------------------------------------------------------------------------------------------- milestones


class MilestoneCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200, examples=["Our wedding anniversary"])
    date: date
    kind: MilestoneKind


@router.get("/milestones", summary="The caller's birthdays and anniversaries")
async def get_milestones(user: Reader, res: ResourcesDep) -> dict[str, Any]:
    async with res.db.pool.connection() as conn:
        rows = await list_milestones(conn, await res.keys.for_user(conn, user.user_id))
    return {"object": "list", "data": rows}


@router.post("/milestones", status_code=201, summary="Add a birthday or anniversary")
async def post_milestone(
    body: MilestoneCreate, user: Writer, res: ResourcesDep, service: ProactiveDep
) -> dict[str, Any]:
    """It is celebrated on its month and day every year after its own (29 February: the 28th in other years)."""
    if not date(1900, 1, 1) <= body.date <= date(2200, 12, 31):
        raise ApiError(400, "invalid_date", "date: between 1900-01-01 and 2200-12-31", param="date")
    if not body.title.strip():
        raise ApiError(400, "invalid_title", "title: not blank", param="title")
    async with res.db.pool.connection() as conn:
        try:
            created = await create_milestone(
                conn, await res.keys.for_user(conn, user.user_id), body.title.strip(), body.date, body.kind
            )
        except OverflowError as exc:
            raise ApiError(409, "too_many_milestones", str(exc)) from None
    service.wake()
    return created


@router.delete("/milestones/{milestone_id}", status_code=204, summary="Remove a milestone")
async def remove_milestone(milestone_id: uuid.UUID, user: Writer, res: ResourcesDep) -> Response:
    async with res.db.pool.connection() as conn:
        if not await delete_milestone(conn, user.user_id, milestone_id):
            raise not_found("milestone")
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------- notifications


@router.get("/notifications", summary="The avatar's messages to the caller, newest first")
async def get_notifications(
    user: Listener,
    service: ProactiveDep,
    unread: Annotated[bool, Query(description="only those not marked read")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    return {"object": "list", "data": await service.store.page(user.user_id, unread=unread, limit=limit)}


@router.post("/notifications/{notification_id}/read", status_code=204, summary="Mark a message read")
async def read_notification(notification_id: uuid.UUID, user: Listener, service: ProactiveDep) -> Response:
    if not await service.store.mark_read(user.user_id, notification_id, service.clock()):
        raise not_found("notification")
    return Response(status_code=204)


@router.get("/events", summary="The avatar's messages, live (Server-Sent Events)", response_class=StreamingResponse)
async def events(
    user: Listener,
    service: ProactiveDep,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=64, description="resume after this notification")
    ] = None,
) -> StreamingResponse:
    """Replays what the caller has not seen, then streams new messages; ``400 invalid_last_event_id`` when
    ``Last-Event-ID`` is not a notification id."""
    after: uuid.UUID | None = None
    if last_event_id:
        try:
            after = uuid.UUID(last_event_id.strip())
        except ValueError:
            raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be a notification id") from None
    # Subscribed before the replay is read, so nothing committed in between is missed (duplicates are skipped).
    subscription = service.hub.subscribe(user.user_id)
    try:
        replay = await service.store.replay(user.user_id, after)
    except BaseException:
        subscription.close()
        raise

    async def stream() -> AsyncIterator[bytes]:
        replayed = {item["id"] for item in replay}  # live ones arrive once each: only these can repeat
        with subscription:
            yield sse.retry(RETRY_MS)
            for item in replay:
                yield sse.event("notification", item, item["id"])
            await service.store.mark_delivered(user.user_id, [n["id"] for n in replay], service.clock())
            while True:
                try:
                    async with asyncio.timeout(sse.HEARTBEAT_S):
                        item_or_end = await subscription.get()
                except TimeoutError:
                    yield sse.KEEP_ALIVE
                    continue
                if item_or_end is None:
                    return  # dropped (too slow, or the server is stopping): the client reconnects and replays
                if item_or_end["id"] in replayed:
                    continue
                yield sse.event("notification", item_or_end, item_or_end["id"])
                await service.store.mark_delivered(user.user_id, [item_or_end["id"]], service.clock())

    return StreamingResponse(stream(), media_type="text/event-stream", headers=sse.HEADERS)
