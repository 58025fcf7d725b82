"""Cursor pagination, one way for every list: a page asks the store for one item more than it shows, so
``next_cursor`` is ``null`` exactly on the last page; a cursor is an opaque string the API handed out."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from roster.errors import UsageError

MAX_PAGE = 500


def cursor_id(value: str | None) -> int:
    """A numeric cursor (an id or a seq) as handed out, ``0`` when absent. Raises :class:`UsageError` (400)
    for anything else (ASCII digits only: ``str.isdigit`` accepts superscripts that ``int`` refuses)."""
    if value is None or value == "":
        return 0
    if not re.fullmatch(r"[0-9]{1,15}", value):
        raise UsageError(f"cursor {value!r} is not one this API handed out")
    return int(value)


def page(found: Sequence[Any], limit: int, cursor_of: Callable[[Any], Any]) -> dict[str, Any]:
    """``{"items", "next_cursor"}`` from ``found`` (fetched with ``limit + 1``)."""
    items = list(found[:limit])
    return {"items": items, "next_cursor": str(cursor_of(items[-1])) if len(found) > limit else None}
