"""Checkpoints in the database, and the checks that read the chain against them and against the tables.

- :func:`make_checkpoint` signs a company's current head (in one write transaction: the head cannot move
  while it is signed) and stores it in ``audit_checkpoints``; :func:`export` sends it to witnesses.
- :class:`AutoCheckpoints` does both after a commit, every ``events`` events or ``minutes`` minutes.
- :func:`verify_chain` walks the chain, checks every checkpoint's signature (stored rows and a witness
  file's lines) against the trusted keys and compares the recomputed hash at each checkpoint's seq.
- :func:`verify_state` recomputes the row hashes of the covered tables and compares each row with the
  latest event that names it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, insert, select

from roster.errors import NotFound, RosterError, UsageError
from roster.kernel import checkpoints as kc
from roster.kernel.audit import ALL, STATE_TABLES, AuditEvent, first_break, named_rows, row_hash
from roster.store import audit
from roster.store.schema import (
    api_tokens,
    approval_requests,
    audit_checkpoints,
    audit_events,
    principals,
    tasks,
)
from roster.store.witness import KeyRing, Witness, configured_witnesses, key_path, witness_line

if TYPE_CHECKING:
    from roster.store.store import Store

log = logging.getLogger(__name__)

EVERY_EVENTS_ENV = "ROSTER_CHECKPOINT_EVENTS"
EVERY_MINUTES_ENV = "ROSTER_CHECKPOINT_MINUTES"
DEFAULT_EVERY_EVENTS = 1000
DEFAULT_EVERY_MINUTES = 10.0


def _row(cp: Any) -> kc.Checkpoint:
    return kc.Checkpoint(cp.company_id, cp.seq, cp.head, cp.ts, cp.key_id, cp.signature)


def stored(conn: Connection, company: str) -> list[kc.Checkpoint]:
    """The stored checkpoints of ``company``, oldest first."""
    query = (select(audit_checkpoints).where(audit_checkpoints.c.company_id == company)
             .order_by(audit_checkpoints.c.seq, audit_checkpoints.c.key_id))
    return [_row(r) for r in conn.execute(query)]


def make_checkpoint(store: Store, company: str, key: Ed25519PrivateKey) -> kc.Checkpoint:
    """Sign ``company``'s current chain head with ``key`` and store the checkpoint (an existing one for
    the same seq and key is returned as it is). Raises :class:`NotFound` for an unknown company."""
    with store.write() as conn:
        head = audit.read_head(conn, company)
        if head is None:
            raise NotFound(f"no company '{company}' in this store")
        kid = kc.key_id(key.public_key())
        existing = conn.execute(select(audit_checkpoints).where(
            audit_checkpoints.c.company_id == company, audit_checkpoints.c.seq == head.audit_seq,
            audit_checkpoints.c.key_id == kid)).first()
        if existing is not None:
            return _row(existing)
        checkpoint = kc.sign(key, company=company, seq=head.audit_seq, head=head.audit_head, ts=store.now())
        conn.execute(insert(audit_checkpoints), {
            "company_id": company, "seq": checkpoint.seq, "key_id": checkpoint.key_id, "head": checkpoint.head,
            "ts": checkpoint.ts, "signature": checkpoint.signature})
    return checkpoint


def export(checkpoint: kc.Checkpoint, key: Ed25519PublicKey, witnesses: Iterable[Witness]) -> list[str]:
    """Send ``checkpoint`` to each witness; returns what failed, one message per witness (empty: all
    took it). A failed witness does not stop the others."""
    failures = []
    line = witness_line(checkpoint, key)
    for target in witnesses:
        try:
            target.send(line)
        except RosterError as exc:
            failures.append(f"{target.name}: {exc}")
    return failures


# -- verification -------------------------------------------------------------------------------------


@dataclass
class CheckpointResult:
    """One checkpoint as verified: where it came from (``stored`` or the witness file), and ``problem``."""

    checkpoint: kc.Checkpoint
    source: str
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.checkpoint.to_dict(), "source": self.source, "valid": self.problem is None,
                "problem": self.problem}


@dataclass
class ChainReport:
    """What :func:`verify_chain` found. ``broken`` is the first bad ``(seq, reason)`` of the events;
    ``checkpoints`` each checkpoint's result; ``unwitnessed`` how many events follow the newest valid
    checkpoint (the window a database writer could still rewrite unseen)."""

    company: str
    events: int
    head_seq: int
    broken: tuple[int, str] | None
    checkpoints: list[CheckpointResult] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = [f"seq {self.broken[0]}: {self.broken[1]}"] if self.broken else []
        return found + [f"checkpoint {r.checkpoint.seq} ({r.source}): {r.problem}" for r in self.checkpoints
                        if r.problem]

    @property
    def newest(self) -> CheckpointResult | None:
        valid = [r for r in self.checkpoints if r.problem is None]
        return max(valid, key=lambda r: r.checkpoint.seq) if valid else None

    @property
    def unwitnessed(self) -> int:
        newest = self.newest
        return self.head_seq - (newest.checkpoint.seq if newest else 0)

    def to_dict(self) -> dict[str, Any]:
        newest = self.newest
        return {"company": self.company, "events": self.events, "head_seq": self.head_seq,
                "valid": not self.problems, "problems": self.problems,
                "checkpoints": [r.to_dict() for r in self.checkpoints],
                "newest_checkpoint": newest.to_dict() if newest else None, "unwitnessed_events": self.unwitnessed}


def verify_chain(store: Store, company: str, trusted: Mapping[str, Ed25519PublicKey],
                 witnessed: Iterable[kc.Checkpoint] = (), witness_name: str = "witness") -> ChainReport:
    """Walk ``company``'s chain (see :func:`roster.kernel.audit.first_break`) and check each stored and
    ``witnessed`` checkpoint: its signature against ``trusted`` (key id -> public key), then the
    recomputed hash at its seq (a rewrite) and the chain's length (a truncation)."""
    with store.read() as conn:
        head = conn.execute(select(audit.companies.c.audit_seq, audit.companies.c.audit_head)
                            .where(audit.companies.c.id == company)).first()
        if head is None:
            raise NotFound(f"no company '{company}' in this store")
        rows = [(cp, "stored") for cp in stored(conn, company)]
        rows += [(cp, witness_name) for cp in witnessed if cp.company == company]
        wanted = {cp.seq for cp, _ in rows}
        hash_at: dict[int, str] = {}
        counted = 0

        def walk() -> Iterator[AuditEvent]:
            nonlocal counted
            for event in audit.iter_events(conn, company):
                counted += 1
                if event.seq in wanted:
                    hash_at[event.seq] = event.hash
                yield event

        broken = first_break(walk(), head=(head.audit_seq, head.audit_head))
    # Up to the first break every stored hash was recomputed and matched: those are the chain's.
    chain_end = (broken[0] - 1) if broken else counted
    results = []
    for cp, source in rows:
        problem = kc.check(cp, trusted)
        if problem is None and cp.company != company:
            problem = f"it is a checkpoint of company '{cp.company}'"
        if problem is None:
            problem = kc.compare(cp, chain_end, {s: h for s, h in hash_at.items() if s <= chain_end})
        results.append(CheckpointResult(cp, source, problem))
    return ChainReport(company, counted, head.audit_seq, broken, results)


@dataclass(frozen=True)
class StateProblem:
    """A row of a covered table that does not match the chain: ``what`` says how."""

    table: str
    key: str
    what: str

    def to_dict(self) -> dict[str, str]:
        return {"table": self.table, "key": self.key, "what": self.what}

    def __str__(self) -> str:
        return f"{self.table} {self.key}: {self.what}"


_TABLES = {"tasks": (tasks, "id"), "principals": (principals, "handle"), "api_tokens": (api_tokens, "id"),
           "approval_requests": (approval_requests, "id")}


def verify_state(store: Store, company: str) -> tuple[int, list[StateProblem]]:
    """Compare every row of the covered tables (:data:`~roster.kernel.audit.STATE_TABLES`) with the hash
    the latest event naming it recorded. Returns ``(rows checked, problems)``: a row whose hash differs
    (edited outside roster), a row no event names (inserted outside roster), a row an event recorded
    that is gone (deleted). A row named only by events from before state hashes (no ``state``) is skipped."""
    latest: dict[tuple[str, str], tuple[int, str | None]] = {}
    with store.read() as conn:
        query = (select(audit_events.c.seq, audit_events.c.state)
                 .where(audit_events.c.company_id == company, audit_events.c.state.is_not(None))
                 .order_by(audit_events.c.seq).execution_options(yield_per=1000))
        for seq, state in conn.execute(query):
            try:
                entries = json.loads(state)
            except ValueError:
                continue  # verify_chain reports the edited event
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, list) and len(entry) == 3:
                    latest[(str(entry[0]), str(entry[1]))] = (seq, entry[2])
        legacy = _legacy_refs(conn, company)
        problems: list[StateProblem] = []
        checked = 0
        seen: set[tuple[str, str]] = set()
        for name in STATE_TABLES:
            table, key = _TABLES[name]
            for row in conn.execute(select(table).where(table.c.company_id == company).order_by(table.c[key])):
                checked += 1
                values = dict(row._mapping)
                ref = (name, str(values[key]))
                seen.add(ref)
                recorded = latest.get(ref)
                if recorded is None:
                    if ref in legacy or (name == "principals" and (name, ALL) in legacy):
                        continue  # produced by an event from before state hashes: nothing to compare with
                    problems.append(StateProblem(name, ref[1], "no audit event records this row (it was "
                                                 "inserted outside roster)"))
                    continue
                seq, expected = recorded
                actual = row_hash(name, values)
                if expected is None:
                    problems.append(StateProblem(name, ref[1], f"event {seq} recorded no such row, yet it exists"))
                elif actual != expected:
                    problems.append(StateProblem(name, ref[1], f"differs from the row event {seq} produced "
                                                 f"(hash {actual[:12]} now, {expected[:12]} recorded): "
                                                 f"edited outside roster; {_changed(conn, company, seq, values)}"))
    for (name, key), (seq, expected) in sorted(latest.items()):
        if expected is not None and (name, key) not in seen:
            problems.append(StateProblem(name, key, f"event {seq} recorded this row but it is gone (deleted "
                                         "outside roster)"))
    return checked, problems


def _legacy_refs(conn: Connection, company: str) -> set[tuple[str, str]]:
    """The rows named by events written before state hashes (``state`` NULL; migration 0014): their own
    refs, and for a token the event that issued it (``data.token_id``), not every token of its principal."""
    refs: set[tuple[str, str]] = set()
    query = (select(audit_events.c.action, audit_events.c.subject, audit_events.c.data)
             .where(audit_events.c.company_id == company, audit_events.c.state.is_(None))
             .execution_options(yield_per=1000))
    for action, subject, raw in conn.execute(query):
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        refs.update(named_rows(action, subject, data))
        if isinstance(data, dict) and isinstance(data.get("token_id"), str):
            refs.add(("api_tokens", data["token_id"]))
    return refs


def _changed(conn: Connection, company: str, seq: int, values: dict[str, Any]) -> str:
    """A hint at what differs: the columns whose current value the event's data contradicts."""
    row = conn.execute(select(audit_events.c.data).where(audit_events.c.company_id == company,
                                                         audit_events.c.seq == seq)).first()
    try:
        data = json.loads(row.data) if row is not None else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    aliases = {"to": "state"}
    differs = []
    for name, value in data.items():
        column = aliases.get(name, name)
        if column in values and column not in ("fields",) and values[column] != value:
            differs.append(f"{column} is {values[column]!r}, event {seq} says {value!r}")
    return "; ".join(differs) if differs else "the event's data does not say which column"


# -- automatic checkpoints ----------------------------------------------------------------------------


def _setting(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name} must be a number (0 turns it off), not {raw!r}") from None
    if value < 0:
        raise UsageError(f"{name} must be 0 or more, not {raw!r}")
    return value


@dataclass
class AutoCheckpoints:
    """After each commit that advanced a company's chain, sign a checkpoint once ``events`` events (default
    1000, ``$ROSTER_CHECKPOINT_EVENTS``) or ``minutes`` minutes (default 10, ``$ROSTER_CHECKPOINT_MINUTES``)
    have passed since that company's last one, and send it to ``witnesses``. 0 turns a trigger off. A
    failure is logged and never fails the commit that triggered it."""

    key_loader: Any  # () -> Ed25519PrivateKey (the KeyRing's private_key)
    witnesses: list[Witness] = field(default_factory=list)
    events: int = DEFAULT_EVERY_EVENTS
    minutes: float = DEFAULT_EVERY_MINUTES
    _last: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_env(cls, key_loader: Any, witnesses: list[Witness]) -> AutoCheckpoints:
        return cls(key_loader, witnesses, int(_setting(EVERY_EVENTS_ENV, DEFAULT_EVERY_EVENTS)),
                   _setting(EVERY_MINUTES_ENV, DEFAULT_EVERY_MINUTES))

    def due(self, store: Store, company: str, seq: int) -> bool:
        last = self._last.get(company)
        if last is None:
            with store.read() as conn:
                row = conn.execute(select(audit_checkpoints.c.seq, audit_checkpoints.c.ts)
                                   .where(audit_checkpoints.c.company_id == company)
                                   .order_by(audit_checkpoints.c.seq.desc()).limit(1)).first()
            last = (row.seq, _parse(row.ts)) if row else (0, store.clock())
            self._last[company] = last
        if seq <= last[0]:
            return False
        if self.events and seq - last[0] >= self.events:
            return True
        return bool(self.minutes) and store.clock() - last[1] >= timedelta(minutes=self.minutes)

    def __call__(self, store: Store, saved: Mapping[str, tuple[int, str]]) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another thread is checkpointing; the next commit tries again
        try:
            for company, (seq, _) in saved.items():
                if not self.due(store, company, seq):
                    continue
                try:
                    key = self.key_loader()
                    checkpoint = make_checkpoint(store, company, key)
                    self._last[company] = (checkpoint.seq, store.clock())
                    for failure in export(checkpoint, key.public_key(), self.witnesses):
                        log.warning("audit checkpoint %s of %s not witnessed: %s", checkpoint.seq, company, failure)
                except Exception as exc:  # noqa: BLE001 - the commit that triggered it has succeeded: never fail it
                    log.warning("automatic audit checkpoint of %s failed: %s: %s", company, type(exc).__name__, exc)
        finally:
            self._lock.release()


def _parse(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def attach(store: Store, auto: AutoCheckpoints) -> None:
    """Run ``auto`` after each of ``store``'s commits that saved a chain head."""
    store.after_commit_hooks.append(auto)


def attach_default(store: Store, state_dir: Path) -> AutoCheckpoints:
    """Automatic checkpoints for a workspace's store: the key of :func:`~roster.store.witness.key_path`
    (created on the first checkpoint), the witnesses of ``$ROSTER_AUDIT_WITNESS``, the intervals of
    ``$ROSTER_CHECKPOINT_EVENTS`` and ``$ROSTER_CHECKPOINT_MINUTES``. Raises :class:`UsageError` for a
    bad setting."""
    auto = AutoCheckpoints.from_env(KeyRing(key_path(state_dir)).private_key, configured_witnesses())
    attach(store, auto)
    return auto
