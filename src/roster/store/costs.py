"""Spend and budgets: what runs cost, per agent and per portfolio, against the spec's budgets.

Spend is the sum of ``runs.cost_usd`` (USD) since the start of the budget's calendar period, in UTC
(day: midnight; week: Monday midnight; month: the 1st); a token budget counts ``input_tokens +
output_tokens`` instead. A run counts toward its agent, the portfolio of its task's workflow (a run
without a task counts toward no portfolio), and the company.

A run that could not be priced has ``cost_usd`` NULL: its cost is unknown, never 0. Sums in USD are then
lower bounds, and every report says how many runs they leave out (``unpriced_runs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, case, func, select

from roster.kernel.rights import Resource
from roster.kernel.spec import Budget, CompanySpec
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase
from roster.store.schema import runs, tasks
from roster.store.store import format_ts


@dataclass(frozen=True)
class BudgetStatus:
    """A budget and its spend in the current period (since ``since``, an ISO 8601 UTC timestamp).

    A USD budget has ``limit_usd``; ``spent_usd`` is what its priced runs cost, and ``unpriced_runs`` the
    runs whose cost is unknown (so ``spent_usd`` is a lower bound when it is not 0). A token budget has
    ``limit_tokens`` and counts ``spent_tokens`` (input + output), which every run reports."""

    scope: str
    period: str
    limit_usd: float | None
    spent_usd: float
    since: str
    unpriced_runs: int = 0
    limit_tokens: int | None = None
    spent_tokens: int = 0

    @property
    def unit(self) -> str:
        """``usd`` or ``tokens``: what the budget counts."""
        return "usd" if self.limit_usd is not None else "tokens"

    @property
    def spent_known(self) -> bool:
        """Whether the spend is known in full: always for tokens; for USD, when every run was priced."""
        return self.unit == "tokens" or self.unpriced_runs == 0

    @property
    def fraction(self) -> float:
        """The spent fraction of the limit (for USD, of the priced runs only)."""
        if self.limit_usd is not None:
            return self.spent_usd / self.limit_usd
        return self.spent_tokens / (self.limit_tokens or 1)

    def level(self, warn_at: float) -> str:
        """``exhausted`` (at 100%), ``warn`` (past ``warn_at``), ``unknown`` (under both as far as is known,
        but some runs could not be priced) or ``ok``."""
        if self.fraction >= 1:
            return "exhausted"
        if self.fraction >= warn_at:
            return "warn"
        return "ok" if self.spent_known else "unknown"

    def describe(self) -> str:
        """The spend against the limit, for humans: ``0.6000 of 1.00 USD``, ``1200 of 5000 tokens``,
        ``at least 0.2000 of 1.00 USD (3 run(s) could not be priced)`` or, when no run was priced,
        ``cost unknown of 1.00 USD (3 run(s) could not be priced)``."""
        if self.limit_usd is None:
            return f"{self.spent_tokens} of {self.limit_tokens} tokens"
        if self.spent_known:
            return f"{self.spent_usd:.4f} of {self.limit_usd:.2f} USD"
        spent = f"at least {self.spent_usd:.4f}" if self.spent_usd else "cost unknown"
        return f"{spent} of {self.limit_usd:.2f} USD ({self.unpriced_runs} run(s) could not be priced)"


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
        """The spend in ``budget``'s scope since the start of its current period."""
        with self.store.read() as conn:
            return self.budget_status_txn(conn, budget, self.spec())

    def budget_status_txn(self, conn: Connection, budget: Budget, spec: CompanySpec) -> BudgetStatus:
        """:meth:`budget_status` inside ``conn``'s transaction, with the company's current ``spec``."""
        since = format_ts(period_start(self.store.clock(), budget.period))
        query = select(func.coalesce(func.sum(runs.c.cost_usd), 0.0), func.count() - func.count(runs.c.cost_usd),
                       func.coalesce(func.sum(runs.c.input_tokens + runs.c.output_tokens), 0)).where(
            runs.c.company_id == self.company, runs.c.started_at >= since)
        kind, _, name = budget.scope.partition(":")
        if kind == "agent":
            query = query.where(runs.c.agent == name)
        elif kind == "portfolio":
            workflows = [w for w, wf in spec.workflows.items() if wf.portfolio == name]
            query = query.select_from(runs.join(tasks, (tasks.c.company_id == runs.c.company_id)
                                                & (tasks.c.id == runs.c.task_id))).where(
                tasks.c.workflow.in_(workflows))
        spent, unpriced, tokens = conn.execute(query).one()
        return BudgetStatus(budget.scope, budget.period, budget.usd, round(float(spent or 0.0), 6), since,
                            unpriced_runs=int(unpriced or 0), limit_tokens=budget.tokens, spent_tokens=int(tokens or 0))

    def task_cost(self, task_id: int) -> float:
        """USD spent by the priced runs on one task so far (runs that could not be priced add nothing)."""
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

    def note_budget_warning(self, scope: str, period: str, why: str, *, unit: str = "usd") -> None:
        """Audit a soft-threshold warning (``budget.warn``) of a budget in ``unit`` (``usd`` or ``tokens``),
        by the system."""
        self._system_event("budget.warn", f"budget:{scope}", {"scope": scope, "period": period, "unit": unit,
                                                               "reason": why})

    def note_budget_exhausted(self, scope: str, why: str) -> None:
        """Audit a hard stop (``budget.exhausted``), by the system."""
        self._system_event("budget.exhausted", f"budget:{scope}", {"scope": scope, "reason": why})

    def note_budget_unpriced(self, scope: str, period: str, unpriced_runs: int, why: str) -> None:
        """Audit that a USD budget cannot be enforced in full because runs in its scope could not be priced
        (``budget.unpriced``), by the system."""
        self._system_event("budget.unpriced", f"budget:{scope}", {"scope": scope, "period": period,
                                                                   "unpriced_runs": unpriced_runs, "reason": why})

    def _system_event(self, action: str, subject: str, data: dict) -> None:
        with self.store.write() as conn:
            head, _ = self._head_txn(conn)
            audit.append(conn, head, ts=self.store.now(), principal="system", action=action, subject=subject, data=data)
            audit.save_head(conn, head)

    def costs(self, *, since: str | None = None, actor: ActorRef | None = None) -> dict[str, list[dict]]:
        """Spend per agent and per portfolio, as rows ``{name, runs, successes, cost_usd, priced_cost_usd,
        unpriced_runs, input_tokens, output_tokens, cost_per_success_usd}``. ``cost_usd`` (USD) and
        ``cost_per_success_usd`` are ``None`` when the cost is unknown (``unpriced_runs`` runs could not be
        priced; ``priced_cost_usd`` is what the others cost) or, for the latter, with no success. With
        ``actor``: needs ``read`` on the whole company (humans; agents by a grant of ``*``), else
        :class:`Denied` (audited)."""
        if actor is not None:
            with self._reading(actor, "costs.read", f"company:{self.company}") as (_conn, cache, who):
                assert who is not None
                self._authorize(cache, who, "read", Resource("company", self.company))
        succeeded = func.sum(case((runs.c.outcome == "succeeded", 1), else_=0))
        base = select(func.count(), succeeded, func.coalesce(func.sum(runs.c.cost_usd), 0.0),
                      func.coalesce(func.sum(runs.c.input_tokens), 0), func.coalesce(func.sum(runs.c.output_tokens), 0),
                      func.count() - func.count(runs.c.cost_usd)).where(runs.c.company_id == self.company)
        if since is not None:
            base = base.where(runs.c.started_at >= since)
        spec = self.spec()
        with self.store.read() as conn:
            per_agent = conn.execute(base.add_columns(runs.c.agent).group_by(runs.c.agent).order_by(runs.c.agent))
            agents = [_row(r.agent, *r[:6]) for r in per_agent]
            joined = base.add_columns(tasks.c.workflow).select_from(runs.join(
                tasks, (tasks.c.company_id == runs.c.company_id) & (tasks.c.id == runs.c.task_id))).group_by(
                tasks.c.workflow)
            by_portfolio: dict[str, list] = {}
            for r in conn.execute(joined):
                portfolio = spec.workflows[r.workflow].portfolio if r.workflow in spec.workflows else "(removed)"
                totals = by_portfolio.setdefault(portfolio, [0, 0, 0.0, 0, 0, 0])
                for i in range(6):
                    totals[i] += r[i] or 0
        portfolios = [_row(p, *t) for p, t in sorted(by_portfolio.items())]
        return {"agents": agents, "portfolios": portfolios}


def _row(name: str, count: int, successes: int, cost: float, input_tokens: int, output_tokens: int,
         unpriced: int) -> dict:
    successes, unpriced, priced = int(successes or 0), int(unpriced or 0), round(float(cost or 0.0), 6)
    known = unpriced == 0
    return {"name": name, "runs": int(count), "successes": successes, "cost_usd": priced if known else None,
            "priced_cost_usd": priced, "unpriced_runs": unpriced,
            "input_tokens": int(input_tokens), "output_tokens": int(output_tokens),
            "cost_per_success_usd": round(priced / successes, 6) if successes and known else None}
