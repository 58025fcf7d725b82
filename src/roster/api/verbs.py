"""The verbs REST and MCP share beyond a single store call, each in one place so the two interfaces cannot
answer differently: saving an artifact, recording a check, filing or delegating a task, messaging,
remembering (each from the runner's result model: :mod:`roster.runtime.runners`), escalating, asking for
an approval, deciding many approval requests at once, setting a goal (checked at once) and listing a plan's
history with its diffs.

Every function takes the caller's :class:`~roster.store.Session` and acts only through its verbs (or,
for escalation, the company's public ``escalate`` with the caller as the one escalating), so rights,
contracts and the audit stay in the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from roster.errors import ApprovalPending, RosterError, UsageError
from roster.runtime.runners import MAX_ID, ArtifactOut, CheckOut, MemoryOut, MessageOut, TaskOut
from roster.store import ArtifactRecord, MemoryEntry, Message, Session, Task
from roster.store.approvals import ApprovalRequest
from roster.store.escalations import Escalation

if TYPE_CHECKING:
    from roster.api.models import GoalIn
    from roster.store.goals import Goal
    from roster.store.plans import PlanVersion

CATEGORIES = ("judgment", "deterministic", "transient", "governance")
"""The failure categories an escalation may name (see the BRIEF's failure taxonomy)."""


def save_artifact(caller: Session, task_id: int, artifact: ArtifactOut,
                  fencing_token: int | None = None) -> ArtifactRecord:
    """``artifact.content`` (UTF-8) as the next version of the artifact ``artifact.name`` (default: its
    kind) on the task. Raises what ``record_artifact`` raises (Denied, NotFound, StaleFencingToken,
    LeaseHeld, PayloadTooLarge)."""
    return caller.record_artifact(task_id, artifact.kind, artifact.content.encode(), name=artifact.name,
                                  reason=artifact.reason, fencing_token=fencing_token)


def record_check(caller: Session, task_id: int, check: CheckOut, fencing_token: int | None = None) -> dict[str, Any]:
    """Record ``check`` on the task (the latest result per name counts for ``requires.checks``). Returns
    ``{task_id, name, passed, detail, version}`` with the task's version after the check. Raises what
    ``record_check`` raises (Denied: needs ``write`` on the workflow; NotFound; StaleFencingToken;
    LeaseHeld)."""
    caller.record_check(task_id, check.name, passed=check.passed, detail=check.detail, fencing_token=fencing_token)
    return {"task_id": task_id, **check.model_dump(), "version": caller.get_task(task_id).version}


def file_task(caller: Session, new: TaskOut, parent_id: int | None = None) -> tuple[Task, bool]:
    """File ``new``: with a ``packet``, a delegation from ``parent_id`` (required then); without, a task
    of its own (``parent_id`` must be absent: a child without a packet would carry no accountability).
    Its ``artifacts`` are saved on it when it is created. Returns ``(task, created)``; a reused ``key``
    returns the existing task with ``created`` False. Raises :class:`UsageError` for a packet without a
    parent or a parent without a packet, and what ``delegate`` / ``create_task`` raise."""
    if new.packet is not None:
        if parent_id is None:
            raise UsageError(f"task '{new.title}' carries a delegation packet but names no parent task; "
                             "delegate from the task you work on (parent_id), or file it without a packet")
        task, created = caller.delegate_filed(parent_id, workflow=new.workflow, title=new.title, packet=new.packet,
                                              fields=new.fields, owner=new.owner, priority=new.priority,
                                              idempotency_key=new.key)
    else:
        if parent_id is not None:
            raise UsageError(f"a child of task {parent_id} needs a delegation packet (subproblem, context, tried, "
                             "desired_output, and success_condition and/or blocking_threshold)")
        task, created = caller.create_task(workflow=new.workflow, title=new.title, fields=new.fields,
                                           owner=new.owner, priority=new.priority, idempotency_key=new.key)
    for artifact in new.artifacts if created else []:
        save_artifact(caller, task.id, artifact)
    return task, created


def send(caller: Session, message: MessageOut) -> Message:
    """Send ``message`` (a reply when ``thread_id`` is set). Raises what ``send_message`` raises (Denied:
    the caller's ``rights.message`` do not name the recipient; NotFound)."""
    return caller.send_message(message.to, message.body, task_id=message.task_id, thread_id=message.thread_id)


def remember(caller: Session, memory: MemoryOut, provenance: dict[str, Any]) -> MemoryEntry:
    """Add ``memory`` to the caller's own pad with ``provenance`` (e.g. ``{"via": "mcp"}``)."""
    return caller.remember(memory.text, kind=memory.kind, confidence=memory.confidence, provenance=provenance,
                           expires_in=memory.expires_in)


def escalate(caller: Session, task_id: int, reason: str, category: str = "judgment") -> Escalation:
    """Take the next step up the escalation ladder for the caller on a task it may read: a peer whose
    role fits, else a human. Raises :class:`UsageError` for an unknown ``category`` (one of
    :data:`CATEGORIES`), :class:`NotFound` for a task the caller may not read."""
    if category not in CATEGORIES:
        raise UsageError(f"category '{category}' is not one of {', '.join(CATEGORIES)}")
    if not reason.strip():
        raise UsageError("an escalation needs a reason: what you tried and why you cannot finish")
    return caller.escalate(task_id, category=category, reason=reason)  # of a task the caller may read


def request_approval(caller: Session, task_id: int, transition: str, writes: dict[str, Any] | None = None,
                     rationale: str = "", expected_version: int | None = None) -> dict[str, Any]:
    """Ask for a transition on an approval edge: ``{"status": "pending", "request_id", "approvers", ...}``
    once a request waits for an approver, or ``{"status": "done", "state", "version"}`` if the
    transition needed no approval after all. Raises the transition's refusals (ContractViolation,
    Denied, StaleVersion)."""
    version = expected_version or caller.get_task(task_id).version
    try:
        task = caller.transition(task_id, transition, expected_version=version, writes=writes or {},
                                 rationale=rationale)
    except ApprovalPending as pending:
        return {"status": "pending", **{k: v for k, v in pending.to_dict().items() if k != "error"}}
    return {"status": "done", "state": task.state, "version": task.version}


def set_goal(caller: Session, new: GoalIn, workdir: Path | None) -> Goal:
    """Set the goal ``new`` as the caller, then check it at once, as ``roster goal add`` does (a check that
    already passes meets it on the spot; one that fails is recorded with its evidence). A command check
    runs in ``workdir``, the spec's folder; with no ``workdir`` (a server not started from a workspace) only
    a KPI check is checked at once, and a command check is left to the runtime's goal loop. Returns the
    goal as recorded. Raises what ``set_goal`` raises (Denied, audited; NotFound; UsageError)."""
    from roster.runtime.goal_checks import check_goal  # the runtime, only for this verb

    check = new.goal_check()
    goal = caller.set_goal(new.agent, new.objective, check=check, budget=new.budget,
                           every_seconds=new.every_seconds, stall_after=new.stall_after, deadline_at=new.deadline_at)
    if check.command is not None and workdir is None:
        return goal
    company = caller.company_for("goal.set", f"principal:{new.agent}")  # the check is recorded by the runtime
    return check_goal(company, goal, workdir=workdir or Path.cwd())


def plan_history(caller: Session, agent: str, limit: int) -> list[tuple[PlanVersion, str]]:
    """``agent``'s newest ``limit`` plan versions, newest first, each with its unified diff against the
    version before it (against no plan for version 1), as ``roster mission show --json`` lists them.
    Raises what ``plan_history`` raises (NotFound: no such agent; Denied: ``profile.read``, audited as
    ``plan.read.rejected``)."""
    from roster.store.plans import version_diff

    versions = caller.plan_history(agent, limit=limit + 1)  # one more, to diff the oldest shown against
    return [(v, version_diff(versions[i + 1] if i + 1 < len(versions) else None, v))
            for i, v in enumerate(versions[:limit])]


class Decision(BaseModel):
    """One decision of a bulk (the MCP ``decide`` tool, ``POST /approvals/decisions``)."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1, le=MAX_ID, description="The approval request's id.")
    decision: Literal["approve", "reject"]
    note: str = Field(default="", max_length=4000, description="Why; a rejection needs one.")



@dataclass(frozen=True)
class Decided:
    """What happened to one decision of a bulk: ``outcome`` is ``approved``, ``rejected`` or ``refused``;
    on ``refused``, ``error`` is the error's ``code`` and ``detail`` its message (what was wrong and
    what to do)."""

    id: int
    decision: str
    outcome: str
    request: ApprovalRequest | None = None
    error: str | None = None
    detail: str | None = None


def decide(caller: Session, decisions: list[Decision]) -> list[Decided]:
    """Decide each :class:`Decision` independently, in order, through the same
    verbs as one decision (``approve_request`` / ``reject_request``): one refusal does not undo the
    others and does not stop the rest. Returns one :class:`Decided` per decision, in order."""
    results: list[Decided] = []
    for one in decisions:
        request_id, decision, note = one.id, one.decision, one.note
        try:
            if decision == "approve":
                request = caller.approve_request(request_id, note=note)
            else:
                request = caller.reject_request(request_id, note=note)
        except RosterError as exc:
            results.append(Decided(request_id, decision, "refused", error=exc.code, detail=exc.message))
            continue
        results.append(Decided(request_id, decision, "approved" if decision == "approve" else "rejected", request))
    return results
