"""The audit chain's arithmetic: how an event is hashed and how a chain of events is verified.

Each event's ``hash`` is SHA-256 (hex) over the RFC 8785 (JSON Canonicalization Scheme) encoding, by the
``rfc8785`` package, of the object::

    {"seq": int, "ts": str, "company": str, "principal": str, "action": str,
     "subject": str, "data": object, "prev_hash": str}

``prev_hash`` is the previous event's ``hash``, or :data:`GENESIS_HASH` for ``seq == 1``. Changing,
deleting, inserting or reordering any event breaks the chain at that event or the one after it, and
:func:`first_break` names the first bad sequence number. The chain is per company.
"""

from __future__ import annotations

import hashlib
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


def event_hash(*, seq: int, ts: str, company: str, principal: str, action: str, subject: str, data: Any,
               prev_hash: str) -> str:
    """SHA-256 hex digest of the canonical JSON of an event's content (everything but ``hash``)."""
    payload = {"seq": seq, "ts": ts, "company": company, "principal": principal, "action": action,
               "subject": subject, "data": data, "prev_hash": prev_hash}
    return hashlib.sha256(rfc8785.dumps(payload)).hexdigest()


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
            return event.seq, "prev_hash does not match the previous event's hash (an event was changed, " \
                              "removed or inserted before it)"
        try:
            recomputed = event_hash(seq=event.seq, ts=event.ts, company=event.company, principal=event.principal,
                                    action=event.action, subject=event.subject, data=event.data,
                                    prev_hash=event.prev_hash)
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
