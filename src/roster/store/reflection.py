"""What a reflection run is shown: the agent's period since its last reflection, read from the record.

A reflection run (see :mod:`roster.store.plans` for the plan it revises) looks back over the **period**:
from the start of the agent's previous reflection run, or :data:`FIRST_PERIOD_SECONDS` back for its
first. :meth:`ReflectionVerbs.reflection_brief_txn` reads, in the brief's one read transaction:

- the mission and the current plan, with the diff of human edits since the agent's own last version;
- the period's runs: counts per outcome, their cost (runs that could not be priced counted apart), and
  the newest :data:`RUNS_SHOWN` with their outcome, failure and cost;
- its goals: state, spend against budget, the last check;
- the movement of its KPIs (its own and its workflows'): the reading at the period's start and the latest;
- its memory pad's new entries, and those merged, expired or forgotten (``memory_removed``);
- its approval requests decided in the period (approved, rejected, with the note);
- human edits of its work: holds, field edits and hand-offs on the tasks it ran in the period;
- the messages it received in the period.

Every list is bounded, so a busy agent's brief stays within its context budget (the assembler cuts
optional parts further when needed).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from roster.store import audit
from roster.store.company_base import CompanyCache
from roster.store.goals import goal_from_row
from roster.store.plans import PlanVerbs
from roster.store.schema import approval_requests, goals, kpi_readings, memory_entries, messages, runs
from roster.store.store import format_ts

FIRST_PERIOD_SECONDS = 86400.0
"""How far back an agent's first reflection looks (a day)."""
RUNS_SHOWN = 30
ITEMS_SHOWN = 20
EDIT_ACTIONS = frozenset({"task.hold", "task.edit", "task.handoff", "artifact.record"})
"""Audit actions that count as a human's edit of an agent's work, on a task the agent ran."""


class ReflectionVerbs(PlanVerbs):
    """The reflection brief (mixed into ``CompanyStore``)."""

    def reflection_since_txn(self, conn: Connection, agent: str, run_id: str) -> str:
        """When the period of reflection run ``run_id`` of ``agent`` starts: the start of its previous
        reflection run, or :data:`FIRST_PERIOD_SECONDS` before now (ISO 8601 UTC)."""
        started = conn.scalar(select(func.max(runs.c.started_at)).where(
            runs.c.company_id == self.company, runs.c.agent == agent, runs.c.reflection.is_(True),
            runs.c.id != run_id))
        if started is not None:
            return started
        return format_ts(datetime.fromisoformat(self.store.now()) - timedelta(seconds=FIRST_PERIOD_SECONDS))

    def reflection_brief_txn(self, conn: Connection, cache: CompanyCache, agent: str, run_id: str) -> dict[str, Any]:
        """The reflection part of the brief of run ``run_id`` of ``agent`` (see the module docstring), as a
        JSON-ready dict: ``since``, ``plan``, ``runs``, ``goals``, ``kpis``, ``memory``, ``memory_removed``,
        ``approvals``, ``edits``, ``messages``. A trusted read: the runtime briefs the agent on its own record."""
        since = self.reflection_since_txn(conn, agent, run_id)
        period = (runs.c.company_id == self.company, runs.c.agent == agent, runs.c.started_at >= since,
                  runs.c.id != run_id)
        counts = {row.outcome: row.n for row in conn.execute(
            select(runs.c.outcome, func.count().label("n")).where(*period).group_by(runs.c.outcome))}
        cost = conn.execute(select(func.coalesce(func.sum(runs.c.cost_usd), 0.0),
                                   func.count().filter(runs.c.cost_usd.is_(None))).where(*period)).one()
        recent = conn.execute(select(runs).where(*period).order_by(runs.c.started_at.desc()).limit(RUNS_SHOWN)).all()
        task_ids = sorted({r.task_id for r in recent if r.task_id is not None})[:ITEMS_SHOWN]
        return {
            "since": since,
            "plan": self.plan_brief_txn(conn, agent),
            "runs": {"count": sum(counts.values()), "by_outcome": counts, "cost_usd": round(float(cost[0]), 6),
                     "unpriced_runs": int(cost[1]),
                     "recent": [{"run_id": r.id, "started_at": r.started_at, "trigger": r.trigger[:200],
                                 "task_id": r.task_id, "goal_id": r.goal_id, "outcome": r.outcome,
                                 "transition": r.transition, "failure": r.failure_message and r.failure_message[:300],
                                 "cost_usd": r.cost_usd} for r in recent]},
            "goals": self._goals_txn(conn, agent, since),
            "kpis": self._kpi_movement_txn(conn, cache, agent, since),
            "memory": [{"id": m.id, "kind": m.kind, "text": m.text, "confidence": m.confidence}
                       for m in conn.execute(select(memory_entries).where(
                           memory_entries.c.company_id == self.company, memory_entries.c.pad == agent,
                           memory_entries.c.created_at >= since)
                           .order_by(memory_entries.c.id.desc()).limit(ITEMS_SHOWN))],
            "memory_removed": self._memory_removed_txn(conn, agent, since),
            "approvals": [{"request_id": a.id, "task_id": a.task_id, "transition": a.transition, "tool": a.tool,
                           "status": a.status, "decided_by": a.decided_by, "note": a.note}
                          for a in conn.execute(select(approval_requests).where(
                              approval_requests.c.company_id == self.company,
                              approval_requests.c.requested_by == agent, approval_requests.c.decided_at >= since)
                              .order_by(approval_requests.c.id.desc()).limit(ITEMS_SHOWN))],
            "edits": self._edits_txn(conn, cache, agent, task_ids, since),
            "messages": [{"id": m.id, "from": m.sender, "task_id": m.task_id, "body": m.body[:1000], "at": m.created_at}
                         for m in conn.execute(select(messages).where(
                             messages.c.company_id == self.company, messages.c.recipient == agent,
                             messages.c.created_at >= since).order_by(messages.c.id.desc()).limit(ITEMS_SHOWN))],
        }

    def _memory_removed_txn(self, conn: Connection, agent: str, since: str) -> list[dict[str, Any]]:
        """Entries of the agent's pad merged, expired or forgotten in the period (its pad's audit events)."""
        removed = []
        for event in audit.latest_on(conn, self.company, f"memory:{agent}", ITEMS_SHOWN):
            if event.ts < since:
                break
            if event.action in ("memory.merge", "memory.expire", "memory.forget"):
                removed.append({"action": event.action, "by": event.principal, "at": event.ts,
                                "data": dict(event.data)})
        return removed

    def _goals_txn(self, conn: Connection, agent: str, since: str) -> list[dict[str, Any]]:
        """The agent's goals that are open, or were closed in the period."""
        rows = conn.execute(select(goals).where(goals.c.company_id == self.company, goals.c.agent == agent)
                            .where((goals.c.state.in_(("active", "paused", "stalled"))) | (goals.c.updated_at >= since))
                            .order_by(goals.c.id.desc()).limit(ITEMS_SHOWN))
        shown = []
        for row in rows:
            goal = goal_from_row(row)
            shown.append({"id": goal.id, "objective": goal.objective, "check": goal.check.describe(),
                          "state": goal.state, "reason": goal.reason, "spend": goal.spend.model_dump(),
                          "budget": goal.budget.model_dump(exclude_none=True),
                          "last_check_passed": (goal.last_check or {}).get("passed")})
        return shown

    def _kpi_movement_txn(self, conn: Connection, cache: CompanyCache, agent: str, since: str) -> list[dict[str, Any]]:
        """Each KPI the agent is pulled toward (its own ``kpis`` and those of the workflows it may move):
        its reading at the period's start, the latest, and which way is better."""
        spec = cache.spec
        assert spec is not None
        me = spec.agents.get(agent)
        names = list(me.kpis) if me else []
        moves = {t.partition(".")[0] for t in (me.rights.transitions or [])} if me else set()
        for name, workflow in spec.workflows.items():
            if name in moves or any(agent in t.by for t in workflow.transitions.values()):
                names += [k for k in workflow.kpis if k not in names]
        shown = []
        for name in names[:ITEMS_SHOWN]:
            kpi = spec.kpis.get(name)
            if kpi is None:
                continue
            before = conn.execute(select(kpi_readings.c.value, kpi_readings.c.measured_at).where(
                kpi_readings.c.company_id == self.company, kpi_readings.c.kpi == name,
                kpi_readings.c.measured_at <= since).order_by(kpi_readings.c.id.desc()).limit(1)).first()
            latest = conn.execute(select(kpi_readings.c.value, kpi_readings.c.measured_at).where(
                kpi_readings.c.company_id == self.company, kpi_readings.c.kpi == name)
                .order_by(kpi_readings.c.id.desc()).limit(1)).first()
            shown.append({"name": name, "direction": kpi.direction, "target": kpi.target, "unit": kpi.unit,
                          "at_start": before.value if before else None, "latest": latest.value if latest else None,
                          "latest_at": latest.measured_at if latest else None})
        return shown

    def _edits_txn(self, conn: Connection, cache: CompanyCache, agent: str, task_ids: list[int],
                   since: str) -> list[dict[str, Any]]:
        """Humans' holds, edits, hand-offs and artifact versions on the tasks the agent ran in the period."""
        humans = {h for h, p in cache.principals.items() if p.kind == "human"}
        edits = []
        for task_id in task_ids:
            for event in audit.latest_on(conn, self.company, f"task:{task_id}", ITEMS_SHOWN):
                if event.ts < since:
                    break
                if event.action in EDIT_ACTIONS and event.principal in humans:
                    edits.append({"task_id": task_id, "by": event.principal, "action": event.action, "at": event.ts,
                                  "data": dict(event.data)})
        return sorted(edits, key=lambda e: e["at"], reverse=True)[:ITEMS_SHOWN]
