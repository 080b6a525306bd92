"""How a feature hands one table of a user's rows to the privacy export (`voice_server.privacy.export`).

The feature that owns a table says how to read one user's rows back for their owner — the query, in a stable
order, and how to open each row's sealed values — by returning a `UserRows` from a function in its own module.
The export streams the rows through a server-side cursor a batch at a time and decides the archive's layout;
no feature imports the export.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


def as_stored(row: dict[str, Any]) -> dict[str, Any]:
    """A row of a table with nothing sealed: exported as it is stored."""
    return row


@dataclass(frozen=True, slots=True)
class UserRows:
    """One table's rows of one user, as the export reads them.

    Attributes:
        sql: Selects the user's rows, in the order they are written to the archive.
        params: The query's parameters (the user's id).
        opened: A row as its owner sees it: sealed values opened, nothing else changed (`as_stored` when
            nothing in the table is sealed); a coroutine function where opening needs the database.
    """

    sql: str
    params: tuple[Any, ...]
    opened: Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]] = as_stored
