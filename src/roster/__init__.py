"""Roster: the workplace where a team of AI agents and humans do real work together.

The public API: load a spec, open a store, and work a company's tasks under contract.

    from roster import Store, load_spec
    store = Store.open("sqlite:///.roster/roster.db", artifact_root=Path(".roster/artifacts"))
    store.apply(load_spec("roster.yaml"), applied_by="alice")
    company = store.company("acme")
    task, created = company.create_task(workflow="fix-lint", title="E501", actor="alice", fields={"rule": "E501"})
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roster.errors import (
        ApplyRefused,
        AuditChainBroken,
        ContractViolation,
        InvalidFields,
        NotFound,
        PayloadTooLarge,
        RosterError,
        SpecError,
        SpecIssue,
        StaleVersion,
        StoreBusy,
        UsageError,
    )
    from roster.kernel.spec import CompanySpec
    from roster.specfile import load_spec, parse_spec
    from roster.store import ApplyResult, ArtifactRecord, CompanyStore, Store, Task, TransitionOption

_HOMES = {
    **dict.fromkeys(("ApplyRefused", "AuditChainBroken", "ContractViolation", "InvalidFields", "NotFound",
                     "PayloadTooLarge", "RosterError", "SpecError", "SpecIssue", "StaleVersion", "StoreBusy",
                     "UsageError"), "roster.errors"),
    "CompanySpec": "roster.kernel.spec",
    **dict.fromkeys(("load_spec", "parse_spec"), "roster.specfile"),
    **dict.fromkeys(("ApplyResult", "ArtifactRecord", "CompanyStore", "Store", "Task", "TransitionOption"),
                    "roster.store"),
}


def __getattr__(name: str) -> Any:
    """The public API, imported on first use (PEP 562): a worker process that imports one small module
    of the package (``python -m roster.agency.workers``) does not pay for the store's imports (~1 s)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'roster' has no attribute '{name}'")
    return getattr(importlib.import_module(home), name)


__version__ = "0.1.0"

__all__ = [
    "ApplyRefused",
    "ApplyResult",
    "ArtifactRecord",
    "AuditChainBroken",
    "CompanySpec",
    "CompanyStore",
    "ContractViolation",
    "InvalidFields",
    "NotFound",
    "PayloadTooLarge",
    "RosterError",
    "SpecError",
    "SpecIssue",
    "StaleVersion",
    "Store",
    "StoreBusy",
    "Task",
    "TransitionOption",
    "UsageError",
    "load_spec",
    "parse_spec",
]
