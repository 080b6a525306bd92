"""``/v1/persona``: what the avatar learned about how the caller writes, their edits, and a rebuild.

``GET /v1/persona`` → ``{"status": "empty"|"building"|"ready", "built_at", "sources": {"messages",
"imports"}, "profile": {"style", "interests", "people", "places", "self_description"}, "edits", "prompt"}``
(``prompt``: the system prompt in use, edits applied). ``PATCH /v1/persona`` with any of the edit keys
(``null`` removes that edit) answers the same object; ``POST /v1/persona/rebuild`` queues a build (``202``).
A finished import rebuilds it by itself. Scope ``persona``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from voice_server.accounts import Principal
from voice_server.api.deps import ResourcesDep, require_scope
from voice_server.avatar.persona.service import PersonaBusyError, PersonaService
from voice_server.errors import ApiError

router = APIRouter(prefix="/v1/persona", tags=["persona"])
PersonaUser = Annotated[Principal, Depends(require_scope("persona"))]


def _utf8(value: str) -> str:
    """JSON may carry lone surrogates ("\\ud800"), which no UTF-8 text (a prompt, a response) can hold."""
    value.encode()  # UnicodeEncodeError is a ValueError: a 400 like any other invalid field
    return value


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60), AfterValidator(_utf8)]
Description = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), AfterValidator(_utf8)
]
Notes = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300), AfterValidator(_utf8)]
Instructions = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), AfterValidator(_utf8)
]


class PersonaEdits(BaseModel):
    """Changes to the persona: only the keys given change; ``null`` removes that edit. The lengths bound
    how much the user's own text can add to the cached system prompt."""

    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    self_description: Description | None = None
    style_notes: Notes | None = None
    instructions: Instructions | None = None


def persona_service(res: ResourcesDep) -> PersonaService:
    """The server's persona service."""
    return res.persona


PersonaDep = Annotated[PersonaService, Depends(persona_service)]


@router.get("", summary="The caller's persona: style profile, interests, people, places, edits and prompt")
async def get_persona(user: PersonaUser, persona: PersonaDep) -> dict[str, Any]:
    return await persona.get(user.user_id, user.username)


@router.patch("", summary="Edit the persona (name, self-description, style notes, instructions)")
async def edit_persona(body: PersonaEdits, user: PersonaUser, persona: PersonaDep) -> dict[str, Any]:
    """Only the fields sent change; ``null`` removes an edit. Unknown fields are a 422."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    return await persona.edit(user.user_id, user.username, changes)


@router.post("/rebuild", status_code=202, summary="Build the persona again from the caller's messages")
async def rebuild_persona(user: PersonaUser, persona: PersonaDep) -> dict[str, str]:
    """``429`` when too many builds are waiting."""
    try:
        await persona.rebuild(user.user_id)
    except PersonaBusyError as exc:
        raise ApiError(429, "persona_busy", str(exc)) from None
    return {"status": "building"}
