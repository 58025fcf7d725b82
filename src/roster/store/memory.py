"""Memory pads: each agent's typed, compact, private memory, and portfolios' team memory.

An entry is one short statement of a kind (:data:`MEMORY_KINDS`) with its provenance (the run, task or
event it came from, or whom it was received from), a confidence in [0, 1] and an optional expiry.

Pads and who may use them (one rule, :meth:`MemoryVerbs._pad_access`):

- ``<handle>``: the private pad of an agent (or human). The owner reads and writes it; another agent
  reads it only through an explicit share (:meth:`MemoryVerbs.share_memory`) and never writes it.
- ``team:<workspace>/<portfolio>``: a portfolio's team pad; agents named (by handle or role) in the
  portfolio's ``team_memory.read`` / ``team_memory.write`` may read / write it.
- Humans of the company may read and write every pad (they manage the agents, as in the ``humans`` policy).

Retrieval is full text: SQLite FTS5 (porter stemming, unicode61) or PostgreSQL ``to_tsvector('english')``.
The query's words are OR-ed. Ranking: text relevance (FTS5 ``bm25``; PostgreSQL ``ts_rank``) weighted by
``0.5 + 0.5 * confidence``, best first; ties go to the newest entry. Expired entries are never returned.

Ranking statistics never cross companies. FTS5's ``bm25`` uses statistics of the whole index (how many
rows, their average length, how many rows hold each word), so on SQLite each company has an index of its
own, the FTS5 table :func:`~roster.store.dialects.fts_table` (rowid = ``memory_entries.id``), created on the company's first
entry and filled from ``memory_entries`` (migration 0015 made one for each company that had entries, and
dropped the shared ``memory_fts``). A company's scores therefore depend on its own entries only, never on
whether a word occurs in another company's memory. PostgreSQL's ``ts_rank`` scores each entry from its
own text and the query alone (no statistics over other rows), so one expression index serves every
company. Within a company the statistics span all its pads (see docs/security.md for what that shows).

Consolidation (:meth:`MemoryVerbs.consolidate_memory`) drops expired entries and merges duplicates
(same pad, kind and words, ignoring case and punctuation) into the entry with the highest confidence
(the newest on a tie), which keeps the others' provenance. Every decision is an audit event.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection, delete, insert, select, update

from roster.defaults import MEMORY_KINDS
from roster.errors import Denied, NotFound, PayloadTooLarge, RosterError, UsageError
from roster.kernel.contracts import Actor
from roster.kernel.rights import Resource
from roster.kernel.values import check_json
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase, CompanyCache, shared_with_txn
from roster.store.schema import memory_entries, memory_shares
from roster.store.store import format_ts

MAX_ENTRY_CHARS = 2000
"""Longest entry text: memory is compact; put documents in artifacts."""
EXPORT_FORMAT = "roster.memory/1"
TEAM_PREFIX = "team:"

Kind = Literal["belief", "decision", "constraint", "preference", "lesson"]


@dataclass(frozen=True)
class MemoryEntry:
    """One memory entry. ``confidence`` is in [0, 1]; ``expires_at`` is ISO 8601 UTC or ``None``."""

    id: int
    pad: str
    kind: str
    text: str
    confidence: float
    provenance: dict[str, Any]
    expires_at: str | None
    created_by: str
    created_at: str
    score: float | None = None
    """Relevance of a search hit (higher is better); ``None`` outside a search."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Consolidation:
    """What a consolidation did: ``merged`` as (kept id, [dropped ids]) and the ``expired`` ids dropped."""

    merged: list[tuple[int, list[int]]]
    expired: list[int]


class ExportedEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Kind
    text: str = Field(min_length=1, max_length=MAX_ENTRY_CHARS)
    confidence: float = Field(ge=0, le=1)
    provenance: dict[str, Any] = {}
    expires_at: str | None = None
    created_by: str
    created_at: str


class MemoryExport(BaseModel):
    """The file ``roster memory export`` writes and ``roster memory import`` reads."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["roster.memory/1"]
    company: str
    pad: str
    exported_by: str
    exported_at: str
    filter: dict[str, Any] = {}
    entries: list[ExportedEntry]


def _entry(row: Any, score: float | None = None) -> MemoryEntry:
    return MemoryEntry(row.id, row.pad, row.kind, row.text, row.confidence, json.loads(row.provenance),
                       row.expires_at, row.created_by, row.created_at, score)


def _words(text_: str) -> list[str]:
    return re.findall(r"\w+", text_.lower())


def _normal(text_: str) -> str:
    return " ".join(_words(text_))


class MemoryVerbs(CompanyBase):
    """Remember, recall, list, forget, share, consolidate, export and import (mixed into ``CompanyStore``)."""

    # -- who may use a pad --------------------------------------------------------------------------

    def _pad_access(self, conn: Connection, cache: CompanyCache, who: Actor, pad: str, write: bool) -> None:
        """Raise :class:`NotFound` for a pad that does not exist, :class:`Denied` unless the decision on
        ``memory.write`` (or ``memory.read``) of the pad allows ``who``; the rule is Cedar's
        (``memory:own-pad``, ``memory:shared``, ``memory:team:...``, ``humans``)."""
        assert cache.spec is not None
        action = "memory.write" if write else "memory.read"
        if pad.startswith(TEAM_PREFIX):
            portfolio_path = pad[len(TEAM_PREFIX):]
            workspace, _, portfolio = portfolio_path.partition("/")
            ws = cache.spec.workspaces.get(workspace)
            if ws is None or portfolio not in ws.portfolios:
                raise NotFound(f"no portfolio '{portfolio_path}' in company '{self.company}', so no pad '{pad}'")
            self._authorize(cache, who, action, Resource("pad", pad),
                            why=f"not named in {portfolio_path}'s team_memory.{'write' if write else 'read'}")
            return
        if pad not in cache.principals:
            raise NotFound(f"no principal '{pad}' in company '{self.company}', so no memory pad '{pad}'")
        shared = not write and who.handle != pad and shared_with_txn(conn, self.company, pad, who.handle)
        self._authorize(cache, who, action, Resource("pad", pad), shared=shared,
                        why="an agent's memory is private" + ("" if write else "; its owner or a human can share it"))

    def _memory_write(self, actor: ActorRef, action: str, pad: str | None, request: dict[str, Any], body):  # noqa: ANN001, ANN202
        """One write transaction on a pad (default: the actor's own); refusals are audited."""
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                who = self._actor(cache, actor)
                target = pad or who.handle
                self._pad_access(conn, cache, who, target, write=True)
                result = body(conn, head, cache, who, target)
                audit.save_head(conn, head)
                return result
        except RosterError as exc:
            self._audit_rejection(actor, action, f"memory:{pad or self._handle(actor)}", exc, request)
            raise

    def _memory_read(self, actor: ActorRef | None, pads: Iterable[str] | None, body):  # noqa: ANN001, ANN202
        """A read of ``pads`` (default: the actor's own); ``actor=None`` is a trusted internal read."""
        pads = list(pads) if pads is not None else None
        subject = f"memory:{','.join(pads or [])}"
        # One audit event per refusal, naming the pad refused (not ``_reading``, which would audit it again).
        try:
            with self.store.read() as conn:
                cache = self.current_txn(conn)
                who = self._actor(cache, actor) if actor is not None else None
                if pads is None:
                    if who is None:
                        raise UsageError("a trusted memory read must name its pads")
                    pads = [who.handle]
                for pad in pads:
                    subject = f"memory:{pad}"
                    if who is not None:
                        self._pad_access(conn, cache, who, pad, write=False)
                return body(conn, pads)
        except Denied as exc:
            self._audit_rejection(actor, "memory.read", subject, exc, {})
            raise

    # -- verbs ---------------------------------------------------------------------------------------

    def remember(self, text_: str, *, actor: ActorRef, kind: str = "belief", pad: str | None = None,
                 confidence: float = 0.8, provenance: dict[str, Any] | None = None,
                 expires_in: float | None = None) -> MemoryEntry:
        """Add an entry to ``pad`` (default: the actor's own). ``expires_in`` is in seconds. Raises
        :class:`UsageError` (unknown kind, confidence outside [0, 1], empty text), :class:`PayloadTooLarge`
        (text over :data:`MAX_ENTRY_CHARS`), :class:`Denied`, :class:`NotFound` (no such pad)."""
        _check_entry(kind, text_, confidence)
        check_json("memory provenance", provenance or {})  # depth and read-back: roster.kernel.values
        if expires_in is not None and expires_in <= 0:
            raise UsageError(f"expires_in is in seconds and must be positive, not {expires_in}")
        self._ensure_memory_index()

        def body(conn: Connection, head: audit.ChainHead, cache: CompanyCache, who: Actor, target: str) -> MemoryEntry:
            now = self.store.clock()
            expires = format_ts(now + timedelta(seconds=expires_in)) if expires_in is not None else None
            return self._insert_txn(conn, head, who.handle, target, kind, text_, confidence, provenance or {},
                                    expires, action="memory.add")

        return self._memory_write(actor, "memory.add", pad, {"kind": kind, "pad": pad}, body)

    def _insert_txn(self, conn: Connection, head: audit.ChainHead, by: str, pad: str, kind: str, text_: str,
                    confidence: float, provenance: dict[str, Any], expires_at: str | None, *,
                    action: str) -> MemoryEntry:
        now = self.store.now()
        row = {"company_id": self.company, "pad": pad, "kind": kind, "text": text_, "confidence": confidence,
               "provenance": json.dumps(provenance, sort_keys=True), "expires_at": expires_at, "created_by": by,
               "created_at": now}
        entry_id = conn.execute(insert(memory_entries), row).inserted_primary_key[0]
        self.store.dialect.index_memory(conn, self.company, entry_id, text_)
        audit.append(conn, head, ts=now, principal=by, action=action, subject=f"memory:{pad}",
                     data={"id": entry_id, "kind": kind, "confidence": confidence, "provenance": provenance,
                           "expires_at": expires_at, "sha256": hashlib.sha256(text_.encode()).hexdigest()})
        return MemoryEntry(entry_id, pad, kind, text_, confidence, provenance, expires_at, by, now)

    def _delete_txn(self, conn: Connection, ids: list[int]) -> None:
        if not ids:
            return
        conn.execute(delete(memory_entries).where(memory_entries.c.company_id == self.company,
                                                  memory_entries.c.id.in_(ids)))
        self.store.dialect.unindex_memory(conn, self.company, ids)

    _memory_index_ready = False
    """Whether this company's full-text index is known to exist (where the dialect keeps one; see
    :meth:`_ensure_memory_index`)."""

    def _ensure_memory_index(self) -> None:
        """Make sure the company's full-text index exists (SQLite's FTS5 table; PostgreSQL needs none),
        creating it in a transaction of its own, filled from the company's entries, before the first entry
        is written. It is marked ready only once committed, so a write that rolls back never leaves a
        stale mark."""
        dialect = self.store.dialect
        if self._memory_index_ready or not dialect.keeps_memory_index:
            return
        with self.store.write() as conn:
            if not dialect.memory_index_exists(conn, self.company):
                dialect.create_memory_index(conn, self.company)
        self._memory_index_ready = True

    def _memory_index_txn(self, conn: Connection) -> bool:
        """Whether the company's full-text index exists (read inside ``conn``'s transaction; remembered once
        seen, as an index is never dropped while the store is open)."""
        if not self._memory_index_ready and self.store.dialect.memory_index_exists(conn, self.company):
            self._memory_index_ready = True
        return self._memory_index_ready

    def list_memory(self, *, actor: ActorRef | None, pads: list[str] | None = None, kind: str | None = None,
                    limit: int = 100, kinds: list[str] | None = None) -> list[MemoryEntry]:
        """Live (unexpired) entries of ``pads`` (default: the actor's own), newest first, at most ``limit``,
        of ``kind`` (or one of ``kinds``) when given."""
        wanted = [*([kind] if kind else []), *(kinds or [])]

        def body(conn: Connection, pads_: list[str]) -> list[MemoryEntry]:
            query = self._live(pads_).order_by(memory_entries.c.id.desc()).limit(limit)
            if wanted:
                query = query.where(memory_entries.c.kind.in_(wanted))
            return [_entry(r) for r in conn.execute(query)]

        return self._memory_read(actor, pads, body)

    def _live(self, pads: list[str]):  # noqa: ANN202
        now = self.store.now()
        return select(memory_entries).where(
            memory_entries.c.company_id == self.company, memory_entries.c.pad.in_(pads),
            (memory_entries.c.expires_at.is_(None)) | (memory_entries.c.expires_at > now))

    def recall(self, query: str, *, actor: ActorRef | None, pads: list[str] | None = None, limit: int = 10,
               kinds: list[str] | None = None) -> list[MemoryEntry]:
        """The entries of ``pads`` (default: the actor's own) most relevant to ``query``, best first, each
        with its ``score`` (ranking: see the module docstring). A query with no words returns the newest
        entries. Raises :class:`Denied` for a pad the actor may not read (audited)."""
        if not _words(query):
            return self.list_memory(actor=actor, pads=pads, limit=limit, kinds=kinds)
        return self._memory_read(actor, pads, lambda conn, pads_: self.recall_txn(conn, query, pads_, limit, kinds))

    def recall_txn(self, conn: Connection, query: str, pads: list[str], limit: int = 10,
                   kinds: list[str] | None = None) -> list[MemoryEntry]:
        """:meth:`recall` inside ``conn``'s transaction, with no access check (trusted callers: the
        runtime's brief, for the agent's own and team pads)."""
        words = _words(query)[:32]
        if not words:
            query_ = self._live(pads).order_by(memory_entries.c.id.desc()).limit(limit)
            if kinds:
                query_ = query_.where(memory_entries.c.kind.in_(kinds))
            return [_entry(r) for r in conn.execute(query_)]
        params: dict[str, Any] = {"company": self.company, "now": self.store.now(), "limit": limit,
                                  **{f"pad{i}": p for i, p in enumerate(pads)},
                                  **{f"kind{i}": k for i, k in enumerate(kinds or [])}}
        dialect = self.store.dialect
        params["q"] = dialect.memory_query(words)
        if dialect.keeps_memory_index and not self._memory_index_txn(conn) and conn.execute(
                select(memory_entries.c.id).where(memory_entries.c.company_id == self.company).limit(1)).first() is None:
            return []  # no index yet, and nothing it would hold: the company never saved an entry
        sql = dialect.recall_sql(self.company, len(pads), len(kinds or []))
        return [_entry(r, float(r.score)) for r in sql.all(conn, params)]

    def forget(self, entry_id: int, *, actor: ActorRef, reason: str = "") -> MemoryEntry:
        """Delete one entry (the audit keeps its id, kind and the SHA-256 of its text, not the text).
        Needs write access to its pad. Raises :class:`NotFound`, :class:`Denied`."""
        with self.store.read() as conn:
            row = conn.execute(select(memory_entries).where(memory_entries.c.company_id == self.company,
                                                            memory_entries.c.id == entry_id)).first()
        if row is None:
            raise NotFound(f"no memory entry {entry_id} in company '{self.company}'")
        entry = _entry(row)

        def body(conn: Connection, head: audit.ChainHead, cache: CompanyCache, who: Actor, target: str) -> MemoryEntry:
            self._delete_txn(conn, [entry_id])
            audit.append(conn, head, ts=self.store.now(), principal=who.handle, action="memory.forget",
                         subject=f"memory:{target}", data={"id": entry_id, "kind": entry.kind, "reason": reason,
                                                           "sha256": hashlib.sha256(entry.text.encode()).hexdigest()})
            return entry

        return self._memory_write(actor, "memory.forget", entry.pad, {"id": entry_id}, body)

    def share_memory(self, pad: str, grantee: str, *, actor: ActorRef, revoke: bool = False) -> None:
        """Let ``grantee`` (a principal of this company) read the private pad ``pad``, or stop it
        (``revoke``). Only the pad's owner or a human may. Raises :class:`NotFound`, :class:`Denied`,
        :class:`UsageError` (a team pad: its grants live in the spec)."""
        if pad.startswith(TEAM_PREFIX):
            raise UsageError(f"'{pad}' is a team pad; its readers are set in the spec's team_memory")

        def body(conn: Connection, head: audit.ChainHead, cache: CompanyCache, who: Actor, target: str) -> None:
            if grantee not in cache.principals:
                raise NotFound(f"no principal '{grantee}' in company '{self.company}'")
            keys = (memory_shares.c.company_id == self.company, memory_shares.c.pad == pad,
                    memory_shares.c.grantee == grantee)
            conn.execute(delete(memory_shares).where(*keys))
            if not revoke:
                conn.execute(insert(memory_shares), {"company_id": self.company, "pad": pad, "grantee": grantee,
                                                     "granted_by": who.handle, "granted_at": self.store.now()})
            audit.append(conn, head, ts=self.store.now(), principal=who.handle,
                         action="memory.unshare" if revoke else "memory.share", subject=f"memory:{pad}",
                         data={"grantee": grantee})

        self._memory_write(actor, "memory.share", pad, {"grantee": grantee, "revoke": revoke}, body)

    def memory_shares(self, pad: str) -> list[str]:
        """Who may read the private pad ``pad`` besides its owner and humans (a trusted read)."""
        with self.store.read() as conn:
            return list(conn.scalars(select(memory_shares.c.grantee).where(
                memory_shares.c.company_id == self.company, memory_shares.c.pad == pad)
                .order_by(memory_shares.c.grantee)))

    def consolidate_memory(self, *, actor: ActorRef | None, pads: list[str] | None = None) -> Consolidation:
        """Drop expired entries and merge duplicates in ``pads`` (default: every pad of the company; an
        ``actor`` needs write access to each). ``actor=None`` is the runtime (audited as ``runtime``)."""
        merged: list[tuple[int, list[int]]] = []
        expired: list[int] = []
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                who = self._actor(cache, actor) if actor is not None else None
                if pads is None:
                    pads = list(conn.scalars(select(memory_entries.c.pad).distinct().where(
                        memory_entries.c.company_id == self.company)))
                for pad in pads:
                    if who is not None:
                        self._pad_access(conn, cache, who, pad, write=True)
                by = who.handle if who is not None else "runtime"
                now = self.store.now()
                rows = list(conn.execute(select(memory_entries).where(
                    memory_entries.c.company_id == self.company, memory_entries.c.pad.in_(pads))
                    .order_by(memory_entries.c.id)))
                groups: dict[tuple[str, str, str], list[MemoryEntry]] = {}
                for row in rows:
                    entry = _entry(row)
                    if entry.expires_at is not None and entry.expires_at <= now:
                        expired.append(entry.id)
                        audit.append(conn, head, ts=now, principal=by, action="memory.expire",
                                     subject=f"memory:{entry.pad}", data={"id": entry.id, "expires_at": entry.expires_at})
                        continue
                    groups.setdefault((entry.pad, entry.kind, _normal(entry.text)), []).append(entry)
                for (pad, kind, _), entries in groups.items():
                    if len(entries) < 2:
                        continue
                    keep = max(entries, key=lambda e: (e.confidence, e.id))
                    dropped = [e.id for e in entries if e.id != keep.id]
                    provenance = {**keep.provenance, "merged": [
                        {"id": e.id, "provenance": e.provenance, "created_by": e.created_by}
                        for e in entries if e.id != keep.id]}
                    conn.execute(update(memory_entries).where(memory_entries.c.company_id == self.company,
                                                              memory_entries.c.id == keep.id),
                                 {"provenance": json.dumps(provenance, sort_keys=True)})
                    self._delete_txn(conn, dropped)
                    merged.append((keep.id, dropped))
                    audit.append(conn, head, ts=now, principal=by, action="memory.merge", subject=f"memory:{pad}",
                                 data={"kept": keep.id, "dropped": dropped, "kind": kind,
                                       "why": "same kind and words; kept the highest confidence"})
                self._delete_txn(conn, expired)
                audit.save_head(conn, head)
        except (Denied, NotFound) as exc:
            if actor is not None:
                self._audit_rejection(actor, "memory.consolidate", f"memory:{','.join(pads or [])}", exc, {})
            raise
        return Consolidation(merged, expired)

    def export_memory(self, pad: str, *, actor: ActorRef, kinds: list[str] | None = None, query: str = "",
                      min_confidence: float = 0.0, limit: int = 1000) -> dict[str, Any]:
        """A slice of ``pad`` with its provenance, as a JSON-ready :class:`MemoryExport` document.
        ``query`` (full text) and ``kinds`` / ``min_confidence`` filter it. Audited as ``memory.export``."""
        entries = (self.recall(query, actor=actor, pads=[pad], limit=limit, kinds=kinds) if _words(query)
                   else self.list_memory(actor=actor, pads=[pad], limit=limit, kinds=kinds))
        entries = [e for e in entries if e.confidence >= min_confidence and (not kinds or e.kind in kinds)]
        handle = self._handle(actor)
        document = MemoryExport(
            format=EXPORT_FORMAT, company=self.company, pad=pad, exported_by=handle, exported_at=self.store.now(),
            filter={"kinds": kinds, "query": query, "min_confidence": min_confidence},
            entries=[ExportedEntry(kind=e.kind, text=e.text, confidence=e.confidence,
                                   provenance={**e.provenance, "id": e.id}, expires_at=e.expires_at,
                                   created_by=e.created_by, created_at=e.created_at) for e in reversed(entries)])
        with self.store.write() as conn:
            head = audit.read_head(conn, self.company)
            audit.append(conn, head, ts=self.store.now(), principal=handle, action="memory.export",
                         subject=f"memory:{pad}", data={"entries": len(document.entries), **document.filter})
            audit.save_head(conn, head)
        return document.model_dump()

    def import_memory(self, pad: str, document: Any, *, actor: ActorRef) -> list[MemoryEntry]:
        """Take an exported slice into ``pad``; each entry is marked as received from the exporting pad.
        Entries that have already expired are skipped.
        Raises :class:`UsageError` for a malformed document (naming what is wrong), :class:`Denied` for a
        document of another company (audited), and the access errors of :meth:`remember`."""
        try:
            parsed = MemoryExport.model_validate(document)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()[:5])
            raise UsageError(f"not a {EXPORT_FORMAT} memory file: {problems}") from None
        if parsed.company != self.company:
            denial = Denied(self._handle(actor), "import memory into", f"company '{self.company}'",
                            f"the file was exported from company '{parsed.company}'; memory never crosses companies")
            self._audit_rejection(actor, "memory.import", f"memory:{pad}", denial, {"from_company": parsed.company})
            raise denial
        source = f"{parsed.company}/{parsed.pad}"
        now = self.store.now()
        live = [e for e in parsed.entries if e.expires_at is None or e.expires_at > now]  # expired: nothing to take
        self._ensure_memory_index()

        def body(conn: Connection, head: audit.ChainHead, cache: CompanyCache, who: Actor, target: str) -> list:
            return [self._insert_txn(conn, head, who.handle, target, e.kind, e.text, e.confidence,
                                     {"received_from": source, "exported_by": parsed.exported_by,
                                      "exported_at": parsed.exported_at, "original": e.provenance},
                                     e.expires_at, action="memory.import") for e in live]

        return self._memory_write(actor, "memory.import", pad, {"from": source, "entries": len(parsed.entries)},
                                  body)


def _check_entry(kind: str, text_: str, confidence: float) -> None:
    if kind not in MEMORY_KINDS:
        raise UsageError(f"memory kind '{kind}' is not one of {', '.join(MEMORY_KINDS)}")
    if not text_.strip():
        raise UsageError("a memory entry needs some text")
    if len(text_) > MAX_ENTRY_CHARS:
        raise PayloadTooLarge("memory entry", len(text_), MAX_ENTRY_CHARS)
    if not 0 <= confidence <= 1:
        raise UsageError(f"confidence is a number from 0 to 1, not {confidence}")
