"""One company's tasks: create, read, transition under contract, and the evidence contracts look at.

Every method is scoped to the company the handle was made for; no query here runs without
``company_id = :company``. Every write appends to the audit chain in the same transaction, and every
refused write appends a ``*.rejected`` event in a transaction of its own, after the refused one has been
rolled back, so the refusal is on record and the task is unchanged.

Limits (bytes, of the UTF-8 JSON or raw content): :data:`MAX_FIELDS_BYTES` for a task's fields or a
transition's writes, :data:`MAX_TITLE_CHARS` for a title (artifacts: the spec's ``limits.artifact_bytes``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from roster.errors import (
    ContractViolation,
    Denied,
    InvalidFields,
    LeaseHeld,
    NotFound,
    PayloadTooLarge,
    StaleFencingToken,
    StaleVersion,
    UsageError,
)
from roster.kernel.audit import AuditEvent
from roster.kernel.contracts import Actor, Evidence, TaskSnapshot, Violation, apply_writes
from roster.kernel.spec import Approval
from roster.kernel.stages import ASSIST_APPROVAL
from roster.kernel.rights import Resource
from roster.kernel.values import check_json
from roster.store import audit
from roster.store.approvals import OpenedRequest, stale_requests_txn
from roster.store.company_base import ActorRef, CompanyBase, CompanyCache, recorded_handle
from roster.store.corrections import record_failed_check_txn, record_return_txn
from roster.store.shadows import compare_shadows_txn
from roster.store.stages import refuse_shadow
from roster.store.goal_links import wake_goal_of_task_txn
from roster.store.kpis import latest_reading_txn
from roster.store.prepared import Prepared
from roster.store.schema import artifacts, check_results, tasks

MAX_FIELDS_BYTES = 65_536
"""Largest task ``fields`` document, or set of writes in one transition, as compact UTF-8 JSON (64 KiB)."""
MAX_TITLE_CHARS = 500
MAX_IDEMPOTENCY_KEY_CHARS = 255


# Hot-path statements are built once: building a statement per call costs more than running it.
SELECT_TASK = Prepared(
    select(tasks).where(tasks.c.company_id == bindparam("company"), tasks.c.id == bindparam("task_id")))
_UPDATE_TASK = Prepared(
    update(tasks)
    .where(tasks.c.company_id == bindparam("company"), tasks.c.id == bindparam("task_id"),
           tasks.c.version == bindparam("expected_version"))
    .values(state=bindparam("state"), fields=bindparam("fields"), version=bindparam("version"),
            updated_at=bindparam("updated_at"))
)
_ARTIFACT_KINDS = Prepared(select(artifacts.c.kind).where(artifacts.c.company_id == bindparam("company"),
                                                          artifacts.c.task_id == bindparam("task_id")))
# Every check result of a task, oldest first: a later result of a check replaces an earlier one.
_CHECKS = Prepared(select(check_results.c.name, check_results.c.passed, check_results.c.detail)
                   .where(check_results.c.company_id == bindparam("company"),
                          check_results.c.task_id == bindparam("task_id"))
                   .order_by(check_results.c.id))
# A parent's delegated children. No ORDER BY (they are sorted in Python): with one, SQLite walks every
# task of the company by primary key instead of seeking the (company, parent_id) index.
_CHILD_ROWS = Prepared(select(tasks).where(tasks.c.company_id == bindparam("company"),
                                           tasks.c.parent_id == bindparam("parent_id")))


@dataclass(frozen=True)
class Task:
    """A task as stored. ``fields`` is the typed payload; ``version`` increases by one on every write."""

    company: str
    id: int
    workflow: str
    state: str
    title: str
    fields: dict[str, Any]
    owner: str | None
    priority: int
    parent_id: int | None
    idempotency_key: str | None
    version: int
    created_by: str
    created_at: str
    updated_at: str
    fencing_token: int = 0
    """The fencing token of the latest claim (0: never claimed)."""
    lease_holder: str | None = None
    lease_run: str | None = None
    lease_expires_at: str | None = None
    packet: dict[str, Any] | None = None
    """The delegation packet of a delegated child task (``None`` otherwise)."""

    def snapshot(self) -> TaskSnapshot:
        return TaskSnapshot(self.id, self.workflow, self.state, self.fields, self.version)


@dataclass(frozen=True)
class TransitionOption:
    """A transition as ``task show`` presents it: where it goes, who may take it, and what blocks it now."""

    name: str
    to: str
    by: list[str]
    blocked: list[Violation] = field(default_factory=list)

    @property
    def possible(self) -> bool:
        return not self.blocked


class TaskVerbs(CompanyBase):
    """Verbs on one company's tasks and their evidence (mixed into ``CompanyStore``).

    Every verb takes the acting principal (``actor``: a :class:`Principal` from authentication, or a
    handle of this company for trusted in-process callers) and checks its rights before anything else.
    Read verbs accept ``actor=None`` for trusted internal reads, which skip the rights check.
    """

    # -- tasks --------------------------------------------------------------------------------------

    def create_task(self, *, workflow: str, title: str, actor: ActorRef, fields: Mapping[str, Any] | None = None,
                    owner: str | None = None, priority: int = 0, parent_id: int | None = None,
                    idempotency_key: str | None = None, packet: Mapping[str, Any] | None = None) -> tuple[Task, bool]:
        """Create a task in ``workflow``'s initial state. Returns ``(task, created)``. ``packet`` is a
        delegation packet (see :mod:`roster.store.delegation`), kept with a child task.

        If ``idempotency_key`` was used before in this company, returns ``(existing task, False)`` and
        writes nothing. Raises :class:`InvalidFields` (schema), :class:`PayloadTooLarge`,
        :class:`NotFound` (workflow, owner or parent), :class:`Denied` (rights: ``read`` then ``create``
        on the workflow).
        """
        fields = dict(fields or {})
        request = {"workflow": workflow, "title": title, "owner": owner, "priority": priority,
                   "parent_id": parent_id, "idempotency_key": idempotency_key}
        try:
            if packet is not None:
                check_size("delegation packet", packet, MAX_FIELDS_BYTES)
            check_size("task fields", fields, MAX_FIELDS_BYTES)
            if len(title) > MAX_TITLE_CHARS:
                raise PayloadTooLarge("task title", len(title.encode()), MAX_TITLE_CHARS)
            if idempotency_key is not None and len(idempotency_key) > MAX_IDEMPOTENCY_KEY_CHARS:
                raise PayloadTooLarge("idempotency key", len(idempotency_key.encode()), MAX_IDEMPOTENCY_KEY_CHARS)
            with self.store.write() as conn:
                return self._create_txn(conn, actor=actor, fields=fields, packet=packet, **request)
        except (InvalidFields, *_REFUSALS) as exc:
            self._audit_rejection(actor, "task.create", f"workflow:{workflow}", exc, request)
            raise

    def _create_txn(self, conn: Connection, *, workflow: str, title: str, actor: ActorRef, fields: dict[str, Any],
                    owner: str | None, priority: int, parent_id: int | None,
                    idempotency_key: str | None, packet: Mapping[str, Any] | None = None) -> tuple[Task, bool]:
        head, cache = self._head_txn(conn)
        who = self._actor(cache, actor)
        machine = self._machine(cache, workflow)
        self._authorize(cache, who, "read", Resource("workflow", workflow))
        self._authorize(cache, who, "create", Resource("workflow", workflow))
        if idempotency_key is not None:
            row = conn.execute(select(tasks).where(tasks.c.company_id == self.company,
                                                   tasks.c.idempotency_key == idempotency_key)).first()
            if row is not None:
                return task_from_row(row), False
        machine.check_new_fields(fields)
        if owner is not None and owner not in cache.actors:
            raise NotFound(f"owner '{owner}' is not a principal of company '{self.company}'")
        if parent_id is not None:
            self._may_read(cache, who, task_from_row(self.task_row_txn(conn, parent_id)).workflow)
        now = self.store.now()
        head.task_seq += 1
        row = {"company_id": self.company, "id": head.task_seq, "workflow": workflow,
               "state": machine.workflow.initial, "title": title, "fields": dump_json(fields), "owner": owner,
               "priority": priority, "parent_id": parent_id, "idempotency_key": idempotency_key, "version": 1,
               "created_by": who.handle, "created_at": now, "updated_at": now,
               "packet": dump_json(packet) if packet is not None else None}
        conn.execute(insert(tasks), row)
        data = {"workflow": workflow, "state": row["state"], "title": title, "fields": fields, "owner": owner,
                "priority": priority, "parent_id": parent_id, "idempotency_key": idempotency_key, "version": 1}
        if packet is not None:
            data["packet"] = dict(packet)
        audit.append(conn, head, ts=now, principal=who.handle, action="task.create", subject=f"task:{head.task_seq}",
                     data=data)
        audit.save_head(conn, head)
        return _task_from(row, fields), True

    def get_task(self, task_id: int, *, actor: ActorRef | None = None) -> Task:
        """The task with id ``task_id``. Raises :class:`NotFound`, :class:`Denied` (``read``)."""
        with self._reading(actor, "task.read", f"task:{task_id}") as (conn, cache, who):
            task = task_from_row(self.task_row_txn(conn, task_id))
            self._may_read(cache, who, task.workflow)
            return task

    def task_row_txn(self, conn: Connection, task_id: int) -> Any:
        """Task ``task_id``'s row as of ``conn``'s transaction. Raises :class:`NotFound`."""
        row = SELECT_TASK.first(conn, {"company": self.company, "task_id": task_id})
        if row is None:
            raise NotFound(f"no task {task_id} in company '{self.company}'; list tasks with 'roster task list'")
        return row

    def task_counts(self, *, workflow: str | None = None) -> dict[str, int]:
        """How many tasks are in each state (of ``workflow``, or of all workflows), by state: one grouped
        query, for progress lines and status (a trusted read)."""
        query = (select(tasks.c.state, func.count()).where(tasks.c.company_id == self.company)
                 .group_by(tasks.c.state).order_by(tasks.c.state))
        if workflow is not None:
            query = query.where(tasks.c.workflow == workflow)
        with self.store.read() as conn:
            return {state: int(count) for state, count in conn.execute(query)}

    def list_tasks(self, *, workflow: str | None = None, state: str | None = None, owner: str | None = None,
                   after_id: int = 0, limit: int = 100, actor: ActorRef | None = None) -> list[Task]:
        """Tasks in id order, filtered; ``after_id`` is the cursor (the last id of the previous page).
        With ``actor``, only tasks of workflows that principal may read are listed."""
        query = select(tasks).where(tasks.c.company_id == self.company, tasks.c.id > after_id)
        if workflow is not None:
            query = query.where(tasks.c.workflow == workflow)
        if state is not None:
            query = query.where(tasks.c.state == state)
        if owner is not None:
            query = query.where(tasks.c.owner == owner)
        with self._reading(actor, "task.list", f"company:{self.company}") as (conn, cache, who):
            if who is not None:
                assert cache.rights is not None
                readable = [w for w in cache.machines
                            if self._decide(cache, who.handle, "read", Resource("workflow", w)).allowed]
                query = query.where(tasks.c.workflow.in_(readable))
            return [task_from_row(r) for r in conn.execute(query.order_by(tasks.c.id).limit(limit))]

    def transition(self, task_id: int, name: str, *, actor: ActorRef, expected_version: int,
                   writes: Mapping[str, Any] | None = None, rationale: str = "",
                   fencing_token: int | None = None,
                   then: Callable[[Connection, audit.ChainHead, CompanyCache, Task], None] | None = None) -> Task:
        """Move a task along transition ``name``, writing ``writes`` (``None`` values remove a field).

        The kernel checks the whole contract (see :mod:`roster.kernel.contracts`) inside the write
        transaction, between two rights checks: ``read`` on the workflow first (so a principal who may
        not see the task learns nothing of its state), then ``transition`` once the contract holds.
        Raises :class:`StaleVersion`, :class:`ContractViolation` (naming the clause), :class:`Denied`,
        :class:`PayloadTooLarge` or :class:`NotFound`; in each case the task is unchanged and the
        attempt is audited as ``task.transition.rejected``. A run that holds the task's lease passes its
        ``fencing_token``; a stale one raises :class:`StaleFencingToken`, and a write without a token to a
        task another principal holds a live lease on raises :class:`LeaseHeld`. On an approval edge, once
        everything else
        holds, it opens an approval request (``rationale`` is shown to the approver) and raises
        :class:`ApprovalPending` instead: the transition runs when the request is approved. ``then`` runs
        in the same transaction once the transition is made (not when a request is opened), with the task
        as it now is (lease columns included): the runtime ends the run and releases its lease there, so
        the move and the release commit together.
        """
        writes = dict(writes or {})
        try:
            check_size("transition writes", writes, MAX_FIELDS_BYTES)
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                result = self.transition_txn(conn, head, cache, task_id, name, actor, expected_version, writes,
                                              rationale=rationale, fencing_token=fencing_token)
                if then is not None and not isinstance(result, OpenedRequest):
                    then(conn, head, cache, result)
                audit.save_head(conn, head)
        except _REFUSALS as exc:
            self._audit_rejection(actor, "task.transition", f"task:{task_id}", exc,
                                  _transition_request(name, expected_version, writes))
            raise
        if isinstance(result, OpenedRequest):
            raise result.error()
        return result

    @contextmanager
    def batch(self) -> Iterator[TransitionBatch]:
        """Many transitions in one database transaction (group commit), for bulk drivers.

        Each transition is still judged against its full contract and audited one by one; a refused one
        is audited inside the batch and raised to the caller, who may go on with the next. Everything in
        the batch commits together when the block exits, or nothing does if the block raises.
        """
        with self.store.write() as conn:
            head, cache = self._head_txn(conn)
            yield TransitionBatch(self, conn, head, cache)
            audit.save_head(conn, head)

    def transition_txn(self, conn: Connection, head: audit.ChainHead, cache: CompanyCache, task_id: int, name: str,
                        actor: ActorRef, expected_version: int, writes: dict[str, Any], *, rationale: str = "",
                        approver: Actor | None = None, request_id: int | None = None,
                        fencing_token: int | None = None) -> Task | OpenedRequest:
        """Judge and commit one transition inside ``conn``'s transaction. On an approval edge with no
        ``approver``, opens (or finds) the approval request and returns it instead; ``approve_request``
        calls back with the ``approver`` to run it."""
        who = self._actor(cache, actor)
        task = task_from_row(self.task_row_txn(conn, task_id))
        self._may_read(cache, who, task.workflow)
        if approver is None:  # an approved request runs whatever lease the task has now
            self._check_lease(task, who, fencing_token)
        machine = self._machine(cache, task.workflow)
        transition = machine.transition(name)
        refuse_shadow(cache, who, "transition", task.workflow)
        evidence = self.evidence_txn(conn, cache, task) if machine.needs_evidence(name) else Evidence()
        if approver is not None:
            evidence = dataclasses.replace(evidence, approvals={name: (approver,)})
        relaxed = None
        if (approver is None and transition.approval is not None and transition.approval.relaxable
                and who.kind == "agent" and cache.stage_of(who.handle, task.workflow) == "autonomous"):
            assert cache.spec is not None
            verdict, summary = self.edge_review_txn(conn, cache.spec, task.workflow, name)
            if verdict == "over-reviewed":  # the humans nearly always approve it: an autonomous agent skips it
                evidence, relaxed = dataclasses.replace(evidence, relaxed=frozenset({name})), summary
        try:
            new_fields = machine.check(name, task.snapshot(), who, writes, expected_version, evidence)
        except ContractViolation as exc:
            if exc.clause != "approval" or transition.approval is None:
                raise
            self._authorize(cache, who, "transition", Resource("workflow", task.workflow), name)
            return self._request_transition_txn(conn, head, cache, who, task, name, writes, rationale)
        self._authorize(cache, who, "transition", Resource("workflow", task.workflow), name)
        if approver is None and who.kind == "agent" and cache.stage_of(who.handle, task.workflow) == "assist":
            return self._request_transition_txn(conn, head, cache, who, task, name, writes, rationale,
                                                edge=ASSIST_APPROVAL)
        now = self.store.now()
        updated = _UPDATE_TASK.rowcount(conn, {
            "company": self.company, "task_id": task_id, "expected_version": expected_version,
            "state": transition.to, "fields": dump_json(new_fields), "version": expected_version + 1, "updated_at": now,
        })
        if updated != 1:  # only reachable if a writer bypassed the company lock
            raise StaleVersion(task_id, expected_version, task_from_row(self.task_row_txn(conn, task_id)).version)
        data = {"workflow": task.workflow, "transition": name, "from": task.state, "to": transition.to,
                "writes": writes, "version": expected_version + 1}
        if rationale:
            data["rationale"] = rationale
        if approver is not None:
            data.update(approved_by=approver.handle, approval_request=request_id)
        if relaxed is not None:
            data["relaxed"] = f"approval edge skipped: an autonomous agent, and {relaxed}"
        audit.append(conn, head, ts=now, principal=who.handle, action="task.transition", subject=f"task:{task_id}",
                     data=data)
        assert cache.spec is not None
        record_return_txn(conn, self.company, cache.spec, workflow=task.workflow, task_id=task_id, left=task.state,
                          entered=transition.to, by=who.handle, transition=name, now=now)
        compare_shadows_txn(conn, self.company, task_id=task_id, left=task.state, transition=name, writes=writes)
        if transition.to in machine.terminal:  # a task filed toward a goal finished: the goal looks again now
            wake_goal_of_task_txn(conn, self.company, task_id, now)
        stale_requests_txn(conn, head, cache, company=self.company, task_id=task_id, workflow=task.workflow,
                           by=who.handle, cause=f"transition '{name}'", now=now)
        return dataclasses.replace(task, state=transition.to, fields=new_fields, version=expected_version + 1,
                                   updated_at=now)

    def _check_lease(self, task: Task, who: Actor, fencing_token: int | None) -> None:
        """Fencing: a write with a token must carry the task's current one; a write without a token may not
        touch a task another principal holds a live lease on."""
        if fencing_token is not None:
            if fencing_token != task.fencing_token or task.lease_holder is None:
                raise StaleFencingToken(task.id, fencing_token, task.fencing_token)
            return
        live = task.lease_holder is not None and (task.lease_expires_at or "") > self.store.now()
        if live and task.lease_holder != who.handle:
            raise LeaseHeld(task.id, task.lease_holder, task.lease_expires_at or "")

    def _request_transition_txn(self, conn: Connection, head: audit.ChainHead, cache: CompanyCache, who: Actor,
                                task: Task, name: str, writes: dict[str, Any], rationale: str,
                                edge: Approval | None = None) -> OpenedRequest:
        """Open (or find) the approval request of a transition on an approval edge, or of any transition
        of an agent in stage ``assist`` (``edge``: :data:`ASSIST_APPROVAL`)."""
        assert cache.spec is not None
        workflow = cache.spec.workflows[task.workflow]
        transition = workflow.transitions[name]
        edge = edge or transition.approval
        assert edge is not None
        after = apply_writes(task.fields, writes)
        diff = {k: {"from": task.fields.get(k), "to": after.get(k)}
                for k in sorted(set(task.fields) | set(after)) if task.fields.get(k) != after.get(k)}
        satisfied = ["from", "by", "writes", "fields"] + [
            clause for clause, present in (("requires.fields", transition.requires.fields),
                                           ("requires.artifacts", transition.requires.artifacts),
                                           ("produces", transition.produces),
                                           ("requires.checks", transition.requires.checks)) if present]
        requester = cache.spec.agents.get(who.handle)
        evidence = {"requested_by": who.handle, "task": {"id": task.id, "title": task.title, "state": task.state,
                                                         "version": task.version, "to": transition.to},
                    "fields_diff": diff, "satisfied_clauses": satisfied,
                    "kpis": list(workflow.kpis) or (list(requester.kpis) if requester else []),
                    "rationale": rationale}
        if transition.approval is None:  # an assist-stage agent's move: every one is approved by a human
            evidence["stage"] = "assist"
        evidence.update(self._approval_evidence_txn(conn, task, evidence["kpis"]))
        request_id, created = self.open_request_txn(
            conn, head, who, edge, kind="transition", payload=writes, evidence=evidence,
            rationale=rationale, task_id=task.id, workflow=task.workflow, transition=name, task_version=task.version)
        return OpenedRequest(request_id, tuple(edge.by), created)

    def _approval_evidence_txn(self, conn: Connection, task: Task, kpis: list[str]) -> dict[str, Any]:
        """What an approver sees besides the change itself: the latest result of each check on the task
        (name, passed, detail) and each linked KPI's latest reading (``None`` before any)."""
        checks: dict[str, dict[str, Any]] = {}
        for row in _CHECKS.all(conn, {"company": self.company, "task_id": task.id}):
            checks[row.name] = {"name": row.name, "passed": bool(row.passed), "detail": row.detail}
        latest = {}
        for name in kpis:
            reading = latest_reading_txn(conn, self.company, name)
            latest[name] = None if reading is None else {"value": reading.value, "measured_at": reading.measured_at}
        return {"checks": list(checks.values()), "kpi_latest": latest}

    def options(self, task_id: int, actor: ActorRef | None = None) -> list[TransitionOption]:
        """Every transition of the task's workflow, with the clauses that block it now (for ``task show``).

        With ``actor`` given the ``by`` clause is judged for that principal; otherwise it is skipped.
        """
        with self._reading(actor, "task.read", f"task:{task_id}") as (conn, cache, who):
            task = task_from_row(self.task_row_txn(conn, task_id))
            self._may_read(cache, who, task.workflow)
            machine = cache.machines.get(task.workflow)
            if machine is None:
                return []
            evidence = self.evidence_txn(conn, cache, task)
        return [TransitionOption(name, t.to, list(t.by), machine.blocked_by(name, task.snapshot(), who, evidence))
                for name, t in machine.workflow.transitions.items()]

    def history(self, task_id: int, *, actor: ActorRef | None = None) -> list[AuditEvent]:
        """The task's audit events (creation, transitions, evidence, refusals) in order."""
        with self._reading(actor, "task.read", f"task:{task_id}") as (conn, cache, who):
            self._may_read(cache, who, task_from_row(self.task_row_txn(conn, task_id)).workflow)
            return list(audit.iter_events(conn, self.company, subject=f"task:{task_id}"))

    # -- evidence: artifacts, checks, approvals -----------------------------------------------------

    def children_rows_txn(self, conn: Connection, parent_id: int) -> list[Task]:
        """The tasks delegated from ``parent_id``, oldest first (a trusted read)."""
        rows = _CHILD_ROWS.all(conn, {"company": self.company, "parent_id": parent_id})
        return sorted((task_from_row(row) for row in rows), key=lambda task: task.id)

    def evidence_txn(self, conn: Connection, cache: CompanyCache, task: Task,
                      children: list[Task] | None = None) -> Evidence:
        """What the contract judges besides the task itself: its artifact kinds, the checks whose latest
        result passed, and its open children (``children``: already read in this transaction)."""
        params = {"company": self.company, "task_id": task.id}
        kinds = frozenset(row.kind for row in _ARTIFACT_KINDS.all(conn, params))
        latest: dict[str, bool] = {}
        for row in _CHECKS.all(conn, params):
            latest[row.name] = bool(row.passed)
        children = children if children is not None else self.children_rows_txn(conn, task.id)
        open_children = tuple(child.id for child in children
                              if not finished(cache, child.workflow, child.state))
        return Evidence(kinds, frozenset(n for n, ok in latest.items() if ok), open_children=open_children)

    @contextmanager
    def _evidence_write(self, task_id: int, actor: ActorRef, action: str, request: Mapping[str, Any],
                        right: str = "write", fencing_token: int | None = None) -> Iterator[EvidenceWrite]:
        """One write transaction that adds evidence to a task: yields the locked chain head, the actor and
        the task; the body inserts its row, moves the task's version and appends its event. ``read`` and
        ``right`` on the task's workflow are checked first; once the body is done, the task's pending
        approval requests made at an older version go stale (:func:`stale_requests_txn`). A refusal is
        audited as ``<action>.rejected`` after the rollback, then re-raised."""
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                who = self._actor(cache, actor)
                task = task_from_row(self.task_row_txn(conn, task_id))
                self._may_read(cache, who, task.workflow)
                self._authorize(cache, who, right, Resource("workflow", task.workflow))
                self._check_lease(task, who, fencing_token)
                write = EvidenceWrite(conn, head, cache, who, task, self.store.now())
                yield write
                stale_requests_txn(conn, head, cache, company=self.company, task_id=task_id, workflow=task.workflow,
                                   by=who.handle, cause=action, now=write.now)
                audit.save_head(conn, head)
        except _REFUSALS as exc:
            self._audit_rejection(actor, action, f"task:{task_id}", exc, request)
            raise

    def bump_txn(self, write: EvidenceWrite) -> int:
        """Evidence changed: the task's version goes up, so approvals given before no longer count."""
        write.conn.execute(update(tasks).where(tasks.c.company_id == self.company, tasks.c.id == write.task.id),
                           {"version": write.task.version + 1, "updated_at": write.now})
        return write.task.version + 1

    def assign(self, task_id: int, *, actor: ActorRef, owner: str | None = None, priority: int | None = None,
               expected_version: int | None = None) -> Task:
        """Route a task: set its ``owner`` (a principal of this company) and/or ``priority``. Needs the
        ``assign`` right (coordinators, humans). Bumps the version. Raises :class:`NotFound` (owner),
        :class:`StaleVersion`, :class:`Denied`, :class:`UsageError` (nothing to change)."""
        if owner is None and priority is None:
            raise UsageError("assign needs an owner, a priority, or both")
        request = {"owner": owner, "priority": priority}
        with self._evidence_write(task_id, actor, "task.assign", request, right="assign") as write:
            task = write.task
            if expected_version is not None and expected_version != task.version:
                raise StaleVersion(task_id, expected_version, task.version)
            if owner is not None and owner not in write.cache.principals:
                raise NotFound(f"owner '{owner}' is not a principal of company '{self.company}'")
            values = {"owner": owner if owner is not None else task.owner,
                      "priority": priority if priority is not None else task.priority}
            write.conn.execute(update(tasks).where(tasks.c.company_id == self.company, tasks.c.id == task_id),
                               {**values, "version": task.version + 1, "updated_at": write.now})
            audit.append(write.conn, write.head, ts=write.now, principal=write.actor.handle, action="task.assign",
                         subject=f"task:{task_id}", data={**values, "version": task.version + 1})
        return dataclasses.replace(task, **values, version=task.version + 1, updated_at=write.now)

    def record_check(self, task_id: int, name: str, *, passed: bool, actor: ActorRef, detail: str = "",
                     fencing_token: int | None = None) -> None:
        """Record the result of a named check on the task. The latest result per name counts.
        Bumps the task's version. Raises :class:`NotFound`, :class:`UsageError`."""
        with self._evidence_write(task_id, actor, "check.record", {"name": name, "passed": passed},
                                  fencing_token=fencing_token) as write:
            write.conn.execute(insert(check_results), {
                "company_id": self.company, "task_id": task_id, "name": name, "passed": passed, "detail": detail,
                "recorded_by": write.actor.handle, "created_at": write.now})
            version = self.bump_txn(write)
            if not passed:
                assert write.cache.spec is not None
                record_failed_check_txn(write.conn, self.company, write.cache.spec, workflow=write.task.workflow,
                                        task_id=task_id, state=write.task.state, check=name,
                                        by=write.actor.handle, now=write.now)
            audit.append(write.conn, write.head, ts=write.now, principal=write.actor.handle, action="check.record",
                         subject=f"task:{task_id}",
                         data={"name": name, "passed": passed, "detail": detail, "version": version})

    # -- audit --------------------------------------------------------------------------------------

    def audit_log(self, *, principal: str | None = None, task_id: int | None = None, action: str | None = None,
                  since: str | None = None, until: str | None = None, after_seq: int = 0,
                  limit: int | None = None, actor: ActorRef | None = None,
                  newest_first: bool = False, before_seq: int | None = None) -> list[AuditEvent]:
        """Audit events of this company, filtered (see :func:`roster.store.audit.iter_events`).
        With ``actor``, it needs ``read`` on the whole company (humans have it; agents by grant of ``*``)."""
        subject = f"task:{task_id}" if task_id is not None else None
        with self._reading(actor, "audit.read", f"company:{self.company}") as (conn, cache, who):
            if who is not None:
                self._authorize(cache, who, "read", Resource("company", self.company))
            return list(audit.iter_events(conn, self.company, principal=principal, subject=subject, action=action,
                                          since=since, until=until, after_seq=after_seq, limit=limit,
                                          newest_first=newest_first, before_seq=before_seq))

    def verify_audit(self, *, actor: ActorRef | None = None,
                     progress: Callable[[int], None] | None = None) -> tuple[int, tuple[int, str] | None]:
        """Walk the chain. Returns ``(events checked, (first bad seq, reason) or None)``; ``progress`` is
        told the events checked so far, every 1,000."""
        with self._reading(actor, "audit.verify", f"company:{self.company}") as (conn, cache, who):
            if who is not None:
                self._authorize(cache, who, "read", Resource("company", self.company))
            return audit.verify(conn, self.company, progress)


@dataclass
class EvidenceWrite:
    conn: Connection
    head: audit.ChainHead
    cache: CompanyCache
    actor: Actor
    task: Task
    now: str


class TransitionBatch:
    """The handle :meth:`CompanyStore.batch` yields; its :meth:`transition` has the same contract as
    :meth:`CompanyStore.transition`."""

    def __init__(self, company: TaskVerbs, conn: Connection, head: audit.ChainHead, cache: CompanyCache) -> None:
        self._company, self._conn, self._head, self._cache = company, conn, head, cache

    def transition(self, task_id: int, name: str, *, actor: ActorRef, expected_version: int,
                   writes: Mapping[str, Any] | None = None, fencing_token: int | None = None) -> Task:
        writes = dict(writes or {})
        try:
            check_size("transition writes", writes, MAX_FIELDS_BYTES)
            result = self._company.transition_txn(self._conn, self._head, self._cache, task_id, name, actor,
                                                   expected_version, writes, fencing_token=fencing_token)
        except _REFUSALS as exc:
            audit.append(self._conn, self._head, ts=self._company.store.now(), principal=recorded_handle(self._company.company, actor),
                         action="task.transition.rejected", subject=f"task:{task_id}",
                         data={**_transition_request(name, expected_version, writes), "error": exc.to_dict()})
            raise
        if isinstance(result, OpenedRequest):
            raise result.error()
        return result


_REFUSALS = (ContractViolation, StaleVersion, PayloadTooLarge, NotFound, UsageError, Denied, StaleFencingToken,
             LeaseHeld)


def _transition_request(name: str, expected_version: int, writes: Mapping[str, Any]) -> dict[str, Any]:
    return {"transition": name, "expected_version": expected_version, "written_fields": sorted(writes)}


def dump_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def check_size(what: str, value: Any, limit: int) -> None:
    check_json(what, value)  # nesting and read-back first: a value too deep for json.dumps never reaches it
    size = len(dump_json(value).encode())
    if size > limit:
        raise PayloadTooLarge(what, size, limit)


def finished(cache: CompanyCache, workflow: str, state: str) -> bool:
    """Whether a task in ``state`` of ``workflow`` is finished (a terminal state of a known workflow)."""
    machine = cache.machines.get(workflow)
    return machine is not None and state in machine.terminal


def task_from_row(row: Any) -> Task:
    return Task(row.company_id, row.id, row.workflow, row.state, row.title, json.loads(row.fields), row.owner,
                row.priority, row.parent_id, row.idempotency_key, row.version, row.created_by, row.created_at,
                row.updated_at, row.fencing_token, row.lease_holder, row.lease_run, row.lease_expires_at,
                json.loads(row.packet) if row.packet else None)


def _task_from(row: dict[str, Any], fields: dict[str, Any]) -> Task:
    return Task(row["company_id"], row["id"], row["workflow"], row["state"], row["title"], fields, row["owner"],
                row["priority"], row["parent_id"], row["idempotency_key"], row["version"], row["created_by"],
                row["created_at"], row["updated_at"], packet=json.loads(row["packet"]) if row["packet"] else None)

