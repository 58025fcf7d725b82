"""Appending to and reading the audit chain. Appending is the only write; no code updates or deletes events.

The chain head (last ``seq`` and ``hash``) is kept on the company row and updated in the same transaction
as each append, which serialises appends per company (a row lock on PostgreSQL, the write lock on
SQLite) and lets :func:`verify` notice events deleted from the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import rfc8785
from sqlalchemy import Connection, bindparam, insert, select, update

from roster.errors import UsageError
from roster.kernel.audit import AuditEvent, event_hash, first_break
from roster.kernel.contracts import canonical_problems
from roster.store.prepared import Prepared
from roster.store.schema import audit_events, companies


@dataclass
class ChainHead:
    """The company row as a write transaction sees it: chain head, task counter and spec revision."""

    company: str
    audit_seq: int
    audit_head: str
    task_seq: int
    spec_revision: int
    rights_revision: int = 0
    dirty: bool = False


# Hot-path statements are built once: building a statement per call costs more than running it.
_READ_HEAD = Prepared(
    select(companies.c.audit_seq, companies.c.audit_head, companies.c.task_seq, companies.c.spec_revision,
           companies.c.rights_revision)
    .where(companies.c.id == bindparam("company"))
    .with_for_update()
)
_INSERT_EVENT = Prepared(insert(audit_events).values({c.name: bindparam(c.name) for c in audit_events.c}))
_SAVE_HEAD = Prepared(update(companies).where(companies.c.id == bindparam("company")).values(
    audit_seq=bindparam("audit_seq"), audit_head=bindparam("audit_head"), task_seq=bindparam("task_seq"),
    rights_revision=bindparam("rights_revision")))


def read_head(conn: Connection, company: str) -> ChainHead | None:
    """Lock (on PostgreSQL, ``FOR UPDATE``) and read the company row. ``None`` if the company is unknown."""
    row = _READ_HEAD.first(conn, {"company": company})
    if row is None:
        return None
    return ChainHead(company, row.audit_seq, row.audit_head, row.task_seq, row.spec_revision, row.rights_revision)


VIA: ContextVar[str | None] = ContextVar("roster_via", default=None)
"""The interface a request came through (``api``, ``mcp``), set by that interface for the duration of
one request; :func:`append` records it in each event's data as ``via``. Unset (CLI, runtime): nothing."""


WAKE_ACTIONS = frozenset({"task.create", "task.transition", "task.assign", "task.adopt", "task.handoff", "lease.release",
                          "message.send", "approval.approve", "approval.reject", "event.emit"})
"""Actions after which some agent may have work it did not have: a task created, moved, re-routed or given
back (a lease released, a hold handed back), a message sent, an approval decided, an event emitted, an
escalation resolved, an agent or a scope resumed. Their commit wakes the dispatchers (see :func:`note_work`)."""
WAKE_CHANNEL = "roster_work"
"""The PostgreSQL ``LISTEN``/``NOTIFY`` channel on which a commit that made work wakes other processes."""


def note_work(conn: Connection, company: str) -> None:
    """Mark ``conn``'s transaction as one that made work for ``company``'s agents: once it commits,
    :meth:`Store.write <roster.store.store.Store.write>` wakes this process's dispatchers, and on PostgreSQL
    a ``NOTIFY`` (delivered at commit, dropped on rollback) wakes every other process's."""
    woke = conn.info.setdefault("roster_work", set())
    if company in woke:
        return
    woke.add(company)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_notify('{WAKE_CHANNEL}', %(company)s)", {"company": company})


def append(conn: Connection, head: ChainHead, *, ts: str, principal: str, action: str, subject: str,
           data: Any) -> AuditEvent:
    """Append one event after ``head`` and advance ``head`` in memory (see :func:`save_head`)."""
    via = VIA.get()
    if via is not None and isinstance(data, dict):
        data = {**data, "via": via}
    seq = head.audit_seq + 1
    try:
        digest = event_hash(seq=seq, ts=ts, company=head.company, principal=principal, action=action,
                            subject=subject, data=data, prev_hash=head.audit_head)
    except rfc8785.CanonicalizationError as exc:
        # The hash is over RFC 8785 JSON: refuse what it cannot represent, before anything is written,
        # and say where (the diagnosis walks the value only when it failed: appends are the hot path).
        problems = canonical_problems(data, "data") or [str(exc)]
        raise UsageError(f"cannot record {action}: {'; '.join(problems[:3])}") from None
    _INSERT_EVENT.rowcount(conn, {
        "company_id": head.company, "seq": seq, "ts": ts, "principal": principal, "action": action,
        "subject": subject, "data": json.dumps(data, separators=(",", ":"), sort_keys=True),
        "prev_hash": head.audit_head, "hash": digest, "state": None,
    })
    if action in WAKE_ACTIONS or action.startswith(("escalation.", "killswitch.resume", "principal.resume")):
        note_work(conn, head.company)
    event = AuditEvent(seq, ts, head.company, principal, action, subject, data, head.audit_head, digest)
    head.audit_seq, head.audit_head, head.dirty = seq, digest, True
    return event


def save_head(conn: Connection, head: ChainHead) -> None:
    """Write the advanced head (task counter, rights revision) back to the company row, if anything changed."""
    if head.dirty:
        _SAVE_HEAD.rowcount(conn, {"company": head.company, "audit_seq": head.audit_seq,
                                  "audit_head": head.audit_head, "task_seq": head.task_seq,
                                  "rights_revision": head.rights_revision})
        head.dirty = False


def iter_events(conn: Connection, company: str, *, principal: str | None = None, subject: str | None = None,
                action: str | None = None, since: str | None = None, until: str | None = None,
                after_seq: int = 0, limit: int | None = None, not_principal: str | None = None,
                newest_first: bool = False) -> Iterator[AuditEvent]:
    """Events of ``company`` in ``seq`` order (``newest_first``: reversed, so ``limit`` keeps the latest),
    filtered. ``action`` ending in ``*`` matches a prefix; ``since``/``until`` are ISO 8601 UTC strings
    (inclusive/exclusive); ``not_principal`` leaves out one principal's events."""
    query = select(audit_events).where(audit_events.c.company_id == company, audit_events.c.seq > after_seq)
    if principal is not None:
        query = query.where(audit_events.c.principal == principal)
    if not_principal is not None:
        query = query.where(audit_events.c.principal != not_principal)
    if subject is not None:
        query = query.where(audit_events.c.subject == subject)
    if action is not None:
        if action.endswith("*"):
            query = query.where(audit_events.c.action.startswith(action[:-1], autoescape=True))
        else:
            query = query.where(audit_events.c.action == action)
    if since is not None:
        query = query.where(audit_events.c.ts >= since)
    if until is not None:
        query = query.where(audit_events.c.ts < until)
    query = query.order_by(audit_events.c.seq.desc() if newest_first else audit_events.c.seq)
    if limit is not None:
        query = query.limit(limit)
    for row in conn.execute(query.execution_options(yield_per=1000)):  # on the statement: the connection may be reused
        yield _event(row)


_LATEST_ON = Prepared(select(audit_events).where(audit_events.c.company_id == bindparam("company"),
                                                audit_events.c.subject == bindparam("subject"))
                      .order_by(audit_events.c.seq.desc()).limit(bindparam("limit")))


def latest_on(conn: Connection, company: str, subject: str, limit: int) -> list[AuditEvent]:
    """The newest ``limit`` events on ``subject``, newest first (one indexed range read: a run's brief)."""
    return [_event(row) for row in _LATEST_ON.all(conn, {"company": company, "subject": subject, "limit": limit})]


def verify(conn: Connection, company: str) -> tuple[int, tuple[int, str] | None]:
    """Walk the whole chain of ``company``. Returns ``(events checked, first break or None)``."""
    head = conn.execute(select(companies.c.audit_seq, companies.c.audit_head)
                        .where(companies.c.id == company)).first()
    counted = 0

    def counting() -> Iterator[AuditEvent]:
        nonlocal counted
        for event in iter_events(conn, company):
            counted += 1
            yield event

    broken = first_break(counting(), head=(head.audit_seq, head.audit_head) if head else None)
    return counted, broken


def _event(row: Any) -> AuditEvent:
    try:
        data = json.loads(row.data)
    except ValueError:
        data = {"unparseable": row.data}
    return AuditEvent(row.seq, row.ts, row.company_id, row.principal, row.action, row.subject, data,
                      row.prev_hash, row.hash)
