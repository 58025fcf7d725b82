"""Appending to and reading the audit chain. Appending is the only write; no code updates or deletes events.

The chain head (last ``seq`` and ``hash``) is kept on the company row and updated in the same transaction
as each append, which serialises appends per company (a row lock on PostgreSQL, the write lock on
SQLite) and lets :func:`verify` notice events deleted from the end.

State covered by the chain: :func:`append` takes its ``seq`` at once but writes the event when the
transaction saves its head (:func:`save_head`, or at the latest just before commit, see
:func:`before_commit`). By then every row of the transaction is written, so each event records the
:func:`~roster.kernel.audit.row_hash` of the rows it names (:func:`~roster.kernel.audit.named_rows`) as
committed: a row named by several events of one transaction is hashed on the last of them. The
hashes are part of the event's hash. :func:`verify_state` recomputes them from the tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import rfc8785
from sqlalchemy import Connection, Table, bindparam, insert, select, update

from roster.errors import UsageError
from roster.kernel.audit import ALL, AuditEvent, event_hash, first_break, named_rows, row_hash
from roster.kernel.contracts import canonical_problems
from roster.store.dialects import dialect_of
from roster.store.prepared import Prepared
from roster.store.schema import api_tokens, approval_requests, audit_events, companies, principals, tasks


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
    pending: list[_Pending] = field(default_factory=list)
    """Events appended in this transaction and not yet written (see the module's docstring)."""
    touched: list[tuple[str, str]] = field(default_factory=list)
    """Rows written in this transaction that no event's subject names (see :func:`touch`)."""


@dataclass
class _Pending:
    seq: int
    ts: str
    principal: str
    action: str
    subject: str
    data: Any
    refs: list[tuple[str, str]]


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


def note_work(conn: Connection, company: str) -> None:
    """Mark ``conn``'s transaction as one that made work for ``company``'s agents: once it commits,
    :meth:`Store.write <roster.store.store.Store.write>` wakes this process's dispatchers, and on PostgreSQL
    a ``NOTIFY`` (delivered at commit, dropped on rollback) wakes every other process's."""
    woke = conn.info.setdefault("roster_work", set())
    if company in woke:
        return
    woke.add(company)
    dialect_of(conn).notify_work(conn, company)


def append(conn: Connection, head: ChainHead, *, ts: str, principal: str, action: str, subject: str,
           data: Any) -> int:
    """Append one event after ``head`` and advance ``head`` in memory; returns its ``seq``. The event is
    written, with the hashes of the rows it names, by :func:`save_head` in the same transaction. Raises
    (there) :class:`UsageError` if ``data`` cannot be represented as RFC 8785 JSON."""
    via = VIA.get()
    if via is not None and isinstance(data, dict):
        data = {**data, "via": via}
    seq = head.audit_seq + 1
    head.pending.append(_Pending(seq, ts, principal, action, subject, data, named_rows(action, subject, data)))
    if not head.pending[1:]:
        conn.info.setdefault("roster_heads", []).append(head)
    if action in WAKE_ACTIONS or action.startswith(("escalation.", "killswitch.resume", "principal.resume")):
        note_work(conn, head.company)
    head.audit_seq, head.dirty = seq, True
    return seq


def touch(head: ChainHead, table: str, key: object) -> None:
    """Record that this transaction wrote row ``key`` of ``table`` (one of
    :data:`~roster.kernel.audit.STATE_TABLES`) though no event's subject names it (a tool call using up
    its approval): the transaction's last event records the row's hash."""
    head.touched.append((table, str(key)))


_STATE_KEYS: dict[str, tuple[Table, str]] = {
    "tasks": (tasks, "id"), "principals": (principals, "handle"), "api_tokens": (api_tokens, "id"),
    "approval_requests": (approval_requests, "id"),
}


_ROW_BY_KEY = {name: Prepared(select(model).where(model.c.company_id == bindparam("company"),
                                                  model.c[key] == bindparam("key")))
               for name, (model, key) in _STATE_KEYS.items()}


def _rows(conn: Connection, company: str, table: str, keys: set[str]) -> dict[str, dict[str, Any]]:
    """The rows of ``table`` with these keys (all of them with :data:`ALL`), by key as a string."""
    model, key = _STATE_KEYS[table]
    if ALL in keys:
        query = select(model).where(model.c.company_id == company)
        return {str(row._mapping[key]): dict(row._mapping) for row in conn.execute(query)}
    numeric = model.c[key].type.python_type is int
    found = {}
    for wanted in keys:  # usually one: a prepared statement per key beats building an IN query
        if numeric and not wanted.isdigit():
            continue
        row = _ROW_BY_KEY[table].first(conn, {"company": company, "key": int(wanted) if numeric else wanted})
        if row is not None:
            found[wanted] = row._asdict()
    return found


def _state_of(conn: Connection, company: str, wanted: dict[tuple[str, str], int],
              count: int) -> list[list[list[Any]] | None]:
    """For each of ``count`` pending events, the ``state`` entries of the refs whose last event it is."""
    by_table: dict[str, set[str]] = {}
    for table, key in wanted:
        by_table.setdefault(table, set()).add(key)
    rows = {table: _rows(conn, company, table, keys) for table, keys in by_table.items()}
    # A principal's event names its tokens too (issue, revoke, retire): read them by principal.
    handles = by_table.get("principals", set())
    tokens: dict[str, dict[str, dict[str, Any]]] = {}
    if handles:
        query = select(api_tokens).where(api_tokens.c.company_id == company)
        if ALL not in handles:
            query = query.where(api_tokens.c.principal.in_(sorted(handles)))
        for row in conn.execute(query):
            tokens.setdefault(row.principal, {})[row.id] = dict(row._mapping)
    states: list[list[list[Any]] | None] = [None] * count
    for (table, key), index in wanted.items():
        entries = states[index] if states[index] is not None else []
        if key == ALL:
            found = rows[table]
            entries.extend([table, k, row_hash(table, r)] for k, r in found.items())
        else:
            row = rows[table].get(key)
            entries.append([table, key, row_hash(table, row) if row is not None else None])
            found = {key: row} if row is not None else {}
        if table == "principals":
            for handle in found:
                entries.extend(["api_tokens", token_id, row_hash("api_tokens", token)]
                               for token_id, token in tokens.get(handle, {}).items())
        states[index] = entries
    return [sorted(entries) if entries else None for entries in states]


def _flush(conn: Connection, head: ChainHead) -> None:
    """Write ``head``'s pending events: hash the rows they name as they now stand, then chain them."""
    pending, head.pending = head.pending, []
    wanted: dict[tuple[str, str], int] = {}
    for index, event in enumerate(pending):
        for ref in event.refs:
            wanted[ref] = index  # a row named twice is hashed on its last event
    for ref in head.touched:
        wanted[ref] = len(pending) - 1
    head.touched = []
    states = _state_of(conn, head.company, wanted, len(pending)) if wanted else [None] * len(pending)
    prev, rows = head.audit_head, []
    for event, state in zip(pending, states, strict=True):
        try:
            digest = event_hash(seq=event.seq, ts=event.ts, company=head.company, principal=event.principal,
                                action=event.action, subject=event.subject, data=event.data, prev_hash=prev,
                                state=state)
        except rfc8785.CanonicalizationError as exc:
            # The hash is over RFC 8785 JSON: refuse what it cannot represent, before anything commits,
            # and say where (the diagnosis walks the value only when it failed: appends are the hot path).
            problems = canonical_problems(event.data, "data") or [str(exc)]
            raise UsageError(f"cannot record {event.action}: {'; '.join(problems[:3])}") from None
        rows.append({
            "company_id": head.company, "seq": event.seq, "ts": event.ts, "principal": event.principal,
            "action": event.action, "subject": event.subject,
            "data": json.dumps(event.data, separators=(",", ":"), sort_keys=True),
            "prev_hash": prev, "hash": digest,
            "state": json.dumps(state, separators=(",", ":")) if state is not None else None,
        })
        prev = digest
    if len(rows) == 1:
        _INSERT_EVENT.rowcount(conn, rows[0])
    else:
        conn.execute(insert(audit_events), rows)
    head.audit_head = prev


def save_head(conn: Connection, head: ChainHead) -> None:
    """Write the pending events, then the advanced head (task counter, rights revision) back to the
    company row, if anything changed. Records the head in ``conn.info["roster_saved_heads"]``
    (company -> (seq, hash)) for what runs after commit (checkpoints)."""
    if head.pending:
        _flush(conn, head)
    if head.dirty:
        _SAVE_HEAD.rowcount(conn, {"company": head.company, "audit_seq": head.audit_seq,
                                  "audit_head": head.audit_head, "task_seq": head.task_seq,
                                  "rights_revision": head.rights_revision})
        head.dirty = False
        conn.info.setdefault("roster_saved_heads", {})[head.company] = (head.audit_seq, head.audit_head)


def before_commit(conn: Connection) -> None:
    """Save every head of ``conn``'s transaction that still has pending events (a verb that appended and
    did not call :func:`save_head`): no event is lost, and the rows are hashed after the last write.
    :meth:`Store.write <roster.store.store.Store.write>` calls it just before commit."""
    for head in conn.info.pop("roster_heads", []):
        if head.pending:
            save_head(conn, head)


def forget(conn: Connection) -> None:
    """Drop what a transaction of ``conn`` left in ``conn.info`` (it outlives the transaction)."""
    conn.info.pop("roster_heads", None)
    conn.info.pop("roster_saved_heads", None)


def iter_events(conn: Connection, company: str, *, principal: str | None = None, subject: str | None = None,
                action: str | None = None, since: str | None = None, until: str | None = None,
                after_seq: int = 0, limit: int | None = None, not_principal: str | None = None,
                newest_first: bool = False, before_seq: int | None = None) -> Iterator[AuditEvent]:
    """Events of ``company`` in ``seq`` order (``newest_first``: reversed, so ``limit`` keeps the latest),
    filtered. ``action`` ending in ``*`` matches a prefix; ``since``/``until`` are ISO 8601 UTC strings
    (inclusive/exclusive); ``after_seq``/``before_seq`` bound the sequence numbers (exclusive: the pages of
    a long chain, read by its primary key); ``not_principal`` leaves out one principal's events."""
    query = select(audit_events).where(audit_events.c.company_id == company, audit_events.c.seq > after_seq)
    if before_seq is not None:
        query = query.where(audit_events.c.seq < before_seq)
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


PROGRESS_EVERY = 1000
"""How often :func:`verify` reports progress, in events."""


def verify(conn: Connection, company: str,
           progress: Callable[[int], None] | None = None) -> tuple[int, tuple[int, str] | None]:
    """Walk the whole chain of ``company``. Returns ``(events checked, first break or None)``. ``progress``
    is told the events checked so far, every :data:`PROGRESS_EVERY` events."""
    head = conn.execute(select(companies.c.audit_seq, companies.c.audit_head)
                        .where(companies.c.id == company)).first()
    counted = 0

    def counting() -> Iterator[AuditEvent]:
        nonlocal counted
        for event in iter_events(conn, company):
            counted += 1
            if progress is not None and counted % PROGRESS_EVERY == 0:
                progress(counted)
            yield event

    broken = first_break(counting(), head=(head.audit_seq, head.audit_head) if head else None)
    return counted, broken


def _event(row: Any) -> AuditEvent:
    try:
        data = json.loads(row.data)
    except ValueError:
        data = {"unparseable": row.data}
    state = json.loads(row.state) if row.state is not None else None
    return AuditEvent(row.seq, row.ts, row.company_id, row.principal, row.action, row.subject, data,
                      row.prev_hash, row.hash, state)
