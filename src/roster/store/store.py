"""The durable store: applying specs, and the company-scoped handle through which all task work goes.

:class:`Store` owns the engine and the transaction discipline; :class:`~roster.store.tasks.CompanyStore`
(from :meth:`Store.company`) owns the verbs on one company's rows. Every public write is one transaction
around ``_..._txn(conn, ...)`` helpers, so helpers compose inside a single transaction.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rfc8785
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import DBAPIError, OperationalError

from roster.errors import ApplyRefused, Denied, NotFound, StoreBusy, StoreUnavailable
from roster.kernel.audit import GENESIS_HASH
from roster.kernel.contracts import WorkflowMachine
from roster.kernel.rights import Resource
from roster.kernel.spec import CompanySpec
from roster.store import audit, faults, text_guard
from roster.store.blobs import BlobStore, FileBlobStore
from roster.store.dialects import dialect_of
from roster.store.engine import DEFAULT_LOCK_TIMEOUT, make_engine, migrate
from roster.store.schema import artifacts, companies, principals, spec_revisions, tasks

if TYPE_CHECKING:
    from roster.store.company import CompanyStore, Session

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_ts(moment: datetime) -> str:
    """ISO 8601 UTC with microseconds and ``Z``: the one timestamp format stored."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass(frozen=True)
class ApplyResult:
    """What :meth:`Store.apply` did. ``changes`` lists human-readable differences from the last revision."""

    company: str
    revision: int
    changed: bool
    changes: list[str]


class Store:
    """A Roster database. Open with :meth:`open`; get a company's handle with :meth:`company`.

    ``clock`` returns the current time (tests pass their own); ``artifact_root`` is the directory where
    artifact content is kept by SHA-256, one directory per company (a
    :class:`~roster.store.blobs.FileBlobStore`); ``blobs`` is any other :class:`~roster.store.blobs.BlobStore`.
    With neither, no artifact content can be saved.
    """

    def __init__(self, engine: Engine, *, clock: Clock = utc_now, artifact_root: Path | None = None,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT, blobs: BlobStore | None = None) -> None:
        self.engine = engine
        text_guard.install(engine)  # no NUL reaches a text column (issue 15)
        self.clock = clock
        self.artifact_root = artifact_root
        self.blobs = blobs if blobs is not None else (FileBlobStore(artifact_root) if artifact_root else None)
        self._handles: dict[str, CompanyStore] = {}
        self.lock_timeout = lock_timeout
        self._local = threading.local()  # per thread: the pinned connection and the read it has open
        self.dialect = dialect_of(engine)
        """What differs between SQLite and PostgreSQL (:mod:`roster.store.dialects`)."""
        self._driver_disconnects = self.dialect.disconnect_errors(engine)
        self._work_listeners: list[Callable[[str], None]] = []
        self.after_commit_hooks: list[Callable[[Store, dict[str, tuple[int, str]]], None]] = []
        """Called after a commit that saved chain heads, with company -> (seq, hash) (audit checkpoints)."""
        self._writer = self.dialect.writer_lock()

    @classmethod
    def open(cls, url: str, *, clock: Clock = utc_now, artifact_root: Path | None = None,
             lock_timeout: float = DEFAULT_LOCK_TIMEOUT, blobs: BlobStore | None = None) -> Store:
        """Open (creating and migrating as needed) the database at ``url``.

        Raises :class:`StoreBusy` if another process holds the lock for longer than ``lock_timeout`` s.
        """
        engine = make_engine(url, lock_timeout=lock_timeout)
        store = cls(engine, clock=clock, artifact_root=artifact_root, lock_timeout=lock_timeout, blobs=blobs)
        with store.translate_errors():
            migrate(engine)
            store._adopt_legacy_blobs()
        return store

    def _adopt_legacy_blobs(self) -> None:
        """Move blobs left in the shared layout of stores written before blobs were kept per company into
        the directory of each company whose artifacts name them (see :mod:`roster.store.blobs`)."""
        if not isinstance(self.blobs, FileBlobStore):
            return
        digests = self.blobs.legacy_digests()
        if not digests:
            return
        owners: list[tuple[str, str]] = []
        with self.read() as conn:
            for start in range(0, len(digests), 500):
                owners += [(r.company_id, r.sha256) for r in conn.execute(
                    select(artifacts.c.company_id, artifacts.c.sha256).distinct()
                    .where(artifacts.c.sha256.in_(digests[start:start + 500])))]
        self.blobs.adopt_legacy(owners)

    def close(self) -> None:
        """Give the pool's connections back to the server. :attr:`closed` tells background work (a
        dispatcher left running by its owner) to stop instead of opening new ones."""
        self.closed = True
        self.engine.dispose()

    closed = False
    """Whether :meth:`close` was called."""

    def now(self) -> str:
        return format_ts(self.clock())

    # -- transactions -------------------------------------------------------------------------------

    @contextmanager
    def translate_errors(self) -> Iterator[None]:
        """Turn the driver's "database is locked" into :class:`StoreBusy`, and a database server that
        cannot be reached (a dropped connection, a restart) into :class:`StoreUnavailable`, each with a
        way out. Either way nothing of the failed transaction was kept."""
        try:
            yield
        except (OperationalError, sqlite3.OperationalError) as exc:
            # Raw driver errors come from the statements store/prepared.py runs on the cursor.
            driver_error = exc.orig if isinstance(exc, OperationalError) else exc
            if self.dialect.lock_timed_out(driver_error):
                raise StoreBusy(
                    f"the database {self.engine.url.database} is locked by another process; waited "
                    f"{self.lock_timeout:g} s. Let the other roster command finish, or raise the wait with "
                    "--lock-timeout / ROSTER_LOCK_TIMEOUT. Nothing was changed."
                ) from None
            if self.dialect.server:
                raise self._unavailable(driver_error) from None
            raise
        except DBAPIError as exc:
            if self.dialect.server and (exc.connection_invalidated
                                                         or isinstance(exc.orig, self._driver_disconnects)):
                raise self._unavailable(exc.orig) from None
            raise
        except self._driver_disconnects as exc:  # raw from the cursor (store/prepared.py)
            raise self._unavailable(exc) from None

    def _unavailable(self, error: BaseException | None) -> StoreUnavailable:
        text = str(error or "").strip()
        first_line = text.splitlines()[0] if text else type(error).__name__
        return StoreUnavailable(
            f"the database server at {self.engine.url.host}:{self.engine.url.port} cannot be reached "
            f"({first_line}). Nothing of the failed transaction was kept; check that the server is up "
            "(roster up waits for it and goes on).")

    def is_database_error(self, error: BaseException) -> bool:
        """Whether ``error`` came from the database driver (a statement failed). On PostgreSQL the
        transaction it ran in is aborted: it must not be carried on and committed."""
        return isinstance(error, (DBAPIError, self.engine.dialect.loaded_dbapi.Error))

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite). Commits on success, rolls back on error.
        A committed transaction that made work for agents (:func:`~roster.store.audit.note_work`) then
        calls the listeners of :meth:`on_work`."""
        woke: set[str] = set()
        saved = None
        with self._one_writer(), self.translate_errors(), self._connection() as conn:
            conn.execution_options(sqlite_begin="IMMEDIATE")  # in place (SQLAlchemy 2): set on every begin
            try:
                with conn.begin():
                    yield conn
                    audit.before_commit(conn)  # events appended without save_head: hash and write them
                    if faults.ARMED: faults.hit("store.before_commit")  # tests only (store/faults.py)
                if faults.ARMED: faults.hit("store.after_commit")  # committed, not yet acknowledged
                woke = conn.info.pop("roster_work", set())
                saved = conn.info.pop("roster_saved_heads", None)
            finally:
                conn.info.pop("roster_work", None)
                audit.forget(conn)
        if saved:
            for hook in list(self.after_commit_hooks):
                hook(self, saved)
        for company in woke:
            for listener in list(self._work_listeners):
                listener(company)

    @contextmanager
    def _one_writer(self) -> Iterator[None]:
        """On SQLite, this process's threads take turns to write on a lock of their own: queued on
        SQLite's file lock instead, a waiting thread sleeps in SQLite's busy handler (1, 2, 5, 10 ms...)
        long after the lock is free, which cost a fleet's runs ~1.7 ms each. Other processes still queue
        on the file lock. Waits at most ``lock_timeout`` seconds, like the file lock."""
        if self._writer is None:
            yield
            return
        if not self._writer.acquire(timeout=self.lock_timeout):
            raise StoreBusy(f"another thread of this process kept the database {self.engine.url.database} busy "
                            f"for {self.lock_timeout:g} s; raise the wait with --lock-timeout / "
                            "ROSTER_LOCK_TIMEOUT. Nothing was changed.")
        try:
            yield
        finally:
            self._writer.release()

    def on_work(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(company_id)`` after each committed write that made work for that company's agents
        (in the writing thread: it must be quick, such as setting an event). Returns how to stop."""
        self._work_listeners.append(listener)
        return lambda: self._work_listeners.remove(listener)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read transaction: a consistent snapshot. Inside :meth:`pinned`, a read nested in another
        read of the same thread joins it (one snapshot for both)."""
        local = self._local
        joined = getattr(local, "reading", None)
        if joined is not None:
            yield joined
            return
        with self.translate_errors(), self._connection() as conn:
            conn.execution_options(sqlite_begin="DEFERRED")
            with conn.begin():
                pinned = conn is getattr(local, "pinned", None)
                if pinned:
                    local.reading = conn
                try:
                    yield conn
                finally:
                    if pinned:
                        local.reading = None

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Keep one connection for this thread's transactions while the block runs (the dispatcher's
        cycle): checking a connection out of the pool and back costs ~25 us per transaction, more than
        an empty transaction itself. A transaction opened while the pinned one is busy (a write inside
        a write) takes a pooled connection as usual. Nested in another ``pinned`` block it keeps the outer
        block's connection; other threads are unaffected."""
        if getattr(self._local, "pinned", None) is not None:
            yield
            return
        with self.translate_errors(), self.engine.connect() as conn:
            self._local.pinned = conn
            try:
                yield
            finally:
                self._local.pinned = self._local.reading = None

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """The thread's pinned connection when it is free, else one from the pool (returned after)."""
        pinned = getattr(self._local, "pinned", None)
        if pinned is not None and not pinned.in_transaction():
            yield pinned
            return
        with self.engine.connect() as conn:
            yield conn

    # -- companies and specs ------------------------------------------------------------------------

    def companies(self) -> list[str]:
        with self.read() as conn:
            return list(conn.scalars(select(companies.c.id).order_by(companies.c.id)))

    def company(self, company_id: str) -> CompanyStore:
        """The handle for one company's rows. Raises :class:`NotFound` if no spec was applied for it."""
        from roster.store.company import CompanyStore  # noqa: PLC0415 - company.py builds on this module

        with self.read() as conn:
            exists = conn.scalar(select(companies.c.id).where(companies.c.id == company_id))
        if exists is None:
            raise NotFound(f"no company '{company_id}' in this store; run 'roster apply' with its spec first")
        return CompanyStore(self, company_id)

    def shared_company(self, company_id: str) -> CompanyStore:
        """One long-lived handle per company, shared by every request of a server, so the compiled spec
        and rights are cached across requests (each handle refreshes itself when a revision moves)."""
        from roster.store.company import CompanyStore  # noqa: PLC0415 - company.py builds on this module

        handle = self._handles.get(company_id)
        if handle is None:
            handle = self._handles.setdefault(company_id, CompanyStore(self, company_id))
        return handle

    def session(self, token: str) -> Session:
        """Authenticate an API token: the :class:`~roster.store.company.Session` of its principal.
        Raises :class:`~roster.errors.Unauthenticated` (audited in the token's company, if it has one)."""
        from roster.store.company import authenticate  # noqa: PLC0415 - company.py builds on this module

        return authenticate(self, token)

    def apply(self, spec: CompanySpec, *, applied_by: str) -> ApplyResult:
        """Load ``spec`` into the store. Idempotent: the same spec twice changes nothing (no new revision,
        no audit event). Principals removed from the spec are retired, never deleted.

        Raises :class:`ApplyRefused` if live tasks would be orphaned: their workflow or state removed,
        their fields invalid under the new schema, or their owner removed.
        """
        spec_json = spec.model_dump(mode="json", by_alias=True)
        spec_hash = hashlib.sha256(rfc8785.dumps(spec_json)).hexdigest()
        try:
            return self._apply(spec, spec_json, spec_hash, applied_by)
        except (ApplyRefused, Denied) as exc:
            with self.write() as conn:
                head = audit.read_head(conn, spec.company)
                if head is not None:
                    audit.append(conn, head, ts=self.now(), principal=applied_by, action="spec.apply.rejected",
                                 subject=f"company:{spec.company}", data={"spec_hash": spec_hash,
                                                                          "error": exc.to_dict()})
                    audit.save_head(conn, head)
            raise

    def _check_admin_txn(self, conn: Connection, head: audit.ChainHead, applied_by: str) -> None:
        """Changing an existing company's spec needs ``admin`` on it (humans have it; agents never)."""
        from roster.store.company import CompanyStore  # noqa: PLC0415 - company.py builds on this module

        decision = CompanyStore(self, head.company).decide_txn(conn, head, applied_by, "admin",
                                                               Resource("company", head.company))
        if not decision.allowed:
            raise Denied(applied_by, "apply a spec to", "this company", decision.explain(), decision.policies)

    def _apply(self, spec: CompanySpec, spec_json: dict[str, Any], spec_hash: str, applied_by: str) -> ApplyResult:
        with self.write() as conn:
            now = self.now()
            head = audit.read_head(conn, spec.company)
            if head is None:
                conn.execute(insert(companies), {
                    "id": spec.company, "display_name": spec.display_name, "spec_revision": 0, "task_seq": 0,
                    "audit_seq": 0, "audit_head": GENESIS_HASH, "created_at": now,
                })
                head = audit.ChainHead(spec.company, 0, GENESIS_HASH, 0, 0)
                old = None
            else:
                old = load_spec_txn(conn, spec.company, head.spec_revision)
                old_hash = conn.scalar(select(spec_revisions.c.spec_hash).where(
                    spec_revisions.c.company_id == spec.company, spec_revisions.c.revision == head.spec_revision))
                if old_hash == spec_hash:
                    return ApplyResult(spec.company, head.spec_revision, False, [])
                self._check_admin_txn(conn, head, applied_by)
                refusals = _orphan_problems(conn, spec.company, old, spec)
                if refusals:
                    raise ApplyRefused(refusals)
            revision = head.spec_revision + 1
            changes = describe_changes(old, spec)
            conn.execute(insert(spec_revisions), {
                "company_id": spec.company, "revision": revision, "spec_hash": spec_hash,
                "spec_json": json.dumps(spec_json, sort_keys=True), "applied_by": applied_by, "applied_at": now,
            })
            conn.execute(update(companies).where(companies.c.id == spec.company),
                         {"spec_revision": revision, "display_name": spec.display_name})
            head.spec_revision = revision
            head.rights_revision += 1
            _sync_principals(conn, spec, now)
            audit.append(conn, head, ts=now, principal=applied_by, action="spec.apply",
                         subject=f"company:{spec.company}",
                         data={"revision": revision, "spec_hash": spec_hash, "changes": changes})
            audit.save_head(conn, head)
        return ApplyResult(spec.company, revision, True, changes)


def load_spec_txn(conn: Connection, company: str, revision: int) -> CompanySpec:
    """Spec revision ``revision`` of ``company``, as stored. A revision stored before runner blocks were
    checked (issue 14) may hold a runner block that no longer validates (an unknown key, an unknown model
    provider): such an agent never ran then, and it loads without a runner now, rather than the whole
    company failing to open; ``roster validate`` and ``roster apply`` of the corrected spec say what to fix."""
    from pydantic import ValidationError  # noqa: PLC0415 - pydantic is loaded already; the name only here

    text = conn.scalar(select(spec_revisions.c.spec_json).where(
        spec_revisions.c.company_id == company, spec_revisions.c.revision == revision))
    data = json.loads(text)
    try:
        return CompanySpec.model_validate(data)
    except ValidationError as exc:
        broken = {str(e["loc"][1]) for e in exc.errors() if e["loc"][:1] == ("agents",) and "runner" in e["loc"]}
        if not broken:
            raise
        for handle in broken:
            data["agents"][handle]["runner"] = None
        return CompanySpec.model_validate(data)


def _sync_principals(conn: Connection, spec: CompanySpec, now: str) -> None:
    existing = {row.handle: row for row in conn.execute(
        select(principals).where(principals.c.company_id == spec.company))}
    wanted: dict[str, dict[str, Any]] = {}
    for kind, people in (("agent", spec.agents), ("human", spec.humans)):
        for handle, person in people.items():
            wanted[handle] = {"kind": kind, "display_name": person.display_name or handle,
                              "roles": json.dumps(sorted(person.roles)), "reports_to": person.reports_to}
    for handle, values in wanted.items():
        row = existing.get(handle)
        if row is None:
            conn.execute(insert(principals), {"company_id": spec.company, "handle": handle, "status": "active",
                                              "created_at": now, **values})
        else:  # status is the kill switch's, not the spec's: retired stays retired (retire is permanent)
            conn.execute(update(principals).where(principals.c.company_id == spec.company,
                                                  principals.c.handle == handle), {**values, "source": "spec"})
    for handle in set(existing) - set(wanted):
        if existing[handle].source == "spec":
            conn.execute(update(principals).where(principals.c.company_id == spec.company,
                                                  principals.c.handle == handle), {"status": "retired"})


def _orphan_problems(conn: Connection, company: str, old: CompanySpec, new: CompanySpec) -> list[str]:
    problems: list[str] = []
    new_handles = set(new.agents) | set(new.humans)
    rows = conn.execute(select(tasks.c.id, tasks.c.workflow, tasks.c.state, tasks.c.fields, tasks.c.owner)
                        .where(tasks.c.company_id == company).order_by(tasks.c.id))
    machines: dict[str, WorkflowMachine] = {}
    for row in rows:
        old_wf = old.workflows.get(row.workflow)
        if old_wf is not None and row.state in old_wf.terminal_states():
            continue  # finished tasks keep their history but are not live
        new_wf = new.workflows.get(row.workflow)
        if new_wf is None:
            problems.append(f"task {row.id} is live in workflow '{row.workflow}', which the new spec removes")
            continue
        if row.state not in new_wf.states:
            problems.append(f"task {row.id} is in state '{row.state}' of workflow '{row.workflow}', which the "
                            "new spec removes")
        machine = machines.setdefault(row.workflow, WorkflowMachine(row.workflow, new_wf))
        invalid = machine.field_problems(json.loads(row.fields))
        if invalid:
            problems.append(f"task {row.id}'s fields would no longer match workflow '{row.workflow}': "
                            + "; ".join(invalid))
        if row.owner is not None and row.owner not in new_handles:
            problems.append(f"task {row.id} is owned by '{row.owner}', whom the new spec removes")
    return problems


def describe_changes(old: CompanySpec | None, new: CompanySpec) -> list[str]:
    """Human-readable differences between two specs, section by section (``agents: + scout``)."""
    if old is None:
        return [f"company '{new.company}' created"]
    changes: list[str] = []
    for section in ("workspaces", "workflows", "agents", "humans", "tools", "kpis"):
        before, after = getattr(old, section), getattr(new, section)
        for name in sorted(set(after) - set(before)):
            changes.append(f"{section}: + {name}")
        for name in sorted(set(before) - set(after)):
            changes.append(f"{section}: - {name}")
        for name in sorted(set(before) & set(after)):
            if before[name] != after[name]:
                changes.append(f"{section}: ~ {name}")
    if old.display_name != new.display_name:
        changes.append("display_name changed")
    return changes
