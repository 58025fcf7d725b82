"""Selection pressure: every (agent, workflow) judged against the spec's stage criteria, and acted on.

:meth:`StageCriteriaVerbs.judge_stages` (``roster up``'s leader runs it every ``fitness.evaluate_every``)
computes each (agent, workflow)'s metrics (:data:`roster.kernel.stages.METRICS`) over ``fitness.window``,
but never from before its stage was last set (a human's setting sticks until *new* evidence crosses a
criterion; an automatic move waits for new evidence too), and then, by :func:`roster.kernel.stages.judge`:

- **breach** (any ``demote`` criterion, with ``min_outcomes``): the agent goes one stage down, audited
  as ``stage.demote`` with the evidence, and its human is told how to reverse it (an escalation,
  category ``demotion``); already in ``shadow``, the breach is counted, and at ``retire_after`` breaches
  a retirement proposal goes to the human (category ``retirement``);
- **expansion** (every ``promote`` criterion): a promotion request with the evidence goes to the human
  (category ``promotion``), once while it is open; the human promotes with ``roster stage``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, select

from roster.kernel.fitness import median
from roster.kernel.spec import duration_seconds
from roster.kernel.stages import STAGES, judge, step
from roster.store import audit
from roster.store.company_base import CompanyBase, CompanyCache
from roster.store.schema import approval_requests, runs, stages, tasks
from roster.store.stages import CRITERIA
from roster.store.store import format_ts


class StageCriteriaVerbs(CompanyBase):
    """Judging stages against the criteria (mixed into ``CompanyStore``); a trusted runtime call."""

    def judge_stages(self) -> list[dict[str, Any]]:
        """Judge every (agent, workflow) with outcomes in the window and act (see the module docstring).
        Returns what was done: ``[{"agent", "workflow", "stage", "move" ("promote", "demote", "breach",
        "retire"), "why": [criteria], "metrics": {...}}]``."""
        with self.store.read() as conn:
            cache = self.current_txn(conn)
            assert cache.spec is not None
            spec = cache.spec
            now = self.store.clock()
            window_start = format_ts(now - timedelta(seconds=duration_seconds(spec.fitness.window)))
            rows = {(r.agent, r.workflow): r for r in conn.execute(
                select(stages).where(stages.c.company_id == self.company))}
            judged = self.figures_since_txn(conn, spec, window_start)
            pool = _pool_medians(judged)
            verdicts = []
            for (agent, workflow), fig in sorted(judged.items()):
                if agent not in spec.agents:
                    continue
                row = rows.get((agent, workflow)) or rows.get((agent, "*"))
                if row is not None and row.set_at > window_start:  # only evidence after the stage was set
                    fig = self.figures_since_txn(conn, spec, row.set_at, agents=[agent], workflow=workflow).get(
                        (agent, workflow))
                    if fig is None:
                        continue
                metrics = self._metrics_txn(conn, agent, workflow, fig, pool.get(workflow),
                                            row.set_at if row is not None and row.set_at > window_start
                                            else window_start, now)
                verdict = judge(metrics, spec.fitness.promote, spec.fitness.demote, enough=fig["enough"])
                if verdict.move is not None:
                    verdicts.append((agent, workflow, verdict, metrics))
        done = []
        for agent, workflow, verdict, metrics in verdicts:
            acted = self._act(agent, workflow, verdict.move, list(verdict.why), metrics)
            if acted is not None:
                done.append(acted)
        return done

    def _metrics_txn(self, conn: Connection, agent: str, workflow: str, fig: dict[str, Any],
                     pool_median: float | None, since: str, now: datetime) -> dict[str, float | None]:
        """The criteria's metrics of (agent, workflow) from its figures since ``since``, its approval
        requests, and its pool's median cost per success."""
        decided = dict(conn.execute(select(approval_requests.c.status, func.count()).where(
            approval_requests.c.company_id == self.company, approval_requests.c.requested_by == agent,
            approval_requests.c.workflow == workflow, approval_requests.c.kind == "transition",
            approval_requests.c.created_at >= since,
            approval_requests.c.status.in_(("approved", "rejected"))).group_by(approval_requests.c.status)).all())
        approved, rejected = int(decided.get("approved", 0)), int(decided.get("rejected", 0))
        last_rejection = conn.execute(select(func.max(approval_requests.c.decided_at)).where(and_(
            approval_requests.c.company_id == self.company, approval_requests.c.requested_by == agent,
            approval_requests.c.workflow == workflow, approval_requests.c.status == "rejected"))).scalar()
        first = conn.execute(select(func.min(runs.c.started_at)).select_from(runs.join(tasks, and_(
            tasks.c.company_id == runs.c.company_id, tasks.c.id == runs.c.task_id))).where(
            runs.c.company_id == self.company, runs.c.agent == agent, tasks.c.workflow == workflow,
            runs.c.started_at >= since)).scalar()
        quiet_since = datetime.fromisoformat(max(last_rejection or "", first or since, since))
        usd = fig.get("usd_per_success")
        burden = sum(fig["burden"].values())
        return {
            "outcomes": float(fig["evidence"]),
            "success_rate": fig["success_rate"],
            "approval_rate": approved / (approved + rejected) if approved + rejected else 1.0,
            "days_without_rejection": round((now - quiet_since).total_seconds() / 86400, 3),
            "cost_vs_pool_median": usd / pool_median if usd is not None and pool_median else None,
            "burden_per_outcome": burden / fig["evidence"] if fig["evidence"] else None,
            "p95_seconds": fig["p95_seconds"],
        }

    def _act(self, agent: str, workflow: str, move: str, why: list[str],
             metrics: dict[str, float | None]) -> dict[str, Any] | None:
        evidence = {"criteria": why, "metrics": metrics}
        shown = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) and not v.is_integer() else f"{k} {v:g}"
                          for k, v in metrics.items() if v is not None)
        with self.store.write() as conn:
            head, cache = self._head_txn(conn)
            stage = cache.stage_of(agent, workflow)
            acted: dict[str, Any] | None = {"agent": agent, "workflow": workflow, "stage": stage, "move": move,
                                            "why": why, "metrics": metrics}
            if move == "demote" and stage != STAGES[0]:
                lower = step(stage, -1)
                reason = f"breached {'; '.join(why)} ({shown})"
                self.move_stage_txn(conn, head, cache, agent, workflow, lower, by=CRITERIA, reason=reason,
                                    evidence=evidence, action="stage.demote", before=stage)
                self.escalate_agent_txn(conn, head, cache, agent, category="demotion", reason=(
                    f"{agent} was demoted from {stage} to {lower} on {workflow}: {reason}. To reverse it: "
                    f"roster stage {agent} {workflow} --set {stage} --reason WHY"))
                acted["stage"] = lower
            elif move == "demote":  # already in shadow: count the breach, and propose retirement at the limit
                breaches = self._count_breach_txn(conn, head, cache, agent, workflow, why, evidence)
                acted["move"] = "breach"
                if breaches >= cache.spec.fitness.retire_after:
                    opened = self.escalate_agent_txn(conn, head, cache, agent, category="retirement", reason=(
                        f"{agent} stays unfit on {workflow}: {breaches} breach(es) in shadow ({'; '.join(why)}; "
                        f"{shown}). Proposed: retire it (roster principal status {agent} retired) or redesign it"))
                    acted["move"] = "retire" if opened is not None else "breach"
            elif move == "promote" and stage != STAGES[-1]:
                higher = step(stage, +1)
                opened = self.escalate_agent_txn(conn, head, cache, agent, category="promotion", reason=(
                    f"{agent} meets the expansion criteria on {workflow} for {higher}: {'; '.join(why)} ({shown}). "
                    f"To promote it: roster stage {agent} {workflow} --set {higher} --reason WHY"))
                if opened is None:
                    acted = None  # already proposed and still open
                else:
                    audit.append(conn, head, ts=self.store.now(), principal=CRITERIA, action="stage.propose",
                                 subject=f"principal:{agent}", data={"workflow": workflow, "from": stage, "to": higher,
                                                                     "evidence": evidence, "escalation": opened})
            else:
                acted = None
            audit.save_head(conn, head)
        return acted

    def _count_breach_txn(self, conn: Connection, head: audit.ChainHead, cache: CompanyCache, agent: str,
                          workflow: str, why: list[str], evidence: dict[str, Any]) -> int:
        """One more breach of ``agent`` in shadow on ``workflow`` (its stage row restarts the evidence)."""
        row = self.stage_row_txn(conn, agent, workflow)
        breaches = (row.breaches if row is not None else 0) + 1
        self.move_stage_txn(conn, head, cache, agent, workflow, STAGES[0], by=CRITERIA,
                            reason=f"breached in shadow: {'; '.join(why)}", evidence=evidence,
                            action="stage.breach", before=STAGES[0], breaches=breaches)
        return breaches


def _pool_medians(judged: dict[tuple[str, str], dict[str, Any]]) -> dict[str, float]:
    """Per workflow, the median cost per success of the agents with enough evidence and a known cost."""
    costs: dict[str, list[float]] = {}
    for (_agent, workflow), fig in judged.items():
        if fig["enough"] and fig.get("usd_per_success"):
            costs.setdefault(workflow, []).append(fig["usd_per_success"])
    return {w: median(c) for w, c in costs.items()}

