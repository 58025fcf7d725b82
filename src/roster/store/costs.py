"""Spend and budgets: what runs cost, per agent and per portfolio, against the spec's budgets.

Spend is the sum of ``runs.cost_usd`` (USD) since the start of the budget's calendar period, in UTC
(day: midnight; week: Monday midnight; month: the 1st). A run counts toward its agent, the portfolio of
its task's workflow (a run without a task counts toward no portfolio), and the company.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select

from roster.kernel.rights import Resource
from roster.kernel.spec import Budget, CompanySpec
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase
from roster.store.schema import runs, tasks
from roster.store.store import format_ts


@dataclass(frozen=True)
class BudgetStatus:
    """A budget and its spend in the current period: ``level`` is ok, warn or exhausted."""

    scope: str
    period: str
    limit_usd: float
    spent_usd: float
    since: str

    @property
    def fraction(self) -> float:
        return self.spent_usd / self.limit_usd

    def level(self, warn_at: float) -> str:
        return "exhausted" if self.fraction >= 1 else "warn" if self.fraction >= warn_at else "ok"


def period_start(moment: datetime, period: str) -> datetime:
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


class CostVerbs(CompanyBase):
    """Spend and budget status (mixed into ``CompanyStore``)."""

    def budget_status(self, budget: Budget) -> BudgetStatus:
        since = format_ts(period_start(self.store.clock(), budget.period))
        query = select(func.coalesce(func.sum(runs.c.cost_usd), 0.0)).where(
            runs.c.company_id == self.company, runs.c.started_at >= since)
        kind, _, name = budget.scope.partition(":")
        if kind == "agent":
            query = query.where(runs.c.agent == name)
        elif kind == "portfolio":
            spec = self.spec()
            workflows = [w for w, wf in spec.workflows.items() if wf.portfolio == name]
            query = query.select_from(runs.join(tasks, (tasks.c.company_id == runs.c.company_id)
                                                & (tasks.c.id == runs.c.task_id))).where(
                tasks.c.workflow.in_(workflows))
        with self.store.read() as conn:
            spent = float(conn.scalar(query) or 0.0)
        return BudgetStatus(budget.scope, budget.period, budget.usd, round(spent, 6), since)

    def task_cost(self, task_id: int) -> float:
        """USD spent by all runs on one task so far."""
        with self.store.read() as conn:
            return float(conn.scalar(select(func.coalesce(func.sum(runs.c.cost_usd), 0.0)).where(
                runs.c.company_id == self.company, runs.c.task_id == task_id)) or 0.0)

    def budgets_for(self, agent: str, workflow: str | None, *, spec: CompanySpec | None = None) -> list[Budget]:
        """The budgets a run of ``agent`` on a task of ``workflow`` counts toward (``spec``: the current
        spec, if the caller has it)."""
        spec = spec or self.spec()
        portfolio = spec.workflows[workflow].portfolio if workflow in spec.workflows else None
        scopes = {"company", f"agent:{agent}"} | ({f"portfolio:{portfolio}"} if portfolio else set())
        return [b for b in spec.budgets if b.scope in scopes]

    def note_budget_warning(self, scope: str, period: str, why: str) -> None:
        """Audit a soft-threshold warning (``budget.warn``), by the system."""
        self._system_event("budget.warn", f"budget:{scope}", {"scope": scope, "period": period, "reason": why})

    def note_budget_exhausted(self, scope: str, why: str) -> None:
        """Audit a hard stop (``budget.exhausted``), by the system."""
        self._system_event("budget.exhausted", f"budget:{scope}", {"scope": scope, "reason": why})

    def _system_event(self, action: str, subject: str, data: dict) -> None:
        with self.store.write() as conn:
            head, _ = self._head_txn(conn)
            audit.append(conn, head, ts=self.store.now(), principal="system", action=action, subject=subject, data=data)
            audit.save_head(conn, head)

    def costs(self, *, since: str | None = None, actor: ActorRef | None = None) -> dict[str, list[dict]]:
        """Spend per agent and per portfolio: runs, successes, cost (USD) and cost per successful
        outcome (``None`` with no success). With ``actor``: needs ``read`` on the whole company
        (humans; agents by a grant of ``*``), else :class:`Denied` (audited)."""
        if actor is not None:
            with self._reading(actor, "costs.read", f"company:{self.company}") as (_conn, cache, who):
                assert who is not None
                self._authorize(cache, who, "read", Resource("company", self.company))
        succeeded = func.sum(case((runs.c.outcome == "succeeded", 1), else_=0))
        base = select(func.count(), succeeded, func.coalesce(func.sum(runs.c.cost_usd), 0.0),
                      func.coalesce(func.sum(runs.c.input_tokens), 0), func.coalesce(func.sum(runs.c.output_tokens), 0)
                      ).where(runs.c.company_id == self.company)
        if since is not None:
            base = base.where(runs.c.started_at >= since)
        spec = self.spec()
        with self.store.read() as conn:
            per_agent = conn.execute(base.add_columns(runs.c.agent).group_by(runs.c.agent).order_by(runs.c.agent))
            agents = [_row(r.agent, r[0], r[1], r[2], r[3], r[4]) for r in per_agent]
            joined = base.add_columns(tasks.c.workflow).select_from(runs.join(
                tasks, (tasks.c.company_id == runs.c.company_id) & (tasks.c.id == runs.c.task_id))).group_by(
                tasks.c.workflow)
            by_portfolio: dict[str, list] = {}
            for r in conn.execute(joined):
                portfolio = spec.workflows[r.workflow].portfolio if r.workflow in spec.workflows else "(removed)"
                totals = by_portfolio.setdefault(portfolio, [0, 0, 0.0, 0, 0])
                for i in range(5):
                    totals[i] += r[i] or 0
        portfolios = [_row(p, *t) for p, t in sorted(by_portfolio.items())]
        return {"agents": agents, "portfolios": portfolios}


def _row(name: str, count: int, successes: int, cost: float, input_tokens: int, output_tokens: int) -> dict:
    successes = int(successes or 0)
    return {"name": name, "runs": int(count), "successes": successes, "cost_usd": round(float(cost), 6),
            "input_tokens": int(input_tokens), "output_tokens": int(output_tokens),
            "cost_per_success_usd": round(float(cost) / successes, 6) if successes else None}
