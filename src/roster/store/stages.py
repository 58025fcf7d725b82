"""Autonomy stages (:mod:`roster.kernel.stages`): reading them, a human setting one, and the criteria
moving one, each audited.

A stage set here (a row of ``stages``) takes precedence over the spec's ``stage`` key; every change
moves the company's rights revision, so each store handle's cache (``CompanyCache.stage_of``) and the
runtime's offers see it at their next transaction. The store enforces the stage where it matters: a
``shadow`` agent may not claim or move a task of that workflow, and an ``assist`` agent's transitions
open approval requests (:mod:`roster.store.tasks`).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from roster.errors import Denied, NotFound, UsageError
from roster.kernel.rights import Resource
from roster.kernel.stages import ALL_WORKFLOWS, STAGES
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase, CompanyCache
from roster.store.schema import stages

CRITERIA = "system"
"""Who set a stage the criteria moved (``set_by``)."""


class StageVerbs(CompanyBase):
    """Autonomy stages (mixed into ``CompanyStore``)."""

    def stages(self, *, agent: str | None = None, actor: ActorRef | None = None) -> list[dict[str, Any]]:
        """Each agent's stage on each workflow it may act on (by role, a transition's ``by``), by agent then
        workflow: ``{"agent", "workflow", "stage", "source" ("spec", "human" or "criteria"), "set_by",
        "set_at" (ISO 8601 UTC or None), "reason", "evidence"}``. ``agent`` keeps one (:class:`NotFound`
        if the spec has no such agent). Any principal of the company may read stages."""
        with self._reading(actor, "stage.read", f"company:{self.company}") as (conn, cache, _who):
            assert cache.spec is not None
            if agent is not None and agent not in cache.spec.agents:
                raise NotFound(f"no agent '{agent}' in the spec")
            rows = {(r.agent, r.workflow): r for r in conn.execute(
                select(stages).where(stages.c.company_id == self.company))}
        found = []
        for handle in sorted(cache.spec.agents):
            if agent is not None and handle != agent:
                continue
            actor_ = cache.actors.get(handle)
            for name, flow in sorted(cache.spec.workflows.items()):
                if actor_ is None or not any(actor_.matches(t.by) for t in flow.transitions.values()):
                    continue
                row = rows.get((handle, name)) or rows.get((handle, ALL_WORKFLOWS))
                found.append({
                    "agent": handle, "workflow": name, "stage": cache.stage_of(handle, name),
                    "source": "spec" if row is None else "criteria" if row.set_by == CRITERIA else "human",
                    "set_by": row.set_by if row else None, "set_at": row.set_at if row else None,
                    "reason": row.reason if row else "", "evidence": json.loads(row.evidence) if row else {}})
        return found

    def set_stage(self, agent: str, stage: str, *, workflow: str | None = None, reason: str,
                  actor: ActorRef) -> dict[str, Any]:
        """A human sets ``agent``'s stage on ``workflow`` (``None``: every workflow), with a ``reason``
        (audited as ``stage.set``). It sticks until new evidence (outcomes after it) crosses a criterion
        again. Needs ``admin`` on the company. Raises :class:`UsageError` (unknown stage, no reason),
        :class:`NotFound` (agent, workflow), :class:`Denied`. Returns the stage as :meth:`stages` shows it."""
        if stage not in STAGES:
            raise UsageError(f"unknown stage '{stage}'; expected one of {', '.join(STAGES)}")
        if not reason.strip():
            raise UsageError("a stage change needs a reason (--reason), for the agent's record")
        subject = f"principal:{agent}"
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                who = self._actor(cache, actor)
                self._authorize(cache, who, "admin", Resource("company", self.company))
                assert cache.spec is not None
                if agent not in cache.spec.agents:
                    raise NotFound(f"no agent '{agent}' in the spec")
                if workflow is not None and workflow not in cache.spec.workflows:
                    raise NotFound(f"no workflow '{workflow}'; expected one of {', '.join(sorted(cache.spec.workflows))}")
                before = cache.stage_of(agent, workflow or ALL_WORKFLOWS)
                self.move_stage_txn(conn, head, cache, agent, workflow or ALL_WORKFLOWS, stage, by=who.handle,
                                    reason=reason, evidence={}, action="stage.set", before=before)
                audit.save_head(conn, head)
        except (NotFound, UsageError, Denied) as exc:
            self._audit_rejection(actor, "stage.set", subject, exc, {"workflow": workflow, "stage": stage})
            raise
        return next((s for s in self.stages(agent=agent) if workflow is None or s["workflow"] == workflow),
                    {"agent": agent, "workflow": workflow or ALL_WORKFLOWS, "stage": stage})

    def move_stage_txn(self, conn: Connection, head: audit.ChainHead, cache: CompanyCache, agent: str,
                       workflow: str, stage: str, *, by: str, reason: str, evidence: dict[str, Any], action: str,
                       before: str, breaches: int = 0) -> None:
        """Record ``agent``'s stage on ``workflow`` (or ``*``) inside ``conn``'s transaction and audit it
        as ``action`` (``stage.set`` by a human; ``stage.demote`` by the criteria), with the stage
        ``before`` and the ``evidence``; the rights revision moves. Setting ``*`` replaces the agent's
        per-workflow rows."""
        now = self.store.now()
        if workflow == ALL_WORKFLOWS:
            conn.execute(delete(stages).where(stages.c.company_id == self.company, stages.c.agent == agent))
        values = {"stage": stage, "set_by": by, "reason": reason, "evidence": json.dumps(evidence, sort_keys=True),
                  "set_at": now, "breaches": breaches}
        updated = conn.execute(update(stages).where(stages.c.company_id == self.company, stages.c.agent == agent,
                                                    stages.c.workflow == workflow), values).rowcount
        if not updated:
            conn.execute(insert(stages), {"company_id": self.company, "agent": agent, "workflow": workflow, **values})
        head.rights_revision += 1
        audit.append(conn, head, ts=now, principal=by, action=action, subject=f"principal:{agent}",
                     data={"workflow": workflow, "from": before, "to": stage, "reason": reason, "evidence": evidence})

    def stage_row_txn(self, conn: Connection, agent: str, workflow: str) -> Any:
        """The ``stages`` row of (agent, workflow), else of (agent, ``*``), else ``None``."""
        rows = {r.workflow: r for r in conn.execute(select(stages).where(
            stages.c.company_id == self.company, stages.c.agent == agent,
            stages.c.workflow.in_([workflow, ALL_WORKFLOWS])))}
        return rows.get(workflow) or rows.get(ALL_WORKFLOWS)



def refuse_shadow(cache: CompanyCache, who: Any, action: str, workflow: str) -> None:
    """The store's rule for a ``shadow`` agent: it may not ``action`` (claim, transition) a task of
    ``workflow``. Raises :class:`Denied` saying why and how a human promotes it; a no-op otherwise."""
    if who.kind == "agent" and cache.stage_of(who.handle, workflow) == "shadow":
        raise Denied(who.handle, action, f"workflow '{workflow}'",
                     f"it is in stage 'shadow' there: its results are recorded beside the owner's and compared, "
                     f"never applied; a human promotes it (roster stage {who.handle} {workflow} --set assist)")
