"""Approval edges: requests with evidence, the approvers' inbox, approve (which runs the action,
atomically), reject (with a note the requester sees), expiry, and the volume per edge.

A transition or tool call whose spec carries ``approval: {by: [...]}`` does not run when asked: once
every other clause of its contract holds and the requester has the right to it, a request is opened
(or the open one reused) and :class:`~roster.errors.ApprovalPending` is raised. Approving the request
re-checks the whole contract with the approver recorded and commits the transition in the same database
transaction; nobody approves their own request. Every step is an audit event.

Two rules close the loop between requester and approver, each in one function here:

- **A request whose task changed is stale at once** (:func:`stale_requests_txn`): whenever a write moves a
  task's version (a transition, a field edit, an artifact, a check, an assignment, an adoption), its pending
  requests made at an older version become ``stale`` in the same transaction, each with an
  ``approval.stale`` event saying what moved it. Deciding a stale request raises
  :class:`~roster.errors.ApprovalStale`: nothing is left to decide, the requester asks again.
- **Asking again after a rejection needs a change since** (:func:`asks_again_unchanged`): a requester may
  not ask again for a transition an approver rejected while the task is still at the version the rejected
  request was made at and the writes are the same. Opening such a request is refused with
  :class:`~roster.errors.ContractViolation` (clause ``approval.rejected``) and audited; nothing else is
  written. A new version of the task (edit a field, save an artifact, record a check) or different
  writes is a change. The requester's brief shows its rejections and their notes
  (:meth:`ApprovalVerbs.rejections_txn`) and which moves are refused now
  (:meth:`ApprovalVerbs.ask_again_blocked_txn`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, bindparam, func, insert, select, update

from roster.errors import (
    ApprovalPending,
    ApprovalStale,
    ContractViolation,
    Denied,
    NotFound,
    RosterError,
    StaleVersion,
    UsageError,
)
from roster.kernel.contracts import Actor
from roster.kernel.review import review_verdict
from roster.kernel.rights import Resource
from roster.kernel.spec import Approval, duration_seconds
from roster.kernel.stages import ASSIST_APPROVAL
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase, CompanyCache
from roster.store.corrections import record_rejection_txn
from roster.store.prepared import Prepared
from roster.store.schema import approval_requests, tasks
from roster.store.store import format_ts

if TYPE_CHECKING:
    from roster.store.tasks import Task

_REFUSALS = (ContractViolation, StaleVersion, NotFound, UsageError, Denied)

REVIEW_WINDOW_SECONDS = 30 * 86400
"""The default window of :meth:`ApprovalVerbs.approval_stats`: 30 days, in seconds."""


def _window_start(now: datetime, window_seconds: int) -> str:
    """The stored timestamp ``window_seconds`` before ``now``; ``""`` (before every timestamp) for a window
    reaching past the calendar's start."""
    try:
        return format_ts(now - timedelta(seconds=window_seconds))
    except OverflowError:
        return ""


REJECTIONS_SHOWN = 5
"""How many of a requester's rejected requests on one task :meth:`ApprovalVerbs.rejections_txn` returns
(the newest): a brief stays bounded however often it was turned down."""

# A task's pending requests made at a version older than the task's own: the ones a write that moved the
# task makes stale. Over the requests' (company, status) index; only pending requests are looked at.
_OUTDATED = Prepared(
    select(approval_requests.c.id, approval_requests.c.task_version, approval_requests.c.transition,
           approval_requests.c.requested_by, tasks.c.version)
    .join(tasks, and_(tasks.c.company_id == approval_requests.c.company_id, tasks.c.id == approval_requests.c.task_id))
    .where(approval_requests.c.company_id == bindparam("company"), approval_requests.c.status == "pending",
           approval_requests.c.task_id == bindparam("task_id"), approval_requests.c.task_version < tasks.c.version)
    .order_by(approval_requests.c.id))
_REJECTED = (approval_requests.c.company_id == bindparam("company"), approval_requests.c.status == "rejected",
             approval_requests.c.kind == "transition", approval_requests.c.task_id == bindparam("task_id"),
             approval_requests.c.requested_by == bindparam("agent"))
_REJECTION_COLUMNS = (approval_requests.c.id, approval_requests.c.transition, approval_requests.c.note,
                      approval_requests.c.decided_by, approval_requests.c.decided_at,
                      approval_requests.c.task_version, approval_requests.c.payload)
_REJECTIONS = Prepared(select(*_REJECTION_COLUMNS).where(*_REJECTED)
                       .order_by(approval_requests.c.decided_at.desc(), approval_requests.c.id.desc())
                       .limit(bindparam("limit")))
_REJECTIONS_AT = Prepared(select(*_REJECTION_COLUMNS).where(*_REJECTED,
                                                           approval_requests.c.task_version == bindparam("version"))
                          .order_by(approval_requests.c.decided_at.desc(), approval_requests.c.id.desc()))


@dataclass(frozen=True)
class ApprovalRequest:
    """One request. ``evidence`` is what the approver is shown: who asks, the task's state and version,
    the proposed change as a field diff (``{field: {"from": old, "to": new}}``), the contract clauses
    already satisfied, the linked KPIs, and the rationale. Times are ISO 8601 UTC."""

    id: int
    company: str
    kind: str
    task_id: int | None
    workflow: str | None
    transition: str | None
    tool: str | None
    requested_by: str
    task_version: int | None
    payload: dict[str, Any]
    evidence: dict[str, Any]
    rationale: str
    status: str
    decided_by: str | None
    note: str
    created_at: str
    expires_at: str
    decided_at: str | None

    @property
    def edge(self) -> str:
        return f"{self.workflow}.{self.transition}" if self.kind == "transition" else f"tool:{self.tool}"


def _request(row: Any) -> ApprovalRequest:
    return ApprovalRequest(row.id, row.company_id, row.kind, row.task_id, row.workflow, row.transition, row.tool,
                           row.requested_by, row.task_version, json.loads(row.payload), json.loads(row.evidence),
                           row.rationale, row.status, row.decided_by, row.note, row.created_at, row.expires_at,
                           row.decided_at)


def _rejection(row: Any) -> dict[str, Any]:
    return {"request_id": row.id, "transition": row.transition, "note": row.note, "decided_by": row.decided_by,
            "decided_at": row.decided_at, "task_version": row.task_version, "writes": json.loads(row.payload)}


def asks_again_unchanged(rejection: Mapping[str, Any], task_version: int,
                         writes: Mapping[str, Any] | None = None) -> bool:
    """The one rule for asking again after a rejection: whether asking for ``rejection["transition"]``
    again now would be the very move an approver turned down, with nothing changed since.

    ``rejection`` is one of :meth:`ApprovalVerbs.rejections_txn`'s dicts; ``task_version`` is the task's
    version now; ``writes`` the writes asked for (``None``: any writes, as a brief judges it before the
    agent chose them). It holds (asking again is refused) while the task is still at the version the
    rejected request was made at and the writes are the same. A change since the rejection is either a
    new version of the task (a field edit, an artifact saved, a check recorded, an assignment) or
    different writes."""
    return rejection["task_version"] == task_version and (writes is None or dict(writes) == rejection["writes"])


def ask_again_refusal(rejection: Mapping[str, Any], task_version: int) -> str:
    """Why asking again is refused now and what would change that: one sentence for the requester (the
    brief, the ``approval.rejected`` error)."""
    writes = json.dumps(rejection["writes"], sort_keys=True)
    if len(writes) > 200:
        writes = writes[:197] + "..."
    return (f"request {rejection['request_id']} for '{rejection['transition']}' with writes {writes} was rejected "
            f"by {rejection['decided_by']} at {rejection['decided_at']} with the note \"{rejection['note']}\", and "
            f"the task has not changed since (still version {task_version}). Asking again for the same move is "
            "refused until something changes: act on the note by changing the task (a new version: edit a "
            "field, save an artifact, record a check) or ask with different writes")


def stale_requests_txn(conn: Connection, head: audit.ChainHead, cache: CompanyCache, *, company: str,
                       task_id: int, workflow: str, by: str, cause: str, now: str) -> list[int]:
    """The one rule for a request whose task changed: call it in the transaction of every write that moved
    task ``task_id``'s version (its workflow ``workflow``), once the new version is written. Each pending
    request on the task made at an older version becomes ``stale`` there and then: ``decided_by`` is
    ``by`` (who moved the task), ``note`` says from which version to which and by what (``cause``, the
    action: ``task.transition``, ``check.record``, ...), and an ``approval.stale`` event is appended.
    The commit wakes the dispatchers (the requester may ask again). Returns the ids made stale.

    Costs nothing for a workflow without approval edges: it cannot have such requests."""
    assert cache.spec is not None
    spec = cache.spec.workflows.get(workflow)
    if spec is None or not any(t.approval is not None for t in spec.transitions.values()):
        return []
    rows = _OUTDATED.all(conn, {"company": company, "task_id": task_id})
    for row in rows:
        why = (f"task {task_id} moved from version {row.task_version} to {row.version} "
               f"({cause} by '{by}') after the request was made")
        conn.execute(update(approval_requests).where(approval_requests.c.company_id == company,
                                                     approval_requests.c.id == row.id),
                     {"status": "stale", "decided_by": by, "note": why, "decided_at": now})
        audit.append(conn, head, ts=now, principal=by, action="approval.stale", subject=f"approval:{row.id}",
                     data={"task_id": task_id, "transition": row.transition, "requested_by": row.requested_by,
                           "from_version": row.task_version, "to_version": row.version, "cause": cause,
                           "why": why})
    if rows:
        audit.note_work(conn, company)
    return [row.id for row in rows]


class ApprovalVerbs(CompanyBase):
    """Approval requests (mixed into ``CompanyStore``, after the task verbs it calls back into)."""

    # -- opening ------------------------------------------------------------------------------------

    def open_request_txn(self, conn: Connection, head: audit.ChainHead, who: Actor, edge: Approval, *,
                          kind: str, payload: dict[str, Any], evidence: dict[str, Any], rationale: str,
                          task_id: int | None = None, workflow: str | None = None, transition: str | None = None,
                          tool: str | None = None, task_version: int | None = None) -> tuple[int, bool]:
        """Open a request, or find the same pending one (same edge, requester, task version and payload).
        Returns ``(request id, created)``. For a transition an approver already rejected with these writes
        at this version of the task, raises :class:`ContractViolation` (clause ``approval.rejected``; see
        :func:`asks_again_unchanged`)."""
        if kind == "transition":
            assert task_id is not None and task_version is not None
            for rejection in self._rejections_at_txn(conn, task_id, who.handle, task_version):
                if rejection["transition"] == transition and asks_again_unchanged(rejection, task_version, payload):
                    raise ContractViolation(workflow=workflow or "-", transition=transition or "-",
                                            clause="approval.rejected",
                                            detail=ask_again_refusal(rejection, task_version), task_id=task_id)
        same = select(approval_requests.c.id, approval_requests.c.payload).where(
            approval_requests.c.company_id == self.company, approval_requests.c.status == "pending",
            approval_requests.c.kind == kind, approval_requests.c.requested_by == who.handle,
            approval_requests.c.expires_at > self.store.now())
        if kind == "transition":
            same = same.where(approval_requests.c.task_id == task_id, approval_requests.c.transition == transition,
                              approval_requests.c.task_version == task_version)
        else:
            same = same.where(approval_requests.c.tool == tool)
        for row in conn.execute(same):
            if json.loads(row.payload) == payload:
                return row.id, False
        now = self.store.clock()
        expires = now + timedelta(seconds=duration_seconds(edge.expires_in))
        request_id = conn.execute(insert(approval_requests), {
            "company_id": self.company, "kind": kind, "task_id": task_id, "workflow": workflow,
            "transition": transition, "tool": tool, "requested_by": who.handle, "task_version": task_version,
            "payload": json.dumps(payload, sort_keys=True), "evidence": json.dumps(evidence, sort_keys=True),
            "rationale": rationale, "status": "pending", "note": "", "created_at": format_ts(now),
            "expires_at": format_ts(expires)}).inserted_primary_key[0]
        audit.append(conn, head, ts=format_ts(now), principal=who.handle, action="approval.request",
                     subject=f"task:{task_id}" if kind == "transition" else f"tool:{tool}",
                     data={"request_id": request_id, "edge": f"{workflow}.{transition}" if kind == "transition"
                           else f"tool:{tool}", "approvers": list(edge.by), "expires_at": format_ts(expires),
                           "evidence": evidence})
        return request_id, True

    def _edge(self, cache: CompanyCache, request: ApprovalRequest) -> Approval:
        assert cache.spec is not None
        if request.kind == "transition":
            workflow = cache.spec.workflows.get(request.workflow or "")
            transition = workflow.transitions.get(request.transition or "") if workflow else None
            edge = transition.approval if transition else None
            if edge is None and transition is not None and request.evidence.get("stage") == "assist":
                edge = ASSIST_APPROVAL  # an assist-stage agent's move: the edge is its stage's, not the spec's
        else:
            tool = cache.spec.tools.get(request.tool or "")
            edge = tool.approval if tool else None
        if edge is None:
            raise UsageError(f"request {request.id}: its approval edge {request.edge} no longer exists in the spec")
        return edge

    # -- reading ------------------------------------------------------------------------------------

    def get_request(self, request_id: int, *, actor: ActorRef | None = None) -> ApprovalRequest:
        """One request of this company. Its requester and those who may decide it (humans included) may
        read it; to anyone else it does not exist (:class:`NotFound`)."""
        self.expire_requests()
        with self._reading(actor, "approval.read", f"approval:{request_id}") as (conn, cache, who):
            request = self._request_txn(conn, request_id)
            if who is not None and who.handle != request.requested_by and not self._may_decide(cache, who, request):
                raise NotFound(f"no approval request {request_id} in company '{self.company}'")
            return request

    def _may_decide(self, cache: CompanyCache, who: Actor, request: ApprovalRequest) -> bool:
        """Whether ``who`` could decide ``request``: named by the edge, not the requester, and allowed by
        its rights (``read`` then ``approve`` on the workflow, or ``approve`` on the tool)."""
        try:
            edge = self._edge(cache, request)
        except UsageError:
            return False
        if not who.matches(edge.by):
            return False
        try:
            self._authorize_decision(cache, who, request)
        except Denied:
            return False
        return True

    def _authorize_decision(self, cache: CompanyCache, who: Actor, request: ApprovalRequest) -> None:
        """Raise :class:`Denied` unless ``approve`` is allowed (``read`` first, on a transition's
        workflow); nobody decides their own request (``separation-of-duties``, context ``own_request``)."""
        own = who.handle == request.requested_by
        why = "nobody approves their own request (separation of duties)" if own else ""
        if request.kind == "transition":
            self._may_read(cache, who, request.workflow or "")
            self._authorize(cache, who, "approve", Resource("workflow", request.workflow or ""),
                            request.transition or "", why=why, own_request=own)
        else:
            self._authorize(cache, who, "approve", Resource("tool", request.tool or ""), why=why, own_request=own)

    def _request_txn(self, conn: Connection, request_id: int) -> ApprovalRequest:
        row = conn.execute(select(approval_requests).where(approval_requests.c.company_id == self.company,
                                                           approval_requests.c.id == request_id)).first()
        if row is None:
            raise NotFound(f"no approval request {request_id} in company '{self.company}'")
        return _request(row)

    def rejections_txn(self, conn: Connection, task_id: int, agent: str) -> list[dict[str, Any]]:
        """``agent``'s rejected requests for transitions of task ``task_id``, newest decision first, at most
        :data:`REJECTIONS_SHOWN`, inside ``conn``'s transaction (a trusted read: the caller checked the
        agent may read the task). Each is ``{"request_id", "transition", "note", "decided_by",
        "decided_at" (ISO 8601 UTC), "task_version" (the version the request was made at), "writes"}``."""
        rows = _REJECTIONS.all(conn, {"company": self.company, "task_id": task_id, "agent": agent,
                                      "limit": REJECTIONS_SHOWN})
        return [_rejection(row) for row in rows]

    def _rejections_at_txn(self, conn: Connection, task_id: int, agent: str, version: int) -> list[dict[str, Any]]:
        """``agent``'s rejected requests on task ``task_id`` made at ``version``, newest first."""
        rows = _REJECTIONS_AT.all(conn, {"company": self.company, "task_id": task_id, "agent": agent,
                                         "version": version})
        return [_rejection(row) for row in rows]

    def ask_again_blocked_txn(self, conn: Connection, task: Task, agent: str) -> dict[str, str]:
        """The transitions ``agent`` may not ask for again now with the writes it was refused, by name, each
        with a sentence saying which rejection refuses it, its note, and what would change that (see
        :func:`asks_again_unchanged`; judged without writes, so asking with different writes is still
        open and the sentence says so). Empty when nothing was rejected at ``task.version``. A trusted
        read inside ``conn``'s transaction; ``task`` needs ``id`` and ``version``."""
        blocked: dict[str, str] = {}
        for rejection in self._rejections_at_txn(conn, task.id, agent, task.version):  # newest first
            if asks_again_unchanged(rejection, task.version) and rejection["transition"] not in blocked:
                blocked[rejection["transition"]] = ask_again_refusal(rejection, task.version)
        return blocked

    def inbox(self, *, actor: ActorRef) -> list[ApprovalRequest]:
        """Pending requests ``actor`` may decide: its ``approval.by`` names them, and they did not ask."""
        self.expire_requests()
        with self._reading(actor, "approval.inbox", f"company:{self.company}") as (conn, cache, who):
            rows = conn.execute(select(approval_requests).where(
                approval_requests.c.company_id == self.company, approval_requests.c.status == "pending")
                .order_by(approval_requests.c.id))
            return [r for r in map(_request, rows) if self._may_decide(cache, who, r)]

    def list_requests(self, *, actor: ActorRef | None = None, status: str | None = None,
                      requested_by: str | None = None, task_ids: list[int] | None = None) -> list[ApprovalRequest]:
        """Requests, newest last, optionally only those on ``task_ids`` (an index range per task). An agent
        sees only its own requests; humans see all."""
        self.expire_requests()
        query = select(approval_requests).where(approval_requests.c.company_id == self.company)
        with self._reading(actor, "approval.list", f"company:{self.company}") as (conn, cache, who):
            if who is not None and not self._decide(cache, who.handle, "oversee",
                                                    Resource("company", self.company)).allowed:
                requested_by = who.handle
            if status is not None:
                query = query.where(approval_requests.c.status == status)
            if requested_by is not None:
                query = query.where(approval_requests.c.requested_by == requested_by)
            if task_ids is not None:
                query = query.where(approval_requests.c.task_id.in_(sorted(set(task_ids))))
            return [_request(r) for r in conn.execute(query.order_by(approval_requests.c.id))]

    def approval_stats(self, *, window_seconds: int = REVIEW_WINDOW_SECONDS) -> list[dict[str, Any]]:
        """Review volume per approval edge, over the requests made in the last ``window_seconds`` (seconds,
        by the store's clock; default 30 days), one entry per edge with at least one such request, sorted
        by edge (``workflow.transition`` or ``tool:NAME``): ``{"edge", "requested", "approved", "rejected",
        "expired", "stale", "pending", "decided", "approval_rate", "verdict", "summary"}``. The counts are
        whole numbers (a used tool approval counts as approved; requests of assist-stage agents on
        transitions the spec does not put an approval on are not review volume); ``decided`` is approved plus rejected;
        ``approval_rate`` is approved / decided (``None`` when nothing was decided); ``verdict`` is
        ``over-reviewed``, ``weak-upstream``, ``ok`` or ``too-few`` and ``summary`` a sentence saying why
        (:func:`roster.kernel.review.review_verdict`, thresholds from the spec's ``fitness.review``). Raises
        :class:`UsageError` for a window shorter than one second."""
        if window_seconds < 1:
            raise UsageError(f"a review window is at least one second, not {window_seconds}")
        self.expire_requests()
        with self.store.read() as conn:
            spec = self.current_txn(conn).spec
            settings = spec.fitness.review
            since = _window_start(self.store.clock(), window_seconds)
            rows = conn.execute(select(approval_requests.c.kind, approval_requests.c.workflow,
                                       approval_requests.c.transition, approval_requests.c.tool,
                                       approval_requests.c.status, func.count())
                                .where(approval_requests.c.company_id == self.company,
                                       approval_requests.c.created_at >= since)
                                .group_by(approval_requests.c.kind, approval_requests.c.workflow,
                                          approval_requests.c.transition, approval_requests.c.tool,
                                          approval_requests.c.status))
            stats: dict[str, dict[str, Any]] = {}
            for kind, workflow, transition, tool, status, count in rows:
                flow = spec.workflows.get(workflow or "")
                if kind == "transition" and (flow is None or transition not in flow.transitions
                                             or flow.transitions[transition].approval is None):
                    continue  # an assist-stage agent's move (or a removed edge): not an approval edge of the spec
                edge = f"{workflow}.{transition}" if kind == "transition" else f"tool:{tool}"
                entry = stats.setdefault(edge, {"edge": edge, "requested": 0, "approved": 0, "rejected": 0,
                                                "expired": 0, "stale": 0, "pending": 0, "used": 0})
                entry["requested"] += count
                entry[status] = entry.get(status, 0) + count
        for entry in stats.values():
            entry["approved"] += entry.pop("used")  # a used tool approval was approved first
            decided = entry["approved"] + entry["rejected"]
            entry["decided"] = decided
            entry["approval_rate"] = entry["approved"] / decided if decided else None
            entry["verdict"], entry["summary"] = review_verdict(
                entry["approved"], entry["rejected"], window_days=window_seconds / 86400, settings=settings)
        return [stats[k] for k in sorted(stats)]

    def edge_review_txn(self, conn: Connection, spec: Any, workflow: str, transition: str) -> tuple[str, str]:
        """The review-volume verdict and summary of approval edge ``workflow.transition`` over the last
        :data:`REVIEW_WINDOW_SECONDS`, inside ``conn``'s transaction (a relaxable edge is skipped for an
        autonomous agent while it is ``over-reviewed``)."""
        since = _window_start(self.store.clock(), REVIEW_WINDOW_SECONDS)
        counts = dict(conn.execute(select(approval_requests.c.status, func.count()).where(
            approval_requests.c.company_id == self.company, approval_requests.c.kind == "transition",
            approval_requests.c.workflow == workflow, approval_requests.c.transition == transition,
            approval_requests.c.created_at >= since).group_by(approval_requests.c.status)).all())
        return review_verdict(int(counts.get("approved", 0)), int(counts.get("rejected", 0)),
                              window_days=REVIEW_WINDOW_SECONDS / 86400, settings=spec.fitness.review)

    # -- deciding -----------------------------------------------------------------------------------

    def _decide_txn(self, conn: Connection, cache: CompanyCache, request_id: int, actor: ActorRef) -> tuple[
            ApprovalRequest, Actor]:
        who = self._actor(cache, actor)
        request = self._request_txn(conn, request_id)
        if request.status == "stale" and request.kind == "transition":
            assert request.task_id is not None and request.task_version is not None
            raise ApprovalStale(request_id, request.task_id, request.task_version,
                                self._task_version_txn(conn, request.task_id), request.note)
        if request.status != "pending":
            raise UsageError(f"request {request_id} is {request.status}, not pending")
        if request.expires_at <= self.store.now():
            raise UsageError(f"request {request_id} expired at {request.expires_at}")
        edge = self._edge(cache, request)
        if not who.matches(edge.by):
            raise ContractViolation(workflow=request.workflow or "-", transition=request.transition or
                                    f"tool:{request.tool}", clause="approval.by",
                                    detail=f"'{who.handle}' may not decide it; approvers: {', '.join(edge.by)}",
                                    task_id=request.task_id)
        self._authorize_decision(cache, who, request)
        if request.kind == "transition":  # a request no write reached since it was made (older rows)
            assert request.task_id is not None and request.task_version is not None
            now_at = self._task_version_txn(conn, request.task_id)
            if now_at != request.task_version:
                raise _Stale(ApprovalStale(request_id, request.task_id, request.task_version, now_at,
                                           f"task {request.task_id} moved from version {request.task_version} "
                                           f"to {now_at} after the request was made"))
        return request, who

    def _task_version_txn(self, conn: Connection, task_id: int) -> int:
        version = conn.scalar(select(tasks.c.version).where(tasks.c.company_id == self.company,
                                                            tasks.c.id == task_id))
        if version is None:
            raise NotFound(f"no task {task_id} in company '{self.company}'")
        return int(version)

    def approve_request(self, request_id: int, *, actor: ActorRef, note: str = "") -> ApprovalRequest:
        """Approve and, for a transition, run it now: the whole contract is checked again, with this
        approval, in one transaction with the decision. A request whose task changed since it was made is
        ``stale`` (:func:`stale_requests_txn`) and raises :class:`ApprovalStale`, saying what moved the
        task; if the contract or the requester's rights no longer hold, the request is marked ``stale``
        and that error (:class:`ContractViolation`, :class:`Denied`) raised. Raises
        :class:`ContractViolation` (``approval.by``), :class:`Denied` (own request, rights),
        :class:`UsageError` (not pending, expired), :class:`NotFound`. Every refusal is audited."""
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                request, who = self._decide_txn(conn, cache, request_id, actor)
                now = self.store.now()
                self._set_status_txn(conn, request_id, "approved", who.handle, note, now)
                audit.append(conn, head, ts=now, principal=who.handle, action="approval.approve",
                             subject=f"approval:{request_id}", data={"edge": request.edge, "note": note})
                if request.kind == "transition":
                    try:
                        self.transition_txn(conn, head, cache, request.task_id, request.transition,
                                             request.requested_by, request.task_version, request.payload,
                                             approver=who, request_id=request_id)
                    except (StaleVersion, ContractViolation, Denied) as exc:
                        raise _Stale(exc) from exc
                audit.save_head(conn, head)
        except _Stale as stale:
            self._mark_stale(request_id, actor, stale.error)
            raise stale.error from None
        except _REFUSALS as exc:
            self._audit_rejection(actor, "approval.approve", f"approval:{request_id}", exc, {"note": note})
            raise
        return self.get_request(request_id)

    def reject_request(self, request_id: int, *, actor: ActorRef, note: str) -> ApprovalRequest:
        """Reject with a ``note`` the requester sees (its next brief carries it: :meth:`rejections_txn`);
        the task is unchanged, and the requester may not ask again for the same move until something
        changes (:func:`asks_again_unchanged`). Same checks as approve, :class:`ApprovalStale` included."""
        try:
            if not note.strip():
                raise UsageError("a rejection needs a note saying why, for the requester")
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                request, who = self._decide_txn(conn, cache, request_id, actor)
                now = self.store.now()
                self._set_status_txn(conn, request_id, "rejected", who.handle, note, now)
                if request.kind == "transition" and request.task_id is not None:
                    assert cache.spec is not None
                    record_rejection_txn(conn, self.company, cache.spec, request_id=request_id,
                                         workflow=request.workflow or "", task_id=request.task_id, by=who.handle,
                                         note=note, now=now)
                audit.append(conn, head, ts=now, principal=who.handle, action="approval.reject",
                             subject=f"approval:{request_id}", data={"edge": request.edge, "note": note,
                                                                      "task_id": request.task_id})
                audit.save_head(conn, head)
        except _Stale as stale:
            self._mark_stale(request_id, actor, stale.error)
            raise stale.error from None
        except _REFUSALS as exc:
            self._audit_rejection(actor, "approval.reject", f"approval:{request_id}", exc, {"note": note})
            raise
        return self.get_request(request_id)

    def expire_requests(self) -> int:
        """Mark pending requests past their expiry as ``expired`` (each audited). Returns how many."""
        now = self.store.now()
        with self.store.read() as conn:
            due = list(conn.scalars(select(approval_requests.c.id).where(
                approval_requests.c.company_id == self.company, approval_requests.c.status == "pending",
                approval_requests.c.expires_at <= now)))
        if not due:
            return 0
        with self.store.write() as conn:
            head, _ = self._head_txn(conn)
            for request_id in due:
                changed = conn.execute(update(approval_requests).where(
                    approval_requests.c.company_id == self.company, approval_requests.c.id == request_id,
                    approval_requests.c.status == "pending"), {"status": "expired", "decided_at": now}).rowcount
                if changed:
                    audit.append(conn, head, ts=now, principal="system", action="approval.expire",
                                 subject=f"approval:{request_id}", data={})
            audit.save_head(conn, head)
        return len(due)

    def _set_status_txn(self, conn: Connection, request_id: int, status: str, by: str, note: str, now: str) -> None:
        conn.execute(update(approval_requests).where(approval_requests.c.company_id == self.company,
                                                     approval_requests.c.id == request_id),
                     {"status": status, "decided_by": by, "note": note, "decided_at": now})

    def _mark_stale(self, request_id: int, actor: ActorRef, error: RosterError) -> None:
        with self.store.write() as conn:
            head, _ = self._head_txn(conn)
            now = self.store.now()
            why = error.why if isinstance(error, ApprovalStale) else error.message
            self._set_status_txn(conn, request_id, "stale", self._handle(actor), why, now)
            audit.append(conn, head, ts=now, principal=self._handle(actor), action="approval.stale",
                         subject=f"approval:{request_id}", data={"error": error.to_dict()})
            audit.save_head(conn, head)

    # -- tool calls ---------------------------------------------------------------------------------

    def consume_tool_approval_txn(self, conn: Connection, head: audit.ChainHead, who: Actor, tool: str,
                                   edge: Approval, arguments: dict[str, Any], rationale: str) -> OpenedRequest | None:
        """For a tool on an approval edge: use up an approved request for exactly these arguments (returns
        ``None``: go ahead), or open one and return it (the caller commits, then raises
        :class:`~roster.errors.ApprovalPending`)."""
        rows = conn.execute(select(approval_requests.c.id, approval_requests.c.payload).where(
            approval_requests.c.company_id == self.company, approval_requests.c.kind == "tool",
            approval_requests.c.tool == tool, approval_requests.c.requested_by == who.handle,
            approval_requests.c.status == "approved", approval_requests.c.expires_at > self.store.now())
            .order_by(approval_requests.c.id))
        for row in rows:
            if json.loads(row.payload) == arguments:
                conn.execute(update(approval_requests).where(approval_requests.c.id == row.id), {"status": "used"})
                audit.touch(head, "approval_requests", row.id)  # the tool.call event records it
                return None
        evidence = {"requested_by": who.handle, "tool": tool, "arguments": arguments, "rationale": rationale}
        request_id, created = self.open_request_txn(conn, head, who, edge, kind="tool", payload=arguments,
                                                     evidence=evidence, rationale=rationale, tool=tool)
        return OpenedRequest(request_id, tuple(edge.by), created)


@dataclass(frozen=True)
class OpenedRequest:
    """A request a write transaction opened (or found open) instead of acting; after the commit the
    caller raises it as :class:`~roster.errors.ApprovalPending`."""

    request_id: int
    approvers: tuple[str, ...]
    created: bool

    def error(self) -> ApprovalPending:
        return ApprovalPending(self.request_id, list(self.approvers), self.created)


class _Stale(Exception):  # noqa: N818 - carries the error that made a request stale out of the transaction
    def __init__(self, error: RosterError) -> None:
        super().__init__(error.message)
        self.error = error

