"""What the dashboard reads at population scale, each an indexed query bounded by a page: a workflow's
tasks per state and a page of one state's column (``ix_tasks_work_order``), runs per hour and
spend per day (``runs.started_at``), and what every agent is doing right now.

Each function takes the :class:`~roster.store.company.CompanyStore` an interface obtained through
``Session.company_for`` (``read`` on the workflow, or ``oversee`` on the company): the decision is taken
there, not here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Select, case, func, select

from roster.store.schema import approval_requests, escalations, runs, tasks
from roster.store.store import format_ts
from roster.store.tasks import Task, task_from_row

if TYPE_CHECKING:
    from roster.store.company import CompanyStore

MAX_COLUMN = 100
"""Most tasks one column shows at once; the rest are a page further."""


def state_counts(company: CompanyStore, workflow: str, *, owner: str | None = None, title: str = "") -> dict[str, int]:
    """Tasks of ``workflow`` per state (states with none left out), filtered as :func:`column` filters."""
    query = _filtered(select(tasks.c.state, func.count()).where(
        tasks.c.company_id == company.company, tasks.c.workflow == workflow).group_by(tasks.c.state), owner, title)
    with company.store.read() as conn:
        return {state: n for state, n in conn.execute(query)}


def column(company: CompanyStore, workflow: str, state: str, *, owner: str | None = None, title: str = "",
           offset: int = 0, limit: int = 25) -> list[Task]:
    """One page of a state's tasks, in work order (priority, then id), filtered by owner and by a title
    substring (case-insensitive). ``limit`` is capped at :data:`MAX_COLUMN`."""
    query = _filtered(select(tasks).where(tasks.c.company_id == company.company, tasks.c.workflow == workflow,
                                          tasks.c.state == state), owner, title)
    query = query.order_by(tasks.c.priority.desc(), tasks.c.id).offset(max(offset, 0)).limit(min(limit, MAX_COLUMN))
    with company.store.read() as conn:
        return [task_from_row(r) for r in conn.execute(query)]


def _filtered(query: Select, owner: str | None, title: str) -> Select:
    if owner:
        query = query.where(tasks.c.owner == owner)
    if title:
        query = query.where(func.lower(tasks.c.title).contains(title.lower(), autoescape=True))
    return query


def runs_per_hour(company: CompanyStore, *, hours: int = 24) -> list[tuple[str, int]]:
    """Runs started in each of the last ``hours`` hours (UTC), oldest first, as ``("YYYY-MM-DDTHH", n)``;
    hours without runs count 0."""
    now = company.store.clock()
    since = format_ts(now - timedelta(hours=hours))
    hour = func.substr(runs.c.started_at, 1, 13)
    with company.store.read() as conn:
        found = dict(conn.execute(select(hour, func.count()).where(
            runs.c.company_id == company.company, runs.c.started_at >= since).group_by(hour)).all())
    slots = [format_ts(now - timedelta(hours=h))[:13] for h in range(hours - 1, -1, -1)]
    return [(slot, found.get(slot, 0)) for slot in slots]


def spend_per_day(company: CompanyStore, *, since: str) -> list[dict[str, object]]:
    """Runs started on each UTC day since ``since``, oldest first: ``{"day": "YYYY-MM-DD", "runs",
    "successes", "cost_usd" (priced runs only), "unpriced_runs"}``."""
    day = func.substr(runs.c.started_at, 1, 10)
    succeeded = func.sum(case((runs.c.outcome == "succeeded", 1), else_=0))
    query = (select(day, func.count(), succeeded, func.coalesce(func.sum(runs.c.cost_usd), 0.0),
                    func.count() - func.count(runs.c.cost_usd))
             .where(runs.c.company_id == company.company, runs.c.started_at >= since).group_by(day).order_by(day))
    with company.store.read() as conn:
        return [{"day": d, "runs": n, "successes": int(s or 0), "cost_usd": float(c), "unpriced_runs": u}
                for d, n, s, c, u in conn.execute(query)]


def agents_now(company: CompanyStore) -> dict[str, dict[str, int]]:
    """What each agent is doing right now, by the record: ``{agent: {"running": runs in flight,
    "waiting": its approval requests pending, "escalated": its escalations open}}`` (agents with none of
    these left out)."""
    now: dict[str, dict[str, int]] = {}
    with company.store.read() as conn:
        for key, query in (
            ("running", select(runs.c.agent, func.count()).where(
                runs.c.company_id == company.company, runs.c.outcome == "running").group_by(runs.c.agent)),
            ("waiting", select(approval_requests.c.requested_by, func.count()).where(
                approval_requests.c.company_id == company.company, approval_requests.c.status == "pending")
                .group_by(approval_requests.c.requested_by)),
            ("escalated", select(escalations.c.from_agent, func.count()).where(
                escalations.c.company_id == company.company, escalations.c.status == "open")
                .group_by(escalations.c.from_agent)),
        ):
            for agent, n in conn.execute(query):
                now.setdefault(agent, {"running": 0, "waiting": 0, "escalated": 0})[key] = n
    return now
