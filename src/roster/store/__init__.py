"""The durable store: SQLAlchemy Core over SQLite (default) or any portable SQL database.

The names below are imported on first use (PEP 562), so that importing one submodule (say
``roster.store.engine`` for a default) does not import every verb of the store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roster.store.artifacts import ArtifactRecord
    from roster.store.company import CompanyStore, Session, open_session
    from roster.store.company_base import Principal
    from roster.store.memory import MemoryEntry
    from roster.store.messages import Message
    from roster.store.principals import IssuedToken, TokenRecord
    from roster.store.store import ApplyResult, Store
    from roster.store.tasks import Task, TransitionOption

_HOMES = {
    "ArtifactRecord": "roster.store.artifacts",
    **dict.fromkeys(("CompanyStore", "Session", "open_session"), "roster.store.company"),
    "Principal": "roster.store.company_base",
    "MemoryEntry": "roster.store.memory",
    "Message": "roster.store.messages",
    **dict.fromkeys(("IssuedToken", "TokenRecord"), "roster.store.principals"),
    **dict.fromkeys(("ApplyResult", "Store"), "roster.store.store"),
    **dict.fromkeys(("Task", "TransitionOption"), "roster.store.tasks"),
}


def __getattr__(name: str) -> Any:
    """The public names above, each imported from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'roster.store' has no attribute '{name}'")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = ["ApplyResult", "ArtifactRecord", "CompanyStore", "IssuedToken", "MemoryEntry", "Message", "Principal",
           "Session", "Store", "Task", "TokenRecord", "TransitionOption", "open_session"]
