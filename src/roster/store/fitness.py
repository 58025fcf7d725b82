"""Fitness from the record: every figure counted from runs, corrections, escalations and KPI readings,
never from what an agent says of itself (definitions: :mod:`roster.kernel.fitness`, docs/fitness.md).

One read of the window's runs (with their task's workflow and their approval request's status) is
tallied per grain in one pass; corrections and escalations are counted by SQL; KPI contribution looks up
each success between the readings around it. Grains: per agent, per (agent, workflow), per model or
runner (the run's model, else its agent's runner kind), and per (agent, workflow, transition) for
reputation.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, select

from roster.kernel.fitness import FAILURE_BURDEN, Tally, figures, lower_bound
from roster.kernel.rights import Resource
from roster.kernel.spec import CompanySpec, duration_seconds
from roster.store.company_base import ActorRef, CompanyBase
from roster.store.schema import approval_requests, corrections, escalations, kpi_readings, runs, tasks
from roster.store.store import format_ts

DEFAULT_WINDOW = 7 * 86400
"""Seconds of the default window (7 days); ``roster fitness --window 30d`` widens it."""

REPUTATION_WINDOW = 30 * 86400
"""Seconds of history reputation reads (30 days): routing and the ladder look further back than a report."""

SHADOW = "shadow"
"""The outcome of a shadow run (:mod:`roster.kernel.stages`): what it proposed was recorded, never applied."""

_NOBODYS = frozenset({"running", "stopped", "checked"})
"""Run outcomes that are nobody's outcome: not ended, stopped by a kill switch, budget or hold, or a
goal's check without a run."""


class FitnessVerbs(CompanyBase):
    """Fitness, reputation and the record behind them (mixed into ``CompanyStore``)."""

    def fitness(self, *, window_seconds: int = DEFAULT_WINDOW, agent: str | None = None,
                actor: ActorRef | None = None) -> dict[str, Any]:
        """Fitness over the last ``window_seconds`` (runs started since then), as JSON:
        ``{"since", "until" (ISO 8601 UTC), "window_seconds", "settle", "min_outcomes",
        "agents": [{"agent", **figures, "workflows": [{"workflow", **figures, "transitions": [{"transition",
        "outcomes", "successes", "reputation"}]}]}], "models": [{"model", **figures}]}`` with the figures of
        :func:`roster.kernel.fitness.figures`. ``agent`` keeps one agent (and the models it ran). With
        ``actor``: needs ``read`` on the whole company (humans; agents by a grant of ``*``), else
        :class:`Denied` (audited). Answers from indexed reads, in under a second over 100,000 runs."""
        with self._reading(actor, "fitness.read", f"company:{self.company}") as (conn, cache, who):
            if who is not None:
                self._authorize(cache, who, "read", Resource("company", self.company))
            assert cache.spec is not None
            return self.fitness_txn(conn, cache.spec, window_seconds=window_seconds, agent=agent)

    def fitness_txn(self, conn: Connection, spec: CompanySpec, *, window_seconds: int = DEFAULT_WINDOW,
                    agent: str | None = None) -> dict[str, Any]:
        """:meth:`fitness` inside ``conn``'s transaction, trusted (the runtime's routing, briefs)."""
        now = self.store.clock()
        since, until = format_ts(now - timedelta(seconds=window_seconds)), format_ts(now)
        settled_before = format_ts(now - timedelta(seconds=duration_seconds(spec.fitness.settle)))
        tallies = _Tallies()
        successes = self._tally_runs_txn(conn, spec, tallies, since, settled_before, agent)
        self._tally_corrections_txn(conn, spec, tallies, since, agent)
        self._tally_escalations_txn(conn, tallies, since, agent)
        self._tally_kpis_txn(conn, spec, tallies, successes, since)
        least = spec.fitness.min_outcomes
        agents = []
        for name in sorted(tallies.agents):
            workflows = []
            for (who, workflow), tally in sorted(tallies.workflows.items()):
                if who != name:
                    continue
                moves = [{"transition": t, "outcomes": n, "successes": s, "reputation": round(lower_bound(s, n), 4)}
                         for (a, w, t), (n, s) in sorted(tallies.transitions.items()) if a == name and w == workflow]
                workflows.append({"workflow": workflow, **figures(tally, min_outcomes=least), "transitions": moves})
            agents.append({"agent": name, **figures(tallies.agents[name], min_outcomes=least), "workflows": workflows})
        models = [{"model": m, **figures(t, min_outcomes=least)} for m, t in sorted(tallies.models.items())]
        return {"since": since, "until": until, "window_seconds": window_seconds, "settle": spec.fitness.settle,
                "min_outcomes": least, "agents": agents, "models": models}

    def reputations_txn(self, conn: Connection, spec: CompanySpec, *, workflow: str | None = None,
                        agents: list[str] | None = None,
                        window_seconds: int = REPUTATION_WINDOW) -> dict[tuple[str, str], dict[str, Any]]:
        """Reputation per (agent, workflow) over the last ``window_seconds`` (default 30 days), trusted,
        inside ``conn``'s transaction: ``{"outcomes", "successes", "score", "success_rate",
        "usd_per_success", "enough"}``. ``score`` (0..1) is the Wilson lower bound of the success rate
        (:func:`roster.kernel.fitness.lower_bound`), so little evidence ranks low; ``success_rate`` and
        ``usd_per_success`` are ``None`` below ``fitness.min_outcomes`` (or when unknown). ``workflow``
        and ``agents`` narrow the read (the escalation ladder asks about a few peers on one workflow)."""
        since = format_ts(self.store.clock() - timedelta(seconds=window_seconds))
        return {key: {"outcomes": fig["evidence"], "successes": fig["successes"], "score": fig["reputation"],
                      "success_rate": fig["success_rate"], "usd_per_success": fig["usd_per_success"],
                      "enough": fig["enough"]}
                for key, fig in self.figures_since_txn(conn, spec, since, agents=agents, workflow=workflow).items()}

    def figures_since_txn(self, conn: Connection, spec: CompanySpec, since: str, *, agents: list[str] | None = None,
                          workflow: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        """The figures (:func:`roster.kernel.fitness.figures`, burden included) of each (agent, workflow)
        over the runs started since ``since`` (ISO 8601 UTC), trusted, inside ``conn``'s transaction;
        ``agents`` and ``workflow`` narrow the read."""
        settled_before = format_ts(self.store.clock() - timedelta(seconds=duration_seconds(spec.fitness.settle)))
        tallies = _Tallies()
        self._tally_runs_txn(conn, spec, tallies, since, settled_before, agents, workflow=workflow)
        self._tally_corrections_txn(conn, spec, tallies, since, agents, workflow=workflow)
        least = spec.fitness.min_outcomes
        return {key: figures(tally, min_outcomes=least) for key, tally in tallies.workflows.items()}

    def _tally_runs_txn(self, conn: Connection, spec: CompanySpec, tallies: _Tallies, since: str,
                        settled_before: str, agent: str | list[str] | None, *,
                        workflow: str | None = None) -> dict[tuple[str, str], list[str]]:
        """One pass over the window's ended runs (of ``agent``, one or several, and on ``workflow``, if
        given); returns when each (agent, workflow) succeeded."""
        query = (select(runs.c.agent, tasks.c.workflow, runs.c.model, runs.c.outcome, runs.c.failure_code,
                        runs.c.transition, runs.c.corrected_at, runs.c.ended_at, approval_requests.c.status,
                        runs.c.cost_usd, runs.c.input_tokens + runs.c.output_tokens, runs.c.wall_seconds,
                        runs.c.task_id, runs.c.agreed)
                 .select_from(runs.outerjoin(tasks, and_(tasks.c.company_id == runs.c.company_id,
                                                         tasks.c.id == runs.c.task_id))
                              .outerjoin(approval_requests, and_(approval_requests.c.company_id == runs.c.company_id,
                                                                 approval_requests.c.id == runs.c.approval_id)))
                 .where(runs.c.company_id == self.company, runs.c.started_at >= since, runs.c.outcome != "running"))
        query = _narrow(query, runs.c.agent, agent, tasks.c.workflow, workflow)
        succeeded_at: dict[tuple[str, str], list[str]] = defaultdict(list)
        runner_kinds = _runner_kinds(spec)
        fine: dict[tuple[str, str | None, str], Tally] = defaultdict(Tally)  # merged into the grains at the end
        for (who, workflow, model, outcome, code, transition, corrected, ended, status, cost, tokens, seconds,
             task_id, agreed) in conn.execute(query):
            tally = fine[(who, workflow, model or runner_kinds.get(who, "unknown"))]
            tally.runs += 1
            tally.tokens += tokens or 0
            if cost is None:
                tally.unpriced_runs += 1
            else:
                tally.cost_usd += cost
            if code is not None and code in FAILURE_BURDEN:
                tally.burden[FAILURE_BURDEN[code]] += 1
            if task_id is None or outcome in _NOBODYS or workflow is None:
                continue
            if seconds is not None:
                tally.latencies.append(seconds)
            if outcome == SHADOW:  # a shadow run: it succeeded if it agreed with what happened
                verdict = "unsettled" if agreed is None else "success" if agreed else "miss"
            else:
                verdict = _verdict(outcome, transition, corrected, ended, status, settled_before)
            if verdict == "unsettled":
                tally.unsettled += 1
                continue
            tally.outcomes += 1
            if verdict == "success":
                tally.successes += 1
                succeeded_at[(who, workflow)].append(ended)
            elif outcome != "succeeded" and outcome != "waiting" and outcome != SHADOW:
                tally.failed += 1
            if transition is not None:
                counts = tallies.transitions[(who, workflow, transition)]
                counts[0] += 1
                counts[1] += verdict == "success"
        for (who, workflow, model), tally in fine.items():
            for grain in tallies.grains(who, workflow, model):
                grain.merge(tally)
        return succeeded_at

    def _tally_corrections_txn(self, conn: Connection, spec: CompanySpec, tallies: _Tallies, since: str,
                               agent: str | list[str] | None, *, workflow: str | None = None) -> None:
        query = (select(corrections.c.agent, corrections.c.workflow, runs.c.model, corrections.c.kind, func.count())
                 .select_from(corrections.join(runs, and_(runs.c.company_id == corrections.c.company_id,
                                                          runs.c.id == corrections.c.run_id)))
                 .where(corrections.c.company_id == self.company, corrections.c.at >= since)
                 .group_by(corrections.c.agent, corrections.c.workflow, runs.c.model, corrections.c.kind))
        query = _narrow(query, corrections.c.agent, agent, corrections.c.workflow, workflow)
        runner_kinds = _runner_kinds(spec)
        for who, workflow, model, kind, count in conn.execute(query):
            for tally in tallies.grains(who, workflow, model or runner_kinds.get(who, "unknown")):
                tally.burden[kind] += int(count)

    def _tally_escalations_txn(self, conn: Connection, tallies: _Tallies, since: str, agent: str | None) -> None:
        """Escalations an agent raised (not tied to a run: counted per agent and per workflow only)."""
        query = (select(escalations.c.from_agent, tasks.c.workflow, func.count())
                 .select_from(escalations.outerjoin(tasks, and_(tasks.c.company_id == escalations.c.company_id,
                                                                tasks.c.id == escalations.c.task_id)))
                 .where(escalations.c.company_id == self.company, escalations.c.created_at >= since)
                 .group_by(escalations.c.from_agent, tasks.c.workflow))
        if agent is not None:
            query = query.where(escalations.c.from_agent == agent)
        for who, workflow, count in conn.execute(query):
            for tally in tallies.grains(who, workflow, None):
                tally.burden["escalations"] += int(count)

    def _tally_kpis_txn(self, conn: Connection, spec: CompanySpec, tallies: _Tallies,
                        succeeded_at: dict[tuple[str, str], list[str]], since: str) -> None:
        """KPI contribution: for each success on a workflow with linked KPIs, how each KPI moved from the
        reading before it to the reading after it (attribution, not causation)."""
        linked = {k for (_, w) in succeeded_at if w in spec.workflows for k in spec.workflows[w].kpis}
        readings: dict[str, tuple[list[str], list[float]]] = {}
        for kpi in sorted(linked):
            before = conn.execute(select(kpi_readings.c.measured_at, kpi_readings.c.value).where(
                kpi_readings.c.company_id == self.company, kpi_readings.c.kpi == kpi,
                kpi_readings.c.measured_at < since).order_by(kpi_readings.c.measured_at.desc()).limit(1)).all()
            rows = before + conn.execute(select(kpi_readings.c.measured_at, kpi_readings.c.value).where(
                kpi_readings.c.company_id == self.company, kpi_readings.c.kpi == kpi,
                kpi_readings.c.measured_at >= since).order_by(kpi_readings.c.measured_at)).all()
            readings[kpi] = ([r[0] for r in rows], [float(r[1]) for r in rows])
        for (who, workflow), times in succeeded_at.items():
            for kpi in spec.workflows[workflow].kpis if workflow in spec.workflows else ():
                at, values = readings.get(kpi, ([], []))
                sign = -1.0 if spec.kpis[kpi].direction == "down" else 1.0
                moved = dict.fromkeys(("toward", "away", "unchanged", "unmeasured"), 0)
                for t in times:
                    i = bisect.bisect_right(at, t)
                    if i == 0 or i == len(at):
                        moved["unmeasured"] += 1
                        continue
                    change = (values[i] - values[i - 1]) * sign
                    moved["toward" if change > 0 else "away" if change < 0 else "unchanged"] += 1
                for tally in (tallies.agents[who], tallies.workflows[(who, workflow)]):
                    totals = tally.kpis.setdefault(kpi, dict.fromkeys(moved, 0))
                    for key, n in moved.items():
                        totals[key] += n


class _Tallies:
    """The window's tallies, per grain."""

    def __init__(self) -> None:
        self.agents: dict[str, Tally] = defaultdict(Tally)
        self.workflows: dict[tuple[str, str], Tally] = defaultdict(Tally)
        self.models: dict[str, Tally] = defaultdict(Tally)
        self.transitions: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])

    def grains(self, agent: str, workflow: str | None, model: str | None) -> list[Tally]:
        found = [self.agents[agent]]
        if workflow is not None:
            found.append(self.workflows[(agent, workflow)])
        if model is not None:
            found.append(self.models[model])
        return found


def _narrow(query: Any, agent_column: Any, agent: str | list[str] | None, workflow_column: Any,
            workflow: str | None) -> Any:
    """``query`` kept to one agent or several, and to one workflow, when given."""
    if isinstance(agent, str):
        query = query.where(agent_column == agent)
    elif agent is not None:
        query = query.where(agent_column.in_(agent))
    return query if workflow is None else query.where(workflow_column == workflow)


def _runner_kinds(spec: CompanySpec) -> dict[str, str]:
    """Each agent's runner kind: the model-or-runner grain of runs that name no model."""
    return {name: (a.runner.kind if a.runner else "none") for name, a in spec.agents.items()}


def _verdict(outcome: str, transition: str | None, corrected: str | None, ended: str | None, status: str | None,
             settled_before: str) -> str:
    """``success``, ``miss`` (a settled outcome that is not one) or ``unsettled``."""
    if outcome not in ("succeeded", "waiting") or transition is None or corrected is not None:
        return "miss"
    if outcome == "waiting":
        if status == "pending":
            return "unsettled"
        if status != "approved":
            return "miss"  # expired, stale or never found: the transition was not made
    return "success" if ended is not None and ended <= settled_before else "unsettled"

