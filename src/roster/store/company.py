"""The company handle, and the session through which an authenticated principal acts.

:class:`CompanyStore` is every verb on one company's rows (tasks from :mod:`roster.store.tasks`;
principals, tokens and the kill switch from :mod:`roster.store.principals`; artifacts, memory, messages,
delegation and hand-off from their modules). Each verb takes the actor
explicitly. :class:`Session` is what interfaces hold after authenticating a token: the same verbs with
the actor fixed to the token's principal, so nothing reached through a session can act as anyone else.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from roster.defaults import DEFAULT_LEASE_SECONDS, DEFAULT_TOKEN_LIFETIME
from roster.errors import Unauthenticated
from roster.kernel.goals import DEFAULT_EVERY_SECONDS, DEFAULT_STALL_AFTER
from roster.store import audit
from roster.store.approvals import ApprovalVerbs
from roster.store.company_base import Principal
from roster.store.costs import CostVerbs
from roster.store.engine import DEFAULT_LOCK_TIMEOUT
from roster.store.escalations import EscalationVerbs
from roster.store.fitness import DEFAULT_WINDOW, FitnessVerbs
from roster.store.shadows import ShadowVerbs
from roster.store.stage_criteria import StageCriteriaVerbs
from roster.store.stages import StageVerbs
from roster.store.fleet import FleetVerbs
from roster.store.goals import GoalVerbs
from roster.store.plans import DEFAULT_PLAN_HOLD_SECONDS
from roster.store.reflection import ReflectionVerbs
from roster.store.presence import PresenceVerbs
from roster.store.handoff import DEFAULT_HOLD_SECONDS, HandoffVerbs
from roster.store.kpis import KpiVerbs
from roster.store.leases import MAX_LEASE_SECONDS
from roster.store.memory import MemoryVerbs
from roster.store.messages import MessageVerbs
from roster.store.principals import (
    PrincipalVerbs,
    authenticate_txn,
    parse_token,
    principal_row_txn,
    stamp_token_txn,
)
from roster.store.store import Store
from roster.store.triggers import TriggerVerbs
from roster.store.webhooks import WebhookVerbs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from datetime import timedelta
    from pathlib import Path

    from sqlalchemy import Connection

    from roster.kernel.audit import AuditEvent
    from roster.kernel.goals import GoalBudget, GoalCheck
    from roster.kernel.rights import Decision
    from roster.kernel.spec import CompanySpec
    from roster.store.approvals import ApprovalRequest
    from roster.store.artifacts import ArtifactRecord
    from roster.store.company_base import CompanyCache
    from roster.store.escalations import Escalation
    from roster.kernel.plans import Plan
    from roster.store.goals import Goal
    from roster.store.plans import PlanHold, PlanVersion
    from roster.store.kpis import KpiReading, KpiSummary
    from roster.store.leases import Lease
    from roster.store.memory import Consolidation, MemoryEntry
    from roster.store.messages import Message
    from roster.store.principals import IssuedToken, TokenRecord
    from roster.store.runs import RunRecord
    from roster.store.tasks import Task, TransitionOption
    from roster.store.triggers import Event
    from roster.store.webhooks import WebhookDelivery


class CompanyStore(WebhookVerbs, StageCriteriaVerbs, ShadowVerbs, StageVerbs, FitnessVerbs, ReflectionVerbs, PresenceVerbs, GoalVerbs, KpiVerbs, HandoffVerbs, MemoryVerbs, MessageVerbs, ApprovalVerbs, FleetVerbs, EscalationVerbs,
                   TriggerVerbs, CostVerbs, PrincipalVerbs):
    """All verbs on one company's rows. Obtain with :meth:`Store.company`."""


class Session:
    """An authenticated principal's handle on its own company. Obtain with :meth:`Store.session`.

    One method per verb of :attr:`VERBS`: the :class:`CompanyStore` verb of that name with the same
    parameters but ``actor``, which is bound to :attr:`principal` (passing ``actor`` is a
    :class:`TypeError`); ``tests/test_session_contract.py`` keeps the signatures in step. Beyond the verbs,
    a few methods give interfaces what they need of the company as this principal (:meth:`spec`,
    :meth:`escalate`, :meth:`pending_work`, :meth:`approval_stats`, :meth:`policy_text`, :meth:`explain`),
    and :meth:`company_for` hands over the whole :class:`CompanyStore`, for the runtime, only after an
    authorization decision allowed it. There is no other way to the unscoped handle.
    """

    VERBS = (
        "create_task", "get_task", "list_tasks", "transition", "assign", "options", "history", "record_artifact",
        "list_artifacts", "record_check", "audit_log", "verify_audit", "list_principals",
        "get_principal", "add_principal", "set_status", "issue_token", "revoke_token", "list_tokens", "pause",
        "resume", "record_tool_call", "claim", "renew", "release", "inbox", "approve_request", "reject_request",
        "get_request", "list_requests", "emit_event", "list_escalations", "resolve_escalation",
        "artifact_history", "artifact", "artifact_diff", "remember", "recall", "list_memory", "forget",
        "share_memory", "consolidate_memory", "export_memory", "import_memory", "send_message", "message_inbox",
        "thread", "mark_read", "delegate", "delegate_filed", "adopt", "children", "hold", "release_hold",
        "edit_fields", "handoff",
        "list_runs", "costs", "record_kpi", "kpi_readings", "kpi_summaries", "authorize",
        "set_goal", "get_goal", "list_goals", "move_goal", "presence",
        "plan", "plan_history", "revise_plan", "hold_plan", "release_plan", "fitness",
        "stages", "set_stage", "webhook_deliveries", "replay_webhooks",
    )

    def __init__(self, company: CompanyStore, principal: Principal) -> None:
        self._company = company
        self.principal = principal

    # -- the verbs, as the principal (generated from CompanyStore's signatures; checked by a test) -----

    def create_task(self, *, workflow: str, title: str, fields: Mapping[str, Any] | None = None,
                    owner: str | None = None, priority: int = 0, parent_id: int | None = None,
                    idempotency_key: str | None = None,
                    packet: Mapping[str, Any] | None = None) -> tuple[Task, bool]:
        """:meth:`CompanyStore.create_task`, as :attr:`principal`."""
        return self._company.create_task(workflow=workflow, title=title, fields=fields, owner=owner,
                                         priority=priority, parent_id=parent_id,
                                         idempotency_key=idempotency_key, packet=packet, actor=self.principal)

    def get_task(self, task_id: int) -> Task:
        """:meth:`CompanyStore.get_task`, as :attr:`principal`."""
        return self._company.get_task(task_id, actor=self.principal)

    def list_tasks(self, *, workflow: str | None = None, state: str | None = None, owner: str | None = None,
                   after_id: int = 0, limit: int = 100) -> list[Task]:
        """:meth:`CompanyStore.list_tasks`, as :attr:`principal`."""
        return self._company.list_tasks(workflow=workflow, state=state, owner=owner, after_id=after_id,
                                        limit=limit, actor=self.principal)

    def transition(self, task_id: int, name: str, *, expected_version: int,
                   writes: Mapping[str, Any] | None = None, rationale: str = "",
                   fencing_token: int | None = None,
                   then: Callable[[Connection, audit.ChainHead, CompanyCache, Task], None] | None = None,
                   ) -> Task:
        """:meth:`CompanyStore.transition`, as :attr:`principal`."""
        return self._company.transition(task_id, name, expected_version=expected_version, writes=writes,
                                        rationale=rationale, fencing_token=fencing_token, then=then,
                                        actor=self.principal)

    def assign(self, task_id: int, *, owner: str | None = None, priority: int | None = None,
               expected_version: int | None = None) -> Task:
        """:meth:`CompanyStore.assign`, as :attr:`principal`."""
        return self._company.assign(task_id, owner=owner, priority=priority,
                                    expected_version=expected_version, actor=self.principal)

    def options(self, task_id: int) -> list[TransitionOption]:
        """:meth:`CompanyStore.options`, as :attr:`principal`."""
        return self._company.options(task_id, actor=self.principal)

    def history(self, task_id: int) -> list[AuditEvent]:
        """:meth:`CompanyStore.history`, as :attr:`principal`."""
        return self._company.history(task_id, actor=self.principal)

    def record_artifact(self, task_id: int, kind: str, content: bytes, *, name: str = "", reason: str = "",
                        run_id: str | None = None, fencing_token: int | None = None) -> ArtifactRecord:
        """:meth:`CompanyStore.record_artifact`, as :attr:`principal`."""
        return self._company.record_artifact(task_id, kind, content, name=name, reason=reason, run_id=run_id,
                                             fencing_token=fencing_token, actor=self.principal)

    def list_artifacts(self, task_id: int, *, all_versions: bool = False) -> list[ArtifactRecord]:
        """:meth:`CompanyStore.list_artifacts`, as :attr:`principal`."""
        return self._company.list_artifacts(task_id, all_versions=all_versions, actor=self.principal)

    def record_check(self, task_id: int, name: str, *, passed: bool, detail: str = "",
                     fencing_token: int | None = None) -> None:
        """:meth:`CompanyStore.record_check`, as :attr:`principal`."""
        return self._company.record_check(task_id, name, passed=passed, detail=detail,
                                          fencing_token=fencing_token, actor=self.principal)

    def audit_log(self, *, principal: str | None = None, task_id: int | None = None,
                  action: str | None = None, since: str | None = None, until: str | None = None,
                  after_seq: int = 0, limit: int | None = None,
                  newest_first: bool = False, before_seq: int | None = None) -> list[AuditEvent]:
        """:meth:`CompanyStore.audit_log`, as :attr:`principal`."""
        return self._company.audit_log(principal=principal, task_id=task_id, action=action, since=since,
                                       until=until, after_seq=after_seq, limit=limit,
                                       newest_first=newest_first, before_seq=before_seq, actor=self.principal)

    def verify_audit(self, *, progress: Callable[[int], None] | None = None) -> tuple[int, tuple[int, str] | None]:
        """:meth:`CompanyStore.verify_audit`, as :attr:`principal`."""
        return self._company.verify_audit(actor=self.principal, progress=progress)

    def list_principals(self) -> list[Principal]:
        """:meth:`CompanyStore.list_principals`, as :attr:`principal`."""
        return self._company.list_principals(actor=self.principal)

    def get_principal(self, handle: str) -> Principal:
        """:meth:`CompanyStore.get_principal`, as :attr:`principal`."""
        return self._company.get_principal(handle, actor=self.principal)

    def add_principal(self, handle: str, *, kind: str, display_name: str = "", roles: tuple[str, ...] = (),
                      reports_to: str | None = None) -> Principal:
        """:meth:`CompanyStore.add_principal`, as :attr:`principal`."""
        return self._company.add_principal(handle, kind=kind, display_name=display_name, roles=roles,
                                           reports_to=reports_to, actor=self.principal)

    def set_status(self, handle: str, status: str, *, reason: str = "") -> Principal:
        """:meth:`CompanyStore.set_status`, as :attr:`principal`."""
        return self._company.set_status(handle, status, reason=reason, actor=self.principal)

    def issue_token(self, handle: str, *, name: str = "",
                    lifetime: timedelta = DEFAULT_TOKEN_LIFETIME) -> IssuedToken:
        """:meth:`CompanyStore.issue_token`, as :attr:`principal`."""
        return self._company.issue_token(handle, name=name, lifetime=lifetime, actor=self.principal)

    def revoke_token(self, token_id: str) -> TokenRecord:
        """:meth:`CompanyStore.revoke_token`, as :attr:`principal`."""
        return self._company.revoke_token(token_id, actor=self.principal)

    def list_tokens(self, *, principal: str | None = None) -> list[TokenRecord]:
        """:meth:`CompanyStore.list_tokens`, as :attr:`principal`."""
        return self._company.list_tokens(principal=principal, actor=self.principal)

    def pause(self, scope: str, *, reason: str = "") -> None:
        """:meth:`CompanyStore.pause`, as :attr:`principal`."""
        return self._company.pause(scope, reason=reason, actor=self.principal)

    def resume(self, scope: str) -> None:
        """:meth:`CompanyStore.resume`, as :attr:`principal`."""
        return self._company.resume(scope, actor=self.principal)

    def record_tool_call(self, tool: str, *, arguments: Mapping[str, Any] | None = None,
                         rationale: str = "") -> None:
        """:meth:`CompanyStore.record_tool_call`, as :attr:`principal`."""
        return self._company.record_tool_call(tool, arguments=arguments, rationale=rationale,
                                              actor=self.principal)

    def claim(self, task_id: int, *, run_id: str, ttl: float = DEFAULT_LEASE_SECONDS,
              then: Callable[[Connection, audit.ChainHead, Lease, Task], None] | None = None,
              max_ttl: float = MAX_LEASE_SECONDS) -> Lease:
        """:meth:`CompanyStore.claim`, as :attr:`principal`."""
        return self._company.claim(task_id, run_id=run_id, ttl=ttl, then=then, max_ttl=max_ttl,
                                   actor=self.principal)

    def renew(self, task_id: int, *, fencing_token: int, ttl: float = DEFAULT_LEASE_SECONDS) -> Lease:
        """:meth:`CompanyStore.renew`, as :attr:`principal`."""
        return self._company.renew(task_id, fencing_token=fencing_token, ttl=ttl, actor=self.principal)

    def release(self, task_id: int, *, fencing_token: int,
                then: Callable[[Connection, audit.ChainHead], None] | None = None) -> None:
        """:meth:`CompanyStore.release`, as :attr:`principal`."""
        return self._company.release(task_id, fencing_token=fencing_token, then=then, actor=self.principal)

    def inbox(self) -> list[ApprovalRequest]:
        """:meth:`CompanyStore.inbox`, as :attr:`principal`."""
        return self._company.inbox(actor=self.principal)

    def approve_request(self, request_id: int, *, note: str = "") -> ApprovalRequest:
        """:meth:`CompanyStore.approve_request`, as :attr:`principal`."""
        return self._company.approve_request(request_id, note=note, actor=self.principal)

    def reject_request(self, request_id: int, *, note: str) -> ApprovalRequest:
        """:meth:`CompanyStore.reject_request`, as :attr:`principal`."""
        return self._company.reject_request(request_id, note=note, actor=self.principal)

    def get_request(self, request_id: int) -> ApprovalRequest:
        """:meth:`CompanyStore.get_request`, as :attr:`principal`."""
        return self._company.get_request(request_id, actor=self.principal)

    def list_requests(self, *, status: str | None = None,
                      requested_by: str | None = None, task_ids: list[int] | None = None) -> list[ApprovalRequest]:
        """:meth:`CompanyStore.list_requests`, as :attr:`principal`."""
        return self._company.list_requests(status=status, requested_by=requested_by, task_ids=task_ids,
                                           actor=self.principal)

    def emit_event(self, name: str, *, data: Any = None) -> Event:
        """:meth:`CompanyStore.emit_event`, as :attr:`principal`."""
        return self._company.emit_event(name, data=data, actor=self.principal)

    def list_escalations(self, *, status: str | None = "open") -> list[Escalation]:
        """:meth:`CompanyStore.list_escalations`, as :attr:`principal`."""
        return self._company.list_escalations(status=status, actor=self.principal)

    def resolve_escalation(self, escalation_id: int, *, note: str) -> Escalation:
        """:meth:`CompanyStore.resolve_escalation`, as :attr:`principal`."""
        return self._company.resolve_escalation(escalation_id, note=note, actor=self.principal)

    def set_goal(self, agent: str, objective: str, *, check: GoalCheck, budget: GoalBudget,
                 every_seconds: int = DEFAULT_EVERY_SECONDS, stall_after: int = DEFAULT_STALL_AFTER,
                 deadline_at: str | None = None) -> Goal:
        """:meth:`CompanyStore.set_goal`, as :attr:`principal`."""
        return self._company.set_goal(agent, objective, check=check, budget=budget, every_seconds=every_seconds,
                                      stall_after=stall_after, deadline_at=deadline_at, actor=self.principal)

    def presence(self, *, days: int = 1) -> dict[str, Any]:
        """:meth:`CompanyStore.presence`, as :attr:`principal`."""
        return self._company.presence(days=days, actor=self.principal)

    def fitness(self, *, window_seconds: int = DEFAULT_WINDOW, agent: str | None = None) -> dict[str, Any]:
        """:meth:`CompanyStore.fitness`, as :attr:`principal`."""
        return self._company.fitness(window_seconds=window_seconds, agent=agent, actor=self.principal)

    def stages(self, *, agent: str | None = None) -> list[dict[str, Any]]:
        """:meth:`CompanyStore.stages`, as :attr:`principal`."""
        return self._company.stages(agent=agent, actor=self.principal)

    def set_stage(self, agent: str, stage: str, *, workflow: str | None = None, reason: str) -> dict[str, Any]:
        """:meth:`CompanyStore.set_stage`, as :attr:`principal`."""
        return self._company.set_stage(agent, stage, workflow=workflow, reason=reason, actor=self.principal)

    def plan(self, agent: str) -> PlanVersion | None:
        """:meth:`CompanyStore.plan`, as :attr:`principal`."""
        return self._company.plan(agent, actor=self.principal)

    def plan_history(self, agent: str, *, limit: int = 100) -> list[PlanVersion]:
        """:meth:`CompanyStore.plan_history`, as :attr:`principal`."""
        return self._company.plan_history(agent, limit=limit, actor=self.principal)

    def revise_plan(self, agent: str, plan: Plan, *, reason: str, run_id: str | None = None) -> PlanVersion:
        """:meth:`CompanyStore.revise_plan`, as :attr:`principal`."""
        return self._company.revise_plan(agent, plan, reason=reason, run_id=run_id, actor=self.principal)

    def hold_plan(self, agent: str, *, ttl: float = DEFAULT_PLAN_HOLD_SECONDS, note: str = "") -> PlanHold:
        """:meth:`CompanyStore.hold_plan`, as :attr:`principal`."""
        return self._company.hold_plan(agent, ttl=ttl, note=note, actor=self.principal)

    def release_plan(self, agent: str, *, note: str = "") -> None:
        """:meth:`CompanyStore.release_plan`, as :attr:`principal`."""
        return self._company.release_plan(agent, note=note, actor=self.principal)

    def get_goal(self, goal_id: int) -> Goal:
        """:meth:`CompanyStore.get_goal`, as :attr:`principal`."""
        return self._company.get_goal(goal_id, actor=self.principal)

    def list_goals(self, *, agent: str | None = None, state: str | None = None, limit: int = 100) -> list[Goal]:
        """:meth:`CompanyStore.list_goals`, as :attr:`principal`."""
        return self._company.list_goals(agent=agent, state=state, limit=limit, actor=self.principal)

    def move_goal(self, goal_id: int, verb: str, *, note: str = "", expected_version: int | None = None) -> Goal:
        """:meth:`CompanyStore.move_goal`, as :attr:`principal`."""
        return self._company.move_goal(goal_id, verb, note=note, expected_version=expected_version,
                                       actor=self.principal)

    def artifact_history(self, task_id: int, name: str) -> list[ArtifactRecord]:
        """:meth:`CompanyStore.artifact_history`, as :attr:`principal`."""
        return self._company.artifact_history(task_id, name, actor=self.principal)

    def artifact(self, task_id: int, name: str, version: int | None = None) -> tuple[ArtifactRecord, bytes]:
        """:meth:`CompanyStore.artifact`, as :attr:`principal`."""
        return self._company.artifact(task_id, name, version, actor=self.principal)

    def artifact_diff(self, task_id: int, name: str, from_version: int | None = None,
                      to_version: int | None = None) -> str:
        """:meth:`CompanyStore.artifact_diff`, as :attr:`principal`."""
        return self._company.artifact_diff(task_id, name, from_version, to_version, actor=self.principal)

    def remember(self, text_: str, *, kind: str = "belief", pad: str | None = None, confidence: float = 0.8,
                 provenance: dict[str, Any] | None = None, expires_in: float | None = None) -> MemoryEntry:
        """:meth:`CompanyStore.remember`, as :attr:`principal`."""
        return self._company.remember(text_, kind=kind, pad=pad, confidence=confidence, provenance=provenance,
                                      expires_in=expires_in, actor=self.principal)

    def recall(self, query: str, *, pads: list[str] | None = None, limit: int = 10,
               kinds: list[str] | None = None) -> list[MemoryEntry]:
        """:meth:`CompanyStore.recall`, as :attr:`principal`."""
        return self._company.recall(query, pads=pads, limit=limit, kinds=kinds, actor=self.principal)

    def list_memory(self, *, pads: list[str] | None = None, kind: str | None = None, limit: int = 100,
                    kinds: list[str] | None = None) -> list[MemoryEntry]:
        """:meth:`CompanyStore.list_memory`, as :attr:`principal`."""
        return self._company.list_memory(pads=pads, kind=kind, limit=limit, kinds=kinds, actor=self.principal)

    def forget(self, entry_id: int, *, reason: str = "") -> MemoryEntry:
        """:meth:`CompanyStore.forget`, as :attr:`principal`."""
        return self._company.forget(entry_id, reason=reason, actor=self.principal)

    def share_memory(self, pad: str, grantee: str, *, revoke: bool = False) -> None:
        """:meth:`CompanyStore.share_memory`, as :attr:`principal`."""
        return self._company.share_memory(pad, grantee, revoke=revoke, actor=self.principal)

    def consolidate_memory(self, *, pads: list[str] | None = None) -> Consolidation:
        """:meth:`CompanyStore.consolidate_memory`, as :attr:`principal`."""
        return self._company.consolidate_memory(pads=pads, actor=self.principal)

    def export_memory(self, pad: str, *, kinds: list[str] | None = None, query: str = "",
                      min_confidence: float = 0.0, limit: int = 1000) -> dict[str, Any]:
        """:meth:`CompanyStore.export_memory`, as :attr:`principal`."""
        return self._company.export_memory(pad, kinds=kinds, query=query, min_confidence=min_confidence,
                                           limit=limit, actor=self.principal)

    def import_memory(self, pad: str, document: Any) -> list[MemoryEntry]:
        """:meth:`CompanyStore.import_memory`, as :attr:`principal`."""
        return self._company.import_memory(pad, document, actor=self.principal)

    def send_message(self, recipient: str, body: str, *, task_id: int | None = None,
                     thread_id: int | None = None) -> Message:
        """:meth:`CompanyStore.send_message`, as :attr:`principal`."""
        return self._company.send_message(recipient, body, task_id=task_id, thread_id=thread_id,
                                          actor=self.principal)

    def message_inbox(self, *, unread_only: bool = False, limit: int = 50,
                      before_id: int | None = None) -> list[Message]:
        """:meth:`CompanyStore.message_inbox`, as :attr:`principal`."""
        return self._company.message_inbox(unread_only=unread_only, limit=limit, before_id=before_id,
                                           actor=self.principal)

    def thread(self, thread_id: int) -> list[Message]:
        """:meth:`CompanyStore.thread`, as :attr:`principal`."""
        return self._company.thread(thread_id, actor=self.principal)

    def mark_read(self, message_ids: list[int]) -> int:
        """:meth:`CompanyStore.mark_read`, as :attr:`principal`."""
        return self._company.mark_read(message_ids, actor=self.principal)

    def delegate(self, parent_id: int, *, workflow: str, title: str, packet: Any,
                 fields: dict[str, Any] | None = None, owner: str | None = None, priority: int = 0,
                 idempotency_key: str | None = None) -> Task:
        """:meth:`CompanyStore.delegate`, as :attr:`principal`."""
        return self._company.delegate(parent_id, workflow=workflow, title=title, packet=packet, fields=fields,
                                      owner=owner, priority=priority, idempotency_key=idempotency_key,
                                      actor=self.principal)

    def delegate_filed(self, parent_id: int, *, workflow: str, title: str, packet: Any,
                       fields: dict[str, Any] | None = None, owner: str | None = None, priority: int = 0,
                       idempotency_key: str | None = None) -> tuple[Task, bool]:
        """:meth:`CompanyStore.delegate_filed`, as :attr:`principal`."""
        return self._company.delegate_filed(parent_id, workflow=workflow, title=title, packet=packet,
                                            fields=fields, owner=owner, priority=priority,
                                            idempotency_key=idempotency_key, actor=self.principal)

    def adopt(self, parent_id: int, child_id: int, *, packet: Any) -> Task:
        """:meth:`CompanyStore.adopt`, as :attr:`principal`."""
        return self._company.adopt(parent_id, child_id, packet=packet, actor=self.principal)

    def children(self, parent_id: int) -> list[Task]:
        """:meth:`CompanyStore.children`, as :attr:`principal`."""
        return self._company.children(parent_id, actor=self.principal)

    def hold(self, task_id: int, *, ttl: float = DEFAULT_HOLD_SECONDS, note: str = "") -> Lease:
        """:meth:`CompanyStore.hold`, as :attr:`principal`."""
        return self._company.hold(task_id, ttl=ttl, note=note, actor=self.principal)

    def release_hold(self, task_id: int, *, note: str = "") -> None:
        """:meth:`CompanyStore.release_hold`, as :attr:`principal`."""
        return self._company.release_hold(task_id, note=note, actor=self.principal)

    def edit_fields(self, task_id: int, writes: dict[str, Any], *, note: str = "",
                    expected_version: int | None = None, fencing_token: int | None = None) -> Task:
        """:meth:`CompanyStore.edit_fields`, as :attr:`principal`."""
        return self._company.edit_fields(task_id, writes, note=note, expected_version=expected_version,
                                         fencing_token=fencing_token, actor=self.principal)

    def handoff(self, task_id: int, principal: str) -> dict[str, Any] | None:
        """:meth:`CompanyStore.handoff`, as :attr:`principal`."""
        return self._company.handoff(task_id, principal, actor=self.principal)

    def list_runs(self, *, agent: str | None = None, task_id: int | None = None, limit: int = 100,
                  before: str | None = None) -> list[RunRecord]:
        """:meth:`CompanyStore.list_runs`, as :attr:`principal`."""
        return self._company.list_runs(agent=agent, task_id=task_id, limit=limit, before=before,
                                       actor=self.principal)

    def costs(self, *, since: str | None = None) -> dict[str, list[dict]]:
        """:meth:`CompanyStore.costs`, as :attr:`principal`."""
        return self._company.costs(since=since, actor=self.principal)

    def record_kpi(self, name: str, value: float, *, source: str = "") -> KpiReading:
        """:meth:`CompanyStore.record_kpi`, as :attr:`principal`."""
        return self._company.record_kpi(name, value, source=source, actor=self.principal)

    def kpi_readings(self, name: str, *, limit: int = 100) -> list[KpiReading]:
        """:meth:`CompanyStore.kpi_readings`, as :attr:`principal`."""
        return self._company.kpi_readings(name, limit=limit, actor=self.principal)

    def kpi_summaries(self) -> dict[str, KpiSummary]:
        """:meth:`CompanyStore.kpi_summaries`, as :attr:`principal`."""
        return self._company.kpi_summaries(actor=self.principal)

    def authorize(self, action: str, resource: str, *, transition: str = "") -> Decision:
        """:meth:`CompanyStore.authorize`, as :attr:`principal`."""
        return self._company.authorize(action, resource, transition=transition, actor=self.principal)

    def webhook_deliveries(self, *, hook: str | None = None, status: str | None = None,
                           limit: int = 50) -> list[WebhookDelivery]:
        """:meth:`CompanyStore.webhook_deliveries`, as :attr:`principal`."""
        return self._company.webhook_deliveries(hook=hook, status=status, limit=limit, actor=self.principal)

    def replay_webhooks(self, delivery_ids: list[int] | None = None, *, failed: bool = False) -> list[int]:
        """:meth:`CompanyStore.replay_webhooks`, as :attr:`principal`."""
        return self._company.replay_webhooks(delivery_ids, failed=failed, actor=self.principal)

    # -- what interfaces need of the company beyond the verbs, as the principal ----------------------

    def spec(self) -> CompanySpec:
        """:meth:`CompanyStore.spec`, the company's current spec: every active principal of it may read it
        (its token was checked when this session was opened), so no decision is taken."""
        return self._company.spec()

    def escalate(self, task_id: int, *, category: str, reason: str) -> Escalation:
        """:meth:`CompanyStore.escalate` from :attr:`principal` (``from_agent``) on a task it may read
        (``read``, as :meth:`get_task`: :class:`NotFound` or :class:`Denied` otherwise)."""
        self.get_task(task_id)
        return self._company.escalate(task_id, from_agent=self.principal.handle, category=category,
                                      reason=reason)

    def pending_work(self, *, limit: int = 20) -> list[Task]:
        """:meth:`CompanyStore.pending_work` for :attr:`principal` only: the tasks it could act on now (its
        rights and the contracts' ``by`` decide which, in the work query)."""
        return self._company.pending_work(self.principal.handle, limit=limit)

    def approval_stats(self, *, window_seconds: int = 30 * 86400) -> list[dict[str, Any]]:
        """:meth:`CompanyStore.approval_stats`: review volume per approval edge over the last
        ``window_seconds`` (default 30 days), company-wide, with each edge's verdict. Open to every principal
        of the company, as ``roster approval stats`` always was: counts, no request's content."""
        return self._company.approval_stats(window_seconds=window_seconds)

    def policy_text(self) -> str:
        """:meth:`CompanyStore.policy_text`: the Cedar policies in force. Open to every principal of the
        company, as ``roster rights policies`` always was: the rules every principal is held to."""
        return self._company.policy_text()

    def explain(self, action: str, resource: str, transition: str = "",
                principal: str | None = None) -> Decision:
        """``rights explain`` (:meth:`CompanyStore.explain`) for ``principal`` (default: yourself); it only
        answers, refusing nothing."""
        return self._company.explain(principal or self.principal.handle, action, resource, transition)

    def company_for(self, action: str, resource: str) -> CompanyStore:
        """The whole :class:`CompanyStore`, for an interface that hands it to the runtime (a dispatcher, a
        brief's assembler, budgets), once :meth:`authorize` allowed :attr:`principal` ``action`` on
        ``resource`` (:class:`Denied`, audited, otherwise). Use a verb wherever one exists."""
        self.authorize(action, resource)
        return self._company


def authenticate(store: Store, token: str, *, audit_refusal: bool = True) -> Session:
    """Check ``token`` and return its principal's :class:`Session`.

    Raises :class:`Unauthenticated` for a malformed, unknown, revoked or expired token, or one whose
    principal is paused or retired; each refusal with a known company is audited as ``auth.rejected``
    (unless ``audit_refusal`` is false: the HTTP interface's rate limiter, once a company's failures are
    over their limit, so failing on purpose cannot flood its chain).
    """
    company, token_id, secret = parse_token(token)
    with store.read() as conn:  # a read: the last-used stamp is written at most once a minute
        head = audit.read_head(conn, company)
        now = store.now()
        handle, reason, stale = authenticate_txn(conn, company, token_id, secret, now)  # same work, known or not
        if head is None:
            raise Unauthenticated("unknown token")
        if not reason:
            principal = principal_row_txn(conn, company, handle)
    if not reason and stale:
        with store.write() as conn:
            stamp_token_txn(conn, company, token_id, now)
    if reason and audit_refusal:
        with store.write() as conn:
            head = audit.read_head(conn, company)
            audit.append(conn, head, ts=store.now(), principal=handle or "unknown", action="auth.rejected",
                         subject=f"token:{token_id}", data={"reason": reason})
            audit.save_head(conn, head)
    if reason:
        raise Unauthenticated(f"token refused: {reason}")
    return Session(store.shared_company(company), principal)


@contextmanager
def open_session(url: str, token: str, *, state_dir: Path | None = None,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[Session]:
    """Open the store at ``url``, authenticate ``token`` and yield its :class:`Session`; the store is closed
    on the way out. With ``state_dir`` (a workspace's ``.roster/``), artifacts are under its ``artifacts/``
    and the workspace's signed audit checkpoints are taken after commits, as for the CLI. For a process
    that acts through its own token outside the CLI (a program runner's ``token: true``). Raises
    :class:`Unauthenticated`, :class:`~roster.errors.StoreBusy`, :class:`~roster.errors.UsageError`."""
    store = Store.open(url, artifact_root=state_dir / "artifacts" if state_dir is not None else None,
                       lock_timeout=lock_timeout)
    try:
        if state_dir is not None:
            from roster.store.checkpoints import attach_default  # only with a workspace

            attach_default(store, state_dir)
        yield store.session(token)
    finally:
        store.close()
