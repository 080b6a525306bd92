"""Which avatars a caller may talk to, and how a request's ``model`` names one.

Each account has one avatar: the person it learns. OpenAI-style clients name it in ``model``: by the
account's username, or by the alias ``soma`` ("my avatar"), so a client configured once works for everyone.
Any other name is an unknown model (404), never someone else's avatar. The persona is the default one until
the avatar issue builds it from the user's own data.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.session import DEFAULT_PERSONA
from voice_server.accounts import Principal
from voice_server.errors import ApiError

MY_AVATAR = "soma"


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


def avatars_for(user: Principal) -> list[Avatar]:
    """The avatars ``user`` may talk to: their own, under its name and under the ``soma`` alias."""
    own = Avatar(user.username, user.username, DEFAULT_PERSONA)
    return [own, Avatar(MY_AVATAR, user.username, own.persona)]


def resolve_avatar(user: Principal, model: str | None) -> Avatar:
    """The avatar a request's ``model`` names (empty or missing means the caller's own).

    Raises:
        ApiError: 404 ``model_not_found`` for any name that is not one of the caller's avatars.
    """
    choices = avatars_for(user)
    if not model:
        return choices[0]
    for avatar in choices:
        if avatar.id == model:
            return avatar
    names = ", ".join(a.id for a in choices)
    raise ApiError(404, "model_not_found", f"the model {model[:64]!r} does not exist; your avatars are: {names}")
