"""The always-on metric, from what was recorded: each agent's time working, blocked, waiting, watching
or idle over a window, and how many agents were around the clock (:mod:`roster.kernel.presence`).

Where the intervals come from (never sampled, never a model's word):

- **working**: its runs, from ``run.start`` to ``run.finish`` (a run in flight: to now);
- **blocked**: the agent paused or retired (``principal.pause`` / ``.retire`` to ``principal.resume``),
  and the company's kill switch on (``killswitch.pause`` of ``*`` to its ``killswitch.resume``);
- **waiting**: its approval requests, from asked to decided (pending: to now; expired: to expiry);
- **watching**: while it has ``triggers`` in the spec (since the agent was added: the current spec is
  used for the whole window), and
  while one of its goals is active (``goal.set`` or ``goal.resume`` to the goal's pause, stall or close).

Not counted yet: a blocker on one task (the agent may still work others), a portfolio's kill switch
(agents are not bound to a portfolio in the spec), and budgets (an exhausted agent budget pauses the
agent, which is counted).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, union_all

from roster.errors import UsageError
from roster.kernel.presence import STATES, always_on, time_in_states
from roster.kernel.rights import Resource
from roster.store.company_base import ActorRef, CompanyBase
from roster.store.schema import approval_requests, audit_events, goals, runs
from roster.store.store import format_ts

_GOAL_OPEN = {"goal.set", "goal.resume"}
_GOAL_SHUT = {"goal.pause", "goal.abandon", "goal.met", "goal.exhausted", "goal.stalled"}


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


class PresenceVerbs(CompanyBase):
    """The always-on metric (mixed into ``CompanyStore``)."""

    def presence(self, *, actor: ActorRef | None, days: int = 1) -> dict[str, Any]:
        """Each active or paused agent's seconds in each state (:data:`~roster.kernel.presence.STATES`)
        over the last ``days`` days, day by day (oldest first, each the 24 hours ending at the same time
        of day as now), and per day how many agents were around the clock. Shape: ``{"days": [{"since",
        "until", "around_the_clock", "agents": {handle: {"seconds": {state: s}, "utilization": working
        share, "around_the_clock": bool}}}]}``. ``oversee`` (humans) sees every agent; another principal
        only itself. Raises :class:`UsageError` for ``days`` outside 1-31."""
        if not 1 <= days <= 31:
            raise UsageError(f"presence is reported for 1 to 31 days, not {days}")
        end = self.store.clock()
        start = end - timedelta(days=days)
        with self._reading(actor, "presence.read", f"company:{self.company}") as (conn, cache, who):
            assert cache.spec is not None
            agents = [h for h, p in cache.principals.items() if p.kind == "agent" and p.status != "retired"]
            if who is not None and not self._decide(cache, who.handle, "oversee",
                                                    Resource("company", self.company)).allowed:
                agents = [h for h in agents if h == who.handle]
            intervals = self._intervals(conn, cache, agents, start, end)
        report = []
        for day in range(days):
            since, until = start + timedelta(days=day), start + timedelta(days=day + 1)
            per_agent = {}
            for agent in sorted(agents):
                seconds = time_in_states(since, until, intervals[agent])
                per_agent[agent] = {"seconds": seconds, "utilization": seconds["working"] / 86400,
                                    "around_the_clock": always_on(seconds)}
            report.append({"since": format_ts(since), "until": format_ts(until), "agents": per_agent,
                           "around_the_clock": sum(a["around_the_clock"] for a in per_agent.values())})
        return {"days": report, "states": list(STATES)}

    def _intervals(self, conn: Any, cache: Any, agents: list[str], start: datetime,
                   end: datetime) -> dict[str, dict[str, list[tuple[datetime, datetime]]]]:
        found: dict[str, dict[str, list]] = {a: defaultdict(list) for a in agents}
        if not agents:
            return found
        since, until = format_ts(start), format_ts(end)
        # The runs overlapping the window: those still running and those that ended after it began, each a
        # range of the index runs (company_id, ended_at) (0023); a bound on started_at alone read every run.
        columns = (runs.c.agent, runs.c.started_at, runs.c.ended_at)
        mine = (runs.c.company_id == self.company, runs.c.agent.in_(agents))
        overlapping = union_all(select(*columns).where(*mine, runs.c.ended_at.is_(None)),
                                select(*columns).where(*mine, runs.c.ended_at > since, runs.c.started_at < until))
        for row in conn.execute(overlapping):
            found[row.agent]["working"].append((_ts(row.started_at), _ts(row.ended_at) if row.ended_at else end))
        for row in conn.execute(select(approval_requests.c.requested_by, approval_requests.c.created_at,
                                       approval_requests.c.decided_at, approval_requests.c.expires_at,
                                       approval_requests.c.status).where(
                approval_requests.c.company_id == self.company, approval_requests.c.requested_by.in_(agents),
                approval_requests.c.created_at < until)):
            closed = row.decided_at or (row.expires_at if row.status != "pending" else None)
            found[row.requested_by]["waiting"].append((_ts(row.created_at), _ts(closed) if closed else end))
        for agent in agents:
            spec_agent = cache.spec.agents.get(agent)
            if spec_agent is not None and spec_agent.triggers:  # armed since the agent was added, at most
                found[agent]["watching"].append((max(start, _ts(cache.principals[agent].created_at)), end))
        subjects = {f"principal:{a}": a for a in agents}
        opened: dict[str, datetime] = {}
        company_off: list[tuple[datetime, datetime]] = []
        switch_on: datetime | None = None
        for row in conn.execute(select(audit_events.c.ts, audit_events.c.action, audit_events.c.subject).where(
                audit_events.c.company_id == self.company, audit_events.c.ts < until,
                audit_events.c.subject.in_([*subjects, "scope:*"])).order_by(audit_events.c.seq)):
            when = _ts(row.ts)
            if row.subject == "scope:*":
                if row.action == "killswitch.pause" and switch_on is None:
                    switch_on = when
                elif row.action == "killswitch.resume" and switch_on is not None:
                    company_off.append((switch_on, when))
                    switch_on = None
                continue
            agent = subjects[row.subject]
            if row.action in ("principal.pause", "principal.retire") and agent not in opened:
                opened[agent] = when
            elif row.action == "principal.resume" and agent in opened:
                found[agent]["blocked"].append((opened.pop(agent), when))
        for agent, when in opened.items():
            found[agent]["blocked"].append((when, end))
        if switch_on is not None:
            company_off.append((switch_on, end))
        for agent in agents:
            found[agent]["blocked"] += company_off
        goal_agent = {f"goal:{r.id}": r.agent for r in conn.execute(select(goals.c.id, goals.c.agent).where(
            goals.c.company_id == self.company, goals.c.agent.in_(agents)))}
        active: dict[str, datetime] = {}
        if goal_agent:
            for row in conn.execute(select(audit_events.c.ts, audit_events.c.action, audit_events.c.subject).where(
                    audit_events.c.company_id == self.company, audit_events.c.ts < until,
                    audit_events.c.subject.in_(list(goal_agent))).order_by(audit_events.c.seq)):
                if row.action in _GOAL_OPEN and row.subject not in active:
                    active[row.subject] = _ts(row.ts)
                elif row.action in _GOAL_SHUT and row.subject in active:
                    found[goal_agent[row.subject]]["watching"].append((active.pop(row.subject), _ts(row.ts)))
        for subject, when in active.items():
            found[goal_agent[subject]]["watching"].append((when, end))
        return found
