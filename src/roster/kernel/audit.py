"""The audit chain's arithmetic: how an event is hashed and how a chain of events is verified.

Each event's ``hash`` is SHA-256 (hex) over the RFC 8785 (JSON Canonicalization Scheme) encoding, by the
``rfc8785`` package, of the object::

    {"seq": int, "ts": str, "company": str, "principal": str, "action": str,
     "subject": str, "data": object, "prev_hash": str, "state": [[table, key, sha256 | null], ...]}

``state`` is present only when the event names rows it produced (see :func:`named_rows`): for each,
the table, the row's key (a string) and :func:`row_hash` of the row as it stood when the event's
transaction wrote it (``null``: no such row). Events written before state hashes existed have none, and
hash as they always did.
``prev_hash`` is the previous event's ``hash``, or :data:`GENESIS_HASH` for ``seq == 1``. Changing,
deleting, inserting or reordering any event breaks the chain at that event or the one after it, and
:func:`first_break` names the first bad sequence number. The chain is per company.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import rfc8785

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first event of every company's chain."""


@dataclass(frozen=True)
class AuditEvent:
    """One event of the chain. ``ts`` is UTC in ISO 8601 with microseconds and a ``Z`` suffix."""

    seq: int
    ts: str
    company: str
    principal: str
    action: str
    subject: str
    data: Any
    prev_hash: str
    hash: str
    state: Any = None
    """``[[table, key, sha256 or None], ...]`` of the rows this event produced, or ``None``."""


def event_hash(*, seq: int, ts: str, company: str, principal: str, action: str, subject: str, data: Any,
               prev_hash: str, state: Any = None) -> str:
    """SHA-256 hex digest of the canonical JSON of an event's content (everything but ``hash``; ``state``
    only when not ``None``). Raises ``rfc8785.CanonicalizationError`` for content JSON cannot carry."""
    payload = {"seq": seq, "ts": ts, "company": company, "principal": principal, "action": action,
               "subject": subject, "data": data, "prev_hash": prev_hash}
    if state is not None:
        payload["state"] = state
    return hashlib.sha256(rfc8785.dumps(payload)).hexdigest()


STATE_TABLES = ("tasks", "principals", "api_tokens", "approval_requests")
"""The tables whose rows the chain covers. A task's lease is part of its row."""

UNHASHED_COLUMNS = {"tasks": frozenset({"lease_expires_at"}), "api_tokens": frozenset({"last_used_at"})}
"""Columns that change without an event, left out of :func:`row_hash`: a lease's renewal (a long run
renews often, unaudited) and a token's last use (every authenticated request)."""

ALL = "*"
"""The key of a :func:`named_rows` reference to every row of the table (``spec.apply``: principals)."""


_SAFE_INT = 2**53 - 1


def row_hash(table: str, row: dict[str, Any]) -> str:
    """SHA-256 hex of the RFC 8785 JSON of ``row`` (column name -> value as stored: str, int, bool or
    None; a bool as 0 or 1, as SQLite's driver returns it), without the :data:`UNHASHED_COLUMNS` of ``table``.

    A row of ASCII column names and only such values is encoded with :func:`json.dumps` (sorted keys, no
    spaces, no ASCII escaping), which gives the same bytes as RFC 8785 for them (the same escapes, keys
    sorted by code point equal to UTF-16 order for ASCII) at a fraction of the cost; anything else goes
    through ``rfc8785``. Raises ``rfc8785.CanonicalizationError`` for a value JSON cannot carry."""
    skip = UNHASHED_COLUMNS.get(table, frozenset())
    kept = {k: int(v) if isinstance(v, bool) else v for k, v in row.items() if k not in skip}
    if all(k.isascii() and (v is None or isinstance(v, str)
                            or (type(v) is int and -_SAFE_INT <= v <= _SAFE_INT)) for k, v in kept.items()):
        try:
            encoded = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate: let rfc8785 refuse it
            encoded = rfc8785.dumps(kept)
    else:
        encoded = rfc8785.dumps(kept)
    return hashlib.sha256(encoded).hexdigest()


def named_rows(action: str, subject: str, data: Any) -> list[tuple[str, str]]:
    """The rows an event produced, as ``(table, key)``: from its subject (``task:ID``, ``principal:HANDLE``,
    which also names that principal's tokens, ``approval:ID``) and, for a transition run by an approval,
    the request (``data.approval_request``; ``data.request_id`` when one is opened). ``spec.apply`` names every principal (``key`` :data:`ALL`).
    A refusal (``*.rejected``) produced nothing and names nothing."""
    if action.endswith(".rejected"):
        return []
    if action == "spec.apply":
        return [("principals", ALL)]
    kind, _, key = subject.partition(":")
    refs: list[tuple[str, str]] = []
    if kind == "task" and key:
        refs.append(("tasks", key))
    elif kind == "principal" and key:
        refs.append(("principals", key))
    elif kind == "approval" and key:
        refs.append(("approval_requests", key))
    if isinstance(data, dict):
        for name in ("approval_request", "request_id"):  # a transition an approval ran; a request opened
            if isinstance(data.get(name), int) and not isinstance(data.get(name), bool):
                refs.append(("approval_requests", str(data[name])))
    return refs


def first_break(events: Iterable[AuditEvent], *, head: tuple[int, str] | None = None) -> tuple[int, str] | None:
    """Walk ``events`` (in ascending ``seq`` order) and return ``(seq, reason)`` of the first bad one.

    ``head`` is the ``(last seq, last hash)`` the store recorded when it last appended; it catches events
    deleted from the end of the chain. Returns ``None`` when the whole chain verifies.
    """
    expected_seq, prev = 1, GENESIS_HASH
    for event in events:
        if event.seq != expected_seq:
            if event.seq > expected_seq:
                return expected_seq, f"event {expected_seq} is missing (next present is {event.seq})"
            return event.seq, f"sequence goes backwards or repeats (expected {expected_seq})"
        if event.prev_hash != prev:
            return event.seq, ("prev_hash does not match the previous event's hash (an event was changed, "
                               "removed or inserted before it)")
        try:
            recomputed = event_hash(seq=event.seq, ts=event.ts, company=event.company, principal=event.principal,
                                    action=event.action, subject=event.subject, data=event.data,
                                    prev_hash=event.prev_hash, state=event.state)
        except rfc8785.CanonicalizationError:
            recomputed = None  # content no append could have written: it was edited
        if recomputed != event.hash:
            return event.seq, "content does not match its hash (the event was edited)"
        prev = event.hash
        expected_seq += 1
    if head is not None:
        last_seq, last_hash = head
        if last_seq >= expected_seq:
            return expected_seq, f"events {expected_seq}..{last_seq} were deleted from the end of the chain"
        if last_seq < expected_seq - 1:
            return last_seq + 1, f"events {last_seq + 1}..{expected_seq - 1} lie beyond the recorded chain head"
        if last_seq > 0 and last_hash != prev:
            return last_seq, "the last event does not match the recorded chain head"
    return None
