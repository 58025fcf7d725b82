"""Hand-off between principals: hold, edit, release, and the diff the next one sees.

A human (or an agent) *holds* a task: it takes the task's lease as a principal, for up to
:data:`MAX_HOLD_SECONDS`, so agents wait (the dispatcher skips leased tasks). While holding, it may edit
the task's fields outside any transition (:meth:`HandoffVerbs.edit_fields`, validated against the
workflow's schema) and save new artifact versions. It then *releases* the task with a note.

What each principal last saw of a task is kept in ``task_views``: the audit seq, the task's version,
its fields and its artifact versions, recorded when a run of that principal ends and when it releases a
hold. The next brief of that principal carries :meth:`HandoffVerbs.handoff_txn`: who changed what since
then, the field changes (before and after), a unified diff of each changed artifact, and the notes and
rationales left. The same works from agent to agent.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from roster.errors import InvalidFields, NotFound, StaleVersion, UsageError
from roster.kernel.contracts import apply_writes
from roster.kernel.rights import Resource
from roster.store import audit
from roster.store.artifacts import MAX_DIFF_LINES, ArtifactRecord, artifact_record, unified_diff
from roster.store.company_base import ActorRef, CompanyCache
from roster.store.corrections import record_revert_txn
from roster.store.delegation import DelegationVerbs
from roster.store.dialects import Dialect
from roster.store.leases import Lease
from roster.store.prepared import Prepared
from roster.store.schema import artifacts, audit_events, task_views, tasks
from roster.store.tasks import MAX_FIELDS_BYTES, SELECT_TASK, Task, check_size, dump_json, task_from_row

_VIEW_KEY = (task_views.c.company_id == bindparam("company"), task_views.c.task_id == bindparam("task_id"),
             task_views.c.principal == bindparam("principal"))
_VIEW = Prepared(select(task_views.c.seq, task_views.c.version, task_views.c.fields, task_views.c.artifacts,
                        task_views.c.seen_at).where(*_VIEW_KEY))


@functools.cache
def _upsert_view(dialect: Dialect) -> Prepared:
    """Insert a principal's view of a task, or update the one it has: one statement (built on first use)."""
    values = {name: bindparam(name) for name in ("task_id", "principal", *_VIEW_CHANGES)}
    return Prepared(dialect.upsert(task_views, {"company_id": bindparam("company"), **values},
                                   key=("company_id", "task_id", "principal"), update=_VIEW_CHANGES))


_VIEW_CHANGES = ("seq", "version", "fields", "artifacts", "seen_at")


_LATEST_ARTIFACT_IDS = Prepared(select(artifacts.c.name, func.max(artifacts.c.id).label("id")).where(
    artifacts.c.company_id == bindparam("company"), artifacts.c.task_id == bindparam("task_id"))
    .group_by(artifacts.c.name))
_WINDOW = Prepared(
    select(audit_events.c.seq, audit_events.c.ts, audit_events.c.principal, audit_events.c.action,
           audit_events.c.data)
    .where(audit_events.c.company_id == bindparam("company"), audit_events.c.subject == bindparam("subject"),
           audit_events.c.seq > bindparam("after_seq"), audit_events.c.principal != bindparam("principal"))
    .order_by(audit_events.c.seq.desc()).limit(bindparam("limit")))

DEFAULT_HOLD_SECONDS = 8 * 3600.0
MAX_HOLD_SECONDS = 7 * 86400.0
HANDOFF_EVENTS = 20
"""At most this many of the changes since the last view are listed (the newest); the count says how many."""
HANDOFF_WINDOW = 250
"""How many of the newest changes since the last view are read: ``changes``, ``changed_by`` and ``notes``
come from them (``more_changes`` says the window was full), so a hand-off costs the same after 10 or
100,000 changes."""
HANDOFF_NOTES = 10
"""The newest notes (hold, release, edit notes and transition rationales) since the last view."""
NOTE_ACTIONS = ("task.hold", "task.handoff", "task.edit", "task.transition", "approval.request")
HANDOFF_DIFF_LINES = 200
"""Lines of each artifact's diff shown in a hand-off (the whole diff: ``roster artifact diff``)."""


class HandoffVerbs(DelegationVerbs):
    """Hold, edit, release and the hand-off diff (mixed into ``CompanyStore``)."""

    def hold(self, task_id: int, *, actor: ActorRef, ttl: float = DEFAULT_HOLD_SECONDS, note: str = "") -> Lease:
        """Take the task's lease as a principal for ``ttl`` seconds (default 8 h, at most 7 days), so no
        agent works on it meanwhile. Needs ``claim`` (as :meth:`claim`) and ``hold`` on the task's
        workflow (granted with ``write``: a hold exists to edit; a read-only agent may not keep others off
        a task). Raises :class:`LeaseHeld` (someone else holds
        it), :class:`NotFound`, :class:`Denied`, :class:`UsageError` (ttl)."""
        handle = self._handle(actor)

        def noted(conn: Connection, head: audit.ChainHead, lease: Lease, task: Task) -> None:
            cache = self._refresh_txn(conn, head)
            self._authorize(cache, cache.actors[lease.holder], "hold", Resource("workflow", task.workflow))
            audit.append(conn, head, ts=self.store.now(), principal=lease.holder, action="task.hold",
                         subject=f"task:{task_id}", data={"note": note, "expires_at": lease.expires_at,
                                                          "fencing_token": lease.fencing_token})

        return self.claim(task_id, actor=actor, run_id=f"hold:{handle}"[:64], ttl=ttl, then=noted,
                          max_ttl=MAX_HOLD_SECONDS)

    def release_hold(self, task_id: int, *, actor: ActorRef, note: str = "") -> None:
        """Give back a held task with a ``note`` for whoever works on it next (it goes into their brief
        with the diff of what changed). Raises :class:`UsageError` if the actor does not hold it,
        :class:`StaleFencingToken` if its hold was taken over."""
        task = self.get_task(task_id, actor=actor)
        handle = self._handle(actor)
        if task.lease_holder != handle or not (task.lease_run or "").startswith("hold:"):
            holder = f"'{task.lease_holder}'" if task.lease_holder else "nobody"
            raise UsageError(f"task {task_id} is not held by '{handle}' (held by {holder}); "
                             f"hold it first with `roster task hold {task_id}`")

        def noted(conn: Connection, head: audit.ChainHead) -> None:
            audit.append(conn, head, ts=self.store.now(), principal=handle, action="task.handoff",
                         subject=f"task:{task_id}", data={"note": note})
            self.record_view_txn(conn, head, task_id, handle)

        self.release(task_id, actor=actor, fencing_token=task.fencing_token, then=noted)

    def edit_fields(self, task_id: int, writes: dict[str, Any], *, actor: ActorRef, note: str = "",
                    expected_version: int | None = None, fencing_token: int | None = None) -> Task:
        """Change fields outside a transition (``None`` removes one). Only the principal that holds the
        task's lease may (a hold, or a run with its ``fencing_token``), with ``write`` on its workflow.
        Raises :class:`UsageError` (not held by the actor), :class:`InvalidFields` (schema),
        :class:`StaleVersion`, :class:`PayloadTooLarge`, :class:`Denied`, :class:`LeaseHeld`."""
        request = {"fields": sorted(writes)}
        try:
            with self._evidence_write(task_id, actor, "task.edit", request, fencing_token=fencing_token) as write:
                check_size("field edits", writes, MAX_FIELDS_BYTES)
                task = write.task
                live = task.lease_holder == write.actor.handle and (task.lease_expires_at or "") > write.now
                if not live:
                    raise UsageError(f"task {task_id} can be edited outside a transition only while you hold "
                                     f"it; `roster task hold {task_id}` first")
                if expected_version is not None and expected_version != task.version:
                    raise StaleVersion(task_id, expected_version, task.version)
                machine = self._machine(write.cache, task.workflow)
                new_fields = apply_writes(task.fields, writes)
                problems = machine.field_problems(new_fields)
                if problems:
                    raise InvalidFields(task.workflow, problems)
                version = task.version + 1
                write.conn.execute(
                    tasks.update().where(tasks.c.company_id == self.company, tasks.c.id == task_id),
                    {"fields": dump_json(new_fields), "version": version, "updated_at": write.now})
                if write.actor.kind == "human":  # a human's edit under a hold reverts what an agent wrote
                    assert write.cache.spec is not None
                    record_revert_txn(write.conn, self.company, write.cache.spec, workflow=task.workflow,
                                      task_id=task_id, fields=sorted(writes), by=write.actor.handle, now=write.now)
                audit.append(write.conn, write.head, ts=write.now, principal=write.actor.handle,
                             action="task.edit", subject=f"task:{task_id}",
                             data={"writes": writes, "note": note, "version": version})
        except InvalidFields as exc:  # not among _evidence_write's refusals, but a refusal all the same
            self._audit_rejection(actor, "task.edit", f"task:{task_id}", exc, request)
            raise
        return self.get_task(task_id)

    # -- what a principal last saw, and what changed since -------------------------------------------

    def record_view_txn(self, conn: Connection, head: audit.ChainHead, task_id: int, principal: str,
                        task: Task | None = None) -> None:
        """Remember what ``principal`` has seen of the task: now (the chain head) and its current state
        (``task``, when the caller has it as of this transaction; read otherwise)."""
        key = {"company": self.company, "task_id": task_id}
        if task is not None:
            version, fields = task.version, dump_json(task.fields)
        else:
            row = SELECT_TASK.first(conn, key)
            if row is None:
                raise NotFound(f"no task {task_id} in company '{self.company}'")
            version, fields = row.version, row.fields
        seen = {r.name: r.id for r in _LATEST_ARTIFACT_IDS.all(conn, key)}
        values = {**key, "principal": principal, "seq": head.audit_seq, "version": version,
                  "fields": fields, "artifacts": json.dumps(seen, sort_keys=True), "seen_at": self.store.now()}
        _upsert_view(self.store.dialect).rowcount(conn, values)

    def handoff_txn(self, conn: Connection, cache: CompanyCache, task: Task, principal: str) -> dict[str, Any] | None:
        """What others changed on ``task`` since ``principal`` last saw it, or ``None`` (never seen, or
        nothing changed). Bounded: it reads the newest :data:`HANDOFF_WINDOW` changes, lists the newest
        :data:`HANDOFF_EVENTS`, and cuts each artifact diff to :data:`HANDOFF_DIFF_LINES` lines."""
        view = _VIEW.first(conn, {"company": self.company, "task_id": task.id, "principal": principal})
        if view is None or view.version == task.version:
            return None
        # One bounded read: the newest HANDOFF_WINDOW changes by others since the view, newest first; only
        # the events that can carry a note have their data parsed.
        window = _WINDOW.all(conn, {"company": self.company, "subject": f"task:{task.id}", "after_seq": view.seq,
                                    "principal": principal, "limit": HANDOFF_WINDOW})
        if not window:  # only this principal's own changes since: nothing to hand off
            return None
        recent = list(reversed(window[:HANDOFF_EVENTS]))
        changed_by = sorted({e.principal for e in window})
        notes = []
        for e in window:
            if e.action in NOTE_ACTIONS and len(notes) < HANDOFF_NOTES:
                data = json.loads(e.data)
                if data.get("note") or data.get("rationale"):
                    notes.append({"by": e.principal, "at": e.ts, "note": data.get("note") or data.get("rationale")})
        notes.reverse()
        before = json.loads(view.fields)
        fields = {name: {"before": before.get(name), "after": task.fields.get(name)}
                  for name in sorted(set(before) | set(task.fields)) if before.get(name) != task.fields.get(name)}
        seen = json.loads(view.artifacts)
        artifacts = []
        for name, latest in sorted(self.latest_artifacts_txn(conn, task.id).items()):
            if seen.get(name) == latest.id:
                continue
            old = self._artifact_by_id_txn(conn, seen[name]) if name in seen else None
            artifacts.append({"name": name, "kind": latest.kind, "from_version": old.version if old else None,
                              "to_version": latest.version, "by": latest.created_by, "reason": latest.reason,
                              "diff": self._diff_txn(name, old, latest)})
        return {"since_version": view.version, "version": task.version, "seen_at": view.seen_at,
                "changed_by": changed_by, "changes": len(window),
                "more_changes": len(window) == HANDOFF_WINDOW,
                "events": [{"seq": e.seq, "at": e.ts, "by": e.principal, "action": e.action} for e in recent],
                "fields": fields, "artifacts": artifacts, "notes": notes}

    def _artifact_by_id_txn(self, conn: Connection, artifact_id: int) -> ArtifactRecord | None:
        row = conn.execute(select(artifacts).where(artifacts.c.company_id == self.company,
                                                   artifacts.c.id == artifact_id)).first()
        return artifact_record(row) if row is not None else None

    def _diff_txn(self, name: str, old: ArtifactRecord | None, new: ArtifactRecord) -> str:
        if self.store.blobs is None:
            return ""
        try:
            old_content = self.store.blobs.get(self.company, old.sha256) if old else b""
            new_content = self.store.blobs.get(self.company, new.sha256)
        except Exception as exc:  # noqa: BLE001 - a corrupt blob must not stop the brief; say so instead
            return f"(diff unavailable: {exc})\n"
        return unified_diff(name, old, old_content, new, new_content, max_lines=min(HANDOFF_DIFF_LINES,
                                                                                     MAX_DIFF_LINES))

    def handoff(self, task_id: int, principal: str, *, actor: ActorRef | None = None) -> dict[str, Any] | None:
        """:meth:`handoff_txn` in a read of its own (``roster context`` shows it)."""
        with self._reading(actor, "task.read", f"task:{task_id}") as (conn, cache, who):
            task = task_from_row(self.task_row_txn(conn, task_id))
            self._may_read(cache, who, task.workflow)
            if principal not in cache.principals:
                raise NotFound(f"no principal '{principal}' in company '{self.company}'")
            return self.handoff_txn(conn, cache, task, principal)
