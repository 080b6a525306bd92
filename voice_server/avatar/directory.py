"""Which avatars a caller may talk to, and how a request's ``model`` names one.

Each account has one avatar: the person it learns. OpenAI-style clients name it in ``model``: by the
account's username, or by the alias ``soma`` ("my avatar"), so a client configured once works for everyone.
Any other name is an unknown model (404), never someone else's avatar. The persona (system prompt) is the
user's own, built from their messages and edits (`voice_server.avatar.persona`), looked up through a per-user
cache; a user without one, or a server without a persona service, gets `DEFAULT_PERSONA`.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Protocol

from pipeline.session import DEFAULT_PERSONA
from voice_server.accounts import Principal
from voice_server.errors import ApiError

log = logging.getLogger(__name__)
MY_AVATAR = "soma"


class Personas(Protocol):
    """`voice_server.avatar.persona.service.PersonaService`'s prompt lookup."""

    async def prompt_for(self, user_id: uuid.UUID, username: str) -> str: ...


@dataclass(frozen=True, slots=True)
class Avatar:
    """An avatar as clients see it.

    Attributes:
        id: The ``model`` name that selects it.
        owner: Username of the account it belongs to.
        persona: Its system prompt.
    """

    id: str
    owner: str
    persona: str


def avatar_names(user: Principal) -> list[str]:
    """The ``model`` names of the avatars ``user`` may talk to: their username and the ``soma`` alias."""
    return [user.username, MY_AVATAR]


async def avatars_for(user: Principal, personas: Personas | None) -> list[Avatar]:
    """The avatars ``user`` may talk to: their own, under its name and under the ``soma`` alias, with the
    user's persona (the default one when it cannot be read: a call is never refused over it)."""
    persona = DEFAULT_PERSONA
    if personas is not None:
        try:
            persona = await personas.prompt_for(user.user_id, user.username)
        except Exception:
            log.exception("persona lookup failed; using the default persona")
    return [Avatar(name, user.username, persona) for name in avatar_names(user)]


async def resolve_avatar(user: Principal, model: str | None, personas: Personas | None) -> Avatar:
    """The avatar a request's ``model`` names (empty or missing means the caller's own).

    Raises:
        ApiError: 404 ``model_not_found`` for any name that is not one of the caller's avatars.
    """
    names = avatar_names(user)
    if model and model not in names:
        raise ApiError(
            404, "model_not_found", f"the model {model[:64]!r} does not exist; your avatars are: {', '.join(names)}"
        )
    choices = await avatars_for(user, personas)
    return choices[names.index(model)] if model else choices[0]
