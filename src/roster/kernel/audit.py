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
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def _plain(value: Any) -> bool:
    """Whether ``value`` holds only what :func:`json.dumps` encodes exactly as RFC 8785 does: strings,
    integers within +/-(2**53 - 1), booleans, None, lists, and dicts whose keys are strings below U+D800
    (so that code point order is UTF-16 order). Floats are not: their shortest form differs."""
    if value is None or isinstance(value, str | bool):
        return True
    if type(value) is int:
        return -_SAFE_INT <= value <= _SAFE_INT
    if isinstance(value, list | tuple):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(type(k) is str and (not k or max(k) < "\ud800") and _plain(v) for k, v in value.items())
    return False


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 (JSON Canonicalization Scheme) encoding of ``value``: by :func:`json.dumps` (sorted keys,
    no spaces, UTF-8) when the value is plain (see :func:`_plain`), which gives the same bytes many times
    faster, else by the ``rfc8785`` package. Raises ``rfc8785.CanonicalizationError`` for what JSON cannot
    carry (a lone surrogate, an integer out of range, NaN)."""
    return _encode(value) if _plain(value) else rfc8785.dumps(value)


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _encode(plain: Any) -> bytes:
    try:
        return _ENCODER.encode(plain).encode()
    except UnicodeEncodeError:  # a lone surrogate: rfc8785 names the problem
        return rfc8785.dumps(plain)


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
    None; a bool as 0 or 1, as SQLite's driver returns it), without the :data:`UNHASHED_COLUMNS` of ``table``
    (see :func:`canonical_json`). Raises ``rfc8785.CanonicalizationError`` for a value JSON cannot carry."""
    skip = UNHASHED_COLUMNS.get(table, frozenset())
    kept: dict[str, Any] = {}
    plain = True  # column names are ASCII: only the values decide (see canonical_json)
    for name, value in row.items():
        if name in skip:
            continue
        kind = value.__class__
        if kind is bool:
            value = int(value)
        elif kind is int:
            plain = plain and -_SAFE_INT <= value <= _SAFE_INT
        elif value is not None and kind is not str:
            plain = False
        kept[name] = value
    encoded = _encode(kept) if plain else rfc8785.dumps(kept)
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
