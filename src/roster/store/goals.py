"""Goals: set, read and move an agent's goals; record their checks and what work toward them spent.

The rules of a goal (its check, budget, states and moves) are :mod:`roster.kernel.goals`; this module
keeps goals in the ``goals`` table, numbered per company, and audits every change:

- ``goal.set``: a goal was set (by a human, by the agent itself, or by the agent it reports to; the
  Cedar action ``goal.set`` on ``principal:<agent>`` decides);
- ``goal.pause``, ``goal.resume``, ``goal.abandon``: moved by whoever may set it, with a note;
- ``goal.check``: a check's result and evidence, recorded by the runtime; ``goal.met`` when it passed;
- ``goal.spend``: a goal run's spend, recorded by the runtime; ``goal.exhausted`` when it reached a
  limit of the budget, ``goal.stalled`` after ``stall_after`` goal runs in a row that changed nothing.

Reading goals: an agent sees its own goals and those it set; ``oversee`` (humans) sees every goal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from roster.errors import Denied, NotFound, StaleVersion, UsageError
from roster.kernel.contracts import Actor
from roster.kernel.goals import (
    CLOSED_STATES,
    DEFAULT_EVERY_SECONDS,
    DEFAULT_STALL_AFTER,
    GOAL_STATES,
    MAX_OBJECTIVE_CHARS,
    MIN_EVERY_SECONDS,
    GoalBudget,
    GoalCheck,
    GoalSpend,
    exhausted_by,
    move,
)
from roster.kernel.rights import Resource
from roster.kernel.values import check_json
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase, CompanyCache
from roster.store.goal_links import link_goal_task_txn
from roster.store.runs import RunRecord, run_record
from roster.store.schema import goals, runs
from roster.store.store import format_ts

SYSTEM = "system"
"""Who records what the runtime decides (checks, spend): no principal."""
MAX_EVIDENCE_CHARS = 4000
"""Longest text of a check's evidence kept (a command's output is cut to its tail)."""


@dataclass(frozen=True)
class Goal:
    """One goal of one agent. ``spend`` against ``budget``; ``last_check`` the evidence of the newest
    check (``{"passed": bool, ...}``) at ``checked_at``; ``idle_runs`` goal runs in a row that changed
    nothing; ``reason`` why it reached its state (a note, the check, the limit reached)."""

    id: int
    agent: str
    objective: str
    check: GoalCheck
    budget: GoalBudget
    spend: GoalSpend
    every_seconds: int
    stall_after: int
    deadline_at: str | None
    state: str
    reason: str
    idle_runs: int
    last_check: dict[str, Any] | None
    checked_at: str | None
    created_by: str
    created_at: str
    updated_at: str
    version: int

    @property
    def exhausted_by(self) -> str | None:
        """The limit of the budget the spend has reached, as a sentence, or None."""
        return exhausted_by(self.budget, self.spend)

    def deadline_passed(self, now: datetime) -> bool:
        """Whether the goal has a deadline and ``now`` (timezone-aware) is at or past it."""
        return self.deadline_at is not None and now >= _utc(self.deadline_at)


def goal_from_row(row: Any) -> Goal:
    spend = GoalSpend(usd=row.spent_usd, tokens=row.spent_tokens, runs=row.spent_runs, seconds=row.spent_seconds,
                      unpriced_runs=row.unpriced_runs)
    return Goal(row.id, row.agent, row.objective, GoalCheck.model_validate_json(row.check_spec),
                GoalBudget.model_validate_json(row.budget), spend, row.every_seconds, row.stall_after,
                row.deadline_at, row.state, row.reason, row.idle_runs,
                json.loads(row.last_check) if row.last_check else None, row.checked_at, row.created_by,
                row.created_at, row.updated_at, row.version)


class GoalVerbs(CompanyBase):
    """Goals (mixed into ``CompanyStore``)."""

    def set_goal(self, agent: str, objective: str, *, actor: ActorRef, check: GoalCheck, budget: GoalBudget,
                 every_seconds: int = DEFAULT_EVERY_SECONDS, stall_after: int = DEFAULT_STALL_AFTER,
                 deadline_at: str | None = None) -> Goal:
        """Set a goal for ``agent``: ``active`` at once. ``every_seconds`` is its cadence (at least 60),
        ``stall_after`` how many goal runs in a row may change nothing before it stalls, ``deadline_at``
        an ISO 8601 UTC time. Decides ``goal.set`` on ``principal:<agent>`` (humans; the agent itself;
        the agent it reports to; a command check only a human, as the runtime runs it on its host). Raises :class:`NotFound` (no such agent), :class:`UsageError` (an
        empty or over-long objective, a cadence under a minute, a KPI the spec does not define),
        :class:`Denied` (audited as ``goal.set.rejected``)."""
        objective = objective.strip()
        if not objective:
            raise UsageError("a goal needs an objective: what the agent should achieve, in a sentence")
        if len(objective) > MAX_OBJECTIVE_CHARS:
            raise UsageError(f"a goal's objective is at most {MAX_OBJECTIVE_CHARS} characters; got {len(objective)}")
        if every_seconds < MIN_EVERY_SECONDS:
            raise UsageError(f"a goal's cadence is at least {MIN_EVERY_SECONDS} seconds, not {every_seconds}: a goal "
                             "never loops tightly")
        if stall_after < 1:
            raise UsageError(f"stall_after is a number of goal runs, at least 1; not {stall_after}")
        if deadline_at is not None:
            _check_time("deadline", deadline_at)
            if _utc(deadline_at) <= self.store.clock():
                raise UsageError(f"the deadline {deadline_at} has passed already; give one in the future")
        request = {"agent": agent, "objective": objective, "check": check.model_dump(exclude_none=True),
                   "budget": budget.model_dump(exclude_none=True)}
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                who = self._actor(cache, actor)
                self._known_agent(cache, agent)
                self._authorize(cache, who, "goal.set", Resource("principal", agent),
                                runs_command=check.command is not None,
                                why="an agent sets goals for itself and for the agents that report to it, checked "
                                    "against a KPI (a command check runs on the runtime's host: a human's to set)")
                if check.kpi is not None and cache.spec is not None and check.kpi not in cache.spec.kpis:
                    known = ", ".join(sorted(cache.spec.kpis)) or "none"
                    raise UsageError(f"no KPI '{check.kpi}' in the spec to check against; KPIs: {known}")
                if who.kind == "agent":
                    self._within_agent_budget_txn(conn, cache, agent, budget)
                goal_id = (conn.scalar(select(func.max(goals.c.id)).where(goals.c.company_id == self.company))
                           or 0) + 1
                now = self.store.now()
                conn.execute(insert(goals), {
                    "company_id": self.company, "id": goal_id, "agent": agent, "objective": objective,
                    "check_spec": check.model_dump_json(exclude_none=True),
                    "budget": budget.model_dump_json(exclude_none=True), "every_seconds": every_seconds,
                    "stall_after": stall_after, "deadline_at": deadline_at, "state": "active", "due_at": now,
                    "created_by": who.handle, "created_at": now, "updated_at": now, "version": 1})
                audit.append(conn, head, ts=now, principal=who.handle, action="goal.set", subject=f"goal:{goal_id}",
                             data={**request, "every_seconds": every_seconds, "stall_after": stall_after,
                                   "deadline_at": deadline_at})
                audit.save_head(conn, head)
                return goal_from_row(self._goal_row_txn(conn, goal_id))
        except Denied as exc:
            self._audit_rejection(actor, "goal.set", f"principal:{agent}", exc, request)
            raise

    def get_goal(self, goal_id: int, *, actor: ActorRef | None) -> Goal:
        """Goal ``goal_id``: the agent's own or one it set, or any with ``oversee``. Raises
        :class:`NotFound` (also for a goal the actor may not see: its existence is not told)."""
        with self._reading(actor, "goal.read", f"goal:{goal_id}") as (conn, cache, who):
            row = conn.execute(select(goals).where(goals.c.company_id == self.company, goals.c.id == goal_id)).first()
            if row is None or not self._sees_goal(cache, who, row):
                raise NotFound(f"no goal {goal_id} in company '{self.company}'; list goals with 'roster goal list'")
            return goal_from_row(row)

    def list_goals(self, *, actor: ActorRef | None, agent: str | None = None, state: str | None = None,
                   limit: int = 100) -> list[Goal]:
        """Goals, newest first, at most ``limit``: of ``agent`` and in ``state`` when given. An agent
        without ``oversee`` sees its own, those it set, and those of the agents that report to it (as
        :meth:`get_goal`). Raises :class:`UsageError` (an unknown state)."""
        if state is not None and state not in GOAL_STATES:
            raise UsageError(f"no goal state '{state}'; states: {', '.join(GOAL_STATES)}")
        query = select(goals).where(goals.c.company_id == self.company)
        if agent is not None:
            query = query.where(goals.c.agent == agent)
        if state is not None:
            query = query.where(goals.c.state == state)
        with self._reading(actor, "goal.read", f"company:{self.company}") as (conn, cache, who):
            if who is not None and not self._decide(cache, who.handle, "oversee",
                                                    Resource("company", self.company)).allowed:
                managed = [h for h, p in cache.principals.items() if p.kind == "agent" and self._decide(
                    cache, who.handle, "goal.set", Resource("principal", h)).allowed]  # the rule of _sees_goal
                query = query.where((goals.c.agent == who.handle) | (goals.c.created_by == who.handle)
                                    | goals.c.agent.in_(managed))
            return [goal_from_row(r) for r in conn.execute(query.order_by(goals.c.id.desc()).limit(limit))]

    def move_goal(self, goal_id: int, verb: str, *, actor: ActorRef, note: str = "",
                  expected_version: int | None = None) -> Goal:
        """``pause``, ``resume`` or ``abandon`` goal ``goal_id``, with ``note`` (why). Decides ``goal.set``
        on the goal's agent. Raises :class:`NotFound`, :class:`UsageError` (a move its state does not
        allow, or one only the runtime makes), :class:`StaleVersion`, :class:`Denied` (audited)."""
        if verb not in ("pause", "resume", "abandon"):
            raise UsageError(f"a goal is paused, resumed or abandoned by hand; '{verb}' is decided by the runtime")
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                who = self._actor(cache, actor)
                row = self._goal_row_txn(conn, goal_id)
                if not self._sees_goal(cache, who, row):  # not told it exists, as get_goal
                    raise NotFound(f"no goal {goal_id} in company '{self.company}'; list goals with 'roster goal list'")
                self._authorize(cache, who, "goal.set", Resource("principal", row.agent),
                                why="an agent moves the goals of itself and of the agents that report to it")
                if expected_version is not None and row.version != expected_version:
                    raise StaleVersion(goal_id, expected_version, row.version)
                moved = self._move_txn(conn, head, row, verb, who.handle, note or f"{verb} by {who.handle}")
                audit.save_head(conn, head)
                return moved
        except Denied as exc:
            self._audit_rejection(actor, f"goal.{verb}", f"goal:{goal_id}", exc, {"note": note})
            raise

    # -- what the runtime records (trusted: no actor) --------------------------------------------------

    def active_goals(self, *, agent: str | None = None) -> list[Goal]:
        """The goals in state ``active`` (of ``agent`` when given), oldest first: what the runtime works
        toward and checks."""
        query = select(goals).where(goals.c.company_id == self.company, goals.c.state == "active")
        if agent is not None:
            query = query.where(goals.c.agent == agent)
        with self.store.read() as conn:
            return [goal_from_row(r) for r in conn.execute(query.order_by(goals.c.id))]

    def due_goals(self, agents: Iterable[str], *, limit: int = 100) -> list[Goal]:
        """The active goals of ``agents`` that are due (their cadence, or their backoff, has passed), the
        longest due first, at most ``limit``: one query, for the dispatcher's cycle."""
        wanted = set(agents)
        if not wanted:
            return []
        now = self.store.now()
        # The due goals of the company, from its (state, due_at) index; the agents are filtered here: an
        # IN list of every served agent cost one index probe per agent on every cycle.
        query = (select(goals).where(goals.c.company_id == self.company, goals.c.state == "active",
                                     goals.c.due_at <= now)  # a range of the index: nothing read when none is due
                 .order_by(goals.c.due_at, goals.c.id))
        with self.store.read() as conn:
            found = []
            for row in conn.execute(query):
                if row.agent in wanted:
                    found.append(goal_from_row(row))
                    if len(found) == limit:
                        break
            return found

    def start_goal_run(self, goal_id: int) -> Goal | None:
        """Take goal ``goal_id``'s due turn for a run: if it is still active and due, its next turn moves a
        cadence ahead (so neither this process nor another starts a second run for it meanwhile, and a
        run that never records its end does not loop), and the goal is returned; else None. The turn is
        taken by one conditional ``UPDATE``: of two processes taking it at once, one changes the row and
        the other, re-reading it after the first commits, finds it no longer due."""
        with self.store.write() as conn:
            row = conn.execute(select(goals).where(goals.c.company_id == self.company,
                                                   goals.c.id == goal_id)).first()
            now = self.store.clock()
            if row is None:
                return None
            taken = conn.execute(update(goals).where(
                goals.c.company_id == self.company, goals.c.id == goal_id, goals.c.state == "active",
                goals.c.due_at <= format_ts(now)),
                {"due_at": _next_turn(now + timedelta(seconds=row.every_seconds), row.deadline_at)})
            return goal_from_row(row) if taken.rowcount == 1 else None

    def goal_runs(self, goal_id: int, *, limit: int = 5) -> list[RunRecord]:
        """The newest ``limit`` runs that worked toward goal ``goal_id``, newest first."""
        with self.store.read() as conn:
            return self.goal_runs_txn(conn, goal_id, limit=limit)

    def goal_runs_txn(self, conn: Connection, goal_id: int, *, limit: int = 5) -> list[RunRecord]:
        """:meth:`goal_runs` inside ``conn``'s transaction (the brief's read)."""
        return [run_record(r) for r in conn.execute(
            select(runs).where(runs.c.company_id == self.company, runs.c.goal_id == goal_id)
            .order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(limit))]

    def goal_brief_txn(self, conn: Connection, goal_id: int, *, run_id: str | None = None) -> dict[str, Any]:
        """What a goal run's brief shows of goal ``goal_id``: the objective, the check and its last result,
        the spend against the budget, and what the last goal runs before ``run_id`` (the run being briefed)
        did. Raises :class:`NotFound`."""
        goal = goal_from_row(self._goal_row_txn(conn, goal_id))
        return {"id": goal.id, "objective": goal.objective, "check": goal.check.describe(), "state": goal.state,
                "last_check": goal.last_check, "checked_at": goal.checked_at,
                "budget": goal.budget.model_dump(exclude_none=True), "spend": goal.spend.model_dump(),
                "deadline_at": goal.deadline_at, "idle_runs": goal.idle_runs,
                "earlier_runs": [{"run_id": r.id, "started_at": r.started_at, "outcome": r.outcome,
                                  "failure": r.failure_message}
                                 for r in self.goal_runs_txn(conn, goal_id, limit=6) if r.id != run_id][:5]}

    def record_goal_run(self, goal_id: int, run_id: str, *, changed: bool) -> Goal:
        """Charge run ``run_id`` (ended) to goal ``goal_id``: its USD (None if it could not be priced),
        tokens in and out and wall seconds, as :meth:`record_goal_spend`. Raises :class:`NotFound`."""
        with self.store.read() as conn:
            row = conn.execute(select(runs).where(runs.c.company_id == self.company, runs.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"no run '{run_id}' in company '{self.company}'")
        return self.record_goal_spend(goal_id, usd=row.cost_usd, tokens=row.input_tokens + row.output_tokens,
                                      seconds=row.wall_seconds or 0.0, changed=changed)

    def record_goal_check(self, goal_id: int, *, passed: bool, evidence: Mapping[str, Any]) -> Goal:
        """Record a check of goal ``goal_id`` (``evidence``: what the check saw, text cut to
        :data:`MAX_EVIDENCE_CHARS`); a pass meets the goal (``goal.met``), unless it is closed already.
        Raises :class:`NotFound`, :class:`~roster.errors.InvalidValue` (evidence that is no JSON value)."""
        kept = {**_cut(evidence), "passed": passed}
        check_json("goal check evidence", kept)
        with self.store.write() as conn:
            head = self._head_txn(conn)[0]
            self._record_check_txn(conn, head, self._goal_row_txn(conn, goal_id), kept)
            audit.save_head(conn, head)
            return goal_from_row(self._goal_row_txn(conn, goal_id))

    def _record_check_txn(self, conn: Connection, head: audit.ChainHead, row: Any, kept: dict[str, Any]) -> None:
        """Record the evidence ``kept`` (with ``passed``) of a check of goal ``row``; a pass meets it."""
        now = self.store.now()
        conn.execute(update(goals).where(goals.c.company_id == self.company, goals.c.id == row.id),
                     {"last_check": json.dumps(kept, sort_keys=True), "checked_at": now})
        audit.append(conn, head, ts=now, principal=SYSTEM, action="goal.check", subject=f"goal:{row.id}",
                     data={"passed": kept["passed"]})
        if kept["passed"] and row.state not in CLOSED_STATES:
            self._move_txn(conn, head, self._goal_row_txn(conn, row.id), "meet", SYSTEM,
                           "the check passed: " + GoalCheck.model_validate_json(row.check_spec).describe())

    def record_goal_spend(self, goal_id: int, *, usd: float | None, tokens: int, seconds: float,
                          changed: bool) -> Goal:
        """Add one goal run's spend to goal ``goal_id`` (``usd=None``: the run could not be priced) and
        whether it changed anything: :meth:`charge_goal_txn` in a transaction of its own. Raises
        :class:`NotFound`."""
        with self.store.write() as conn:
            head = self._head_txn(conn)[0]
            goal = self.charge_goal_txn(conn, head, goal_id, usd=usd, tokens=tokens, seconds=seconds, changed=changed)
            audit.save_head(conn, head)
            return goal

    def charge_goal_txn(self, conn: Connection, head: audit.ChainHead, goal_id: int, *, usd: float | None,
                        tokens: int, seconds: float, changed: bool, task_run: str | None = None) -> Goal:
        """Charge one goal run inside ``conn``'s transaction (the crash sweep charges a crashed one, as
        unpriced). An active goal whose spend reaches a limit of its budget goes ``exhausted``; one whose
        last ``stall_after`` runs changed nothing goes ``stalled``; either escalates to a human. Its next
        turn is a cadence away, doubled for each run in a row that changed nothing (at most 16
        cadences): a goal that is getting nowhere backs off. With ``task_run`` (the id of a run on a task
        filed toward the goal) only the spend is charged: no goal run is counted, and its turn and count
        of idle runs stay as they were. Raises :class:`NotFound`."""
        row = self._goal_row_txn(conn, goal_id)
        if task_run is not None:  # a run on a task filed toward the goal: its spend, not a goal run
            spend = goal_from_row(row).spend.plus(usd=usd, tokens=tokens, seconds=seconds, runs=0)
            conn.execute(update(goals).where(goals.c.company_id == self.company, goals.c.id == goal_id), {
                "spent_usd": spend.usd, "spent_tokens": spend.tokens, "spent_seconds": spend.seconds,
                "unpriced_runs": spend.unpriced_runs, "updated_at": self.store.now()})
            audit.append(conn, head, ts=self.store.now(), principal=SYSTEM, action="goal.spend",
                         subject=f"goal:{goal_id}", data={"usd": usd, "tokens": tokens, "seconds": seconds,
                                                          "task_run": task_run})
            return self._closed_by_spend_txn(conn, head, goal_id, spend, idle=0)
        spend = goal_from_row(row).spend.plus(usd=usd, tokens=tokens, seconds=seconds)
        idle = 0 if changed else row.idle_runs + 1
        clock = self.store.clock()
        now = format_ts(clock)
        due = _next_turn(clock + timedelta(seconds=row.every_seconds * 2 ** min(idle, 4)), row.deadline_at)
        conn.execute(update(goals).where(goals.c.company_id == self.company, goals.c.id == goal_id), {
            "spent_usd": spend.usd, "spent_tokens": spend.tokens, "spent_runs": spend.runs,
            "spent_seconds": spend.seconds, "unpriced_runs": spend.unpriced_runs, "idle_runs": idle,
            "updated_at": now, "due_at": due})
        audit.append(conn, head, ts=now, principal=SYSTEM, action="goal.spend", subject=f"goal:{goal_id}",
                     data={"usd": usd, "tokens": tokens, "seconds": seconds, "changed": changed})
        return self._closed_by_spend_txn(conn, head, goal_id, spend, idle=idle)

    def _closed_by_spend_txn(self, conn: Connection, head: audit.ChainHead, goal_id: int, spend: GoalSpend, *,
                             idle: int) -> Goal:
        """After a charge: exhaust an active goal whose ``spend`` reached a limit of its budget, or stall one
        with ``idle`` runs in a row that changed nothing; either escalates. Returns the goal as it is."""
        row = self._goal_row_txn(conn, goal_id)
        limit = exhausted_by(GoalBudget.model_validate_json(row.budget), spend)
        if row.state == "active" and limit is not None:
            moved = self._move_txn(conn, head, row, "exhaust", SYSTEM, limit)
            self.escalate_goal_txn(conn, head, self.current_txn(conn), row, category="governance",
                                   reason=f"goal {row.id} exhausted before its check passed: {limit}. "
                                          + _summary(moved))
        elif row.state == "active" and idle >= row.stall_after:
            moved = self._move_txn(conn, head, row, "stall", SYSTEM, f"{idle} goal runs in a row changed nothing")
            self.escalate_goal_txn(conn, head, self.current_txn(conn), row, category="judgment",
                                   reason=f"goal {row.id} stalled: {idle} goal runs in a row changed nothing. "
                                          + _summary(moved))
        return goal_from_row(self._goal_row_txn(conn, goal_id))

    # -- helpers --------------------------------------------------------------------------------------

    def _goal_row_txn(self, conn: Connection, goal_id: int) -> Any:
        row = conn.execute(select(goals).where(goals.c.company_id == self.company, goals.c.id == goal_id)).first()
        if row is None:
            raise NotFound(f"no goal {goal_id} in company '{self.company}'; list goals with 'roster goal list'")
        return row

    def _within_agent_budget_txn(self, conn: Connection, cache: CompanyCache, agent: str, budget: GoalBudget) -> None:
        """An agent sets a goal within the budget: for each budget of the goal's agent (``agent:<handle>`` in
        the spec), the goal's budget in that unit is given and at most what is left of it this period.
        Raises :class:`UsageError` saying how much is left (a human sets any goal)."""
        assert cache.spec is not None
        for limit in cache.spec.budgets:
            if limit.scope != f"agent:{agent}":
                continue
            status = self.budget_status_txn(conn, limit, cache.spec)
            if limit.usd is not None:
                left, asked, unit, flag = max(0.0, limit.usd - status.spent_usd), budget.usd, "USD", "usd"
            else:
                left, asked, unit, flag = float(max(0, (limit.tokens or 0) - status.spent_tokens)), budget.tokens, \
                    "tokens", "tokens"
            if asked is None or asked > left:
                raise UsageError(f"'{agent}' has {left:g} {unit} left of its {limit.period}ly budget; an agent sets a "
                                 f"goal for it with a '{flag}' budget of at most that (a human may set any)")

    def _sees_goal(self, cache: CompanyCache, who: Actor | None, row: Any) -> bool:
        """Whether ``who`` may see goal ``row``: its agent, whoever set it, whoever may set its agent's goals
        (a manager), and ``oversee``."""
        return (who is None or row.agent == who.handle or row.created_by == who.handle
                or self._decide(cache, who.handle, "goal.set", Resource("principal", row.agent)).allowed
                or self._decide(cache, who.handle, "oversee", Resource("company", self.company)).allowed)

    def _move_txn(self, conn: Connection, head: audit.ChainHead, row: Any, verb: str, by: str, reason: str) -> Goal:
        state = move(row.state, verb)
        now = self.store.now()
        conn.execute(update(goals).where(goals.c.company_id == self.company, goals.c.id == row.id),
                     {"state": state, "reason": reason, "updated_at": now, "version": row.version + 1,
                      **({"idle_runs": 0, "due_at": now} if verb == "resume" else {})})
        action = {"meet": "goal.met", "exhaust": "goal.exhausted", "stall": "goal.stalled"}.get(verb, f"goal.{verb}")
        audit.append(conn, head, ts=now, principal=by, action=action, subject=f"goal:{row.id}",
                     data={"from": row.state, "to": state, "reason": reason})
        return goal_from_row(self._goal_row_txn(conn, row.id))

    def pause_goals_txn(self, conn: Connection, head: audit.ChainHead, agent: str, *, by: str, reason: str) -> int:
        """Pause ``agent``'s active and stalled goals inside ``conn``'s transaction (its agent was paused or
        retired: its goals wait with it, and a human resumes them). Returns how many."""
        rows = conn.execute(select(goals).where(goals.c.company_id == self.company, goals.c.agent == agent,
                                                goals.c.state.in_(("active", "stalled")))).all()
        for row in rows:
            self._move_txn(conn, head, row, "pause", by, reason)
        return len(rows)

    def miss_deadline(self, goal_id: int) -> Goal:
        """Close active goal ``goal_id`` whose deadline has passed before its check did: ``exhausted``
        (time was its budget too), escalated to a human with a summary, as a governance failure. The
        caller checks the goal first (a check that passes at the deadline meets it). A goal that is not
        active, or whose deadline has not come, is returned as it is. Raises :class:`NotFound`."""
        with self.store.write() as conn:
            head = self._head_txn(conn)[0]
            row = self._goal_row_txn(conn, goal_id)
            if row.state == "active" and goal_from_row(row).deadline_passed(self.store.clock()):
                moved = self._move_txn(conn, head, row, "exhaust", SYSTEM,
                                       f"the deadline {row.deadline_at} passed before the check did")
                self.escalate_goal_txn(conn, head, self.current_txn(conn), row, category="governance",
                                       reason=f"goal {row.id} missed its deadline {row.deadline_at}. " + _summary(moved))
            audit.save_head(conn, head)
            return goal_from_row(self._goal_row_txn(conn, goal_id))

    def link_goal_task(self, goal_id: int, task_id: int) -> None:
        """Record that goal ``goal_id``'s run filed (or delegated) task ``task_id``: once the task reaches a
        terminal state, the goal is due at once (see :mod:`roster.store.goal_links`)."""
        with self.store.write() as conn:
            link_goal_task_txn(conn, self.company, goal_id, task_id)

    def wake_goals_txn(self, conn: Connection, head: audit.ChainHead, kpi: str, value: float,
                       measured_at: str) -> None:
        """Inside the transaction that recorded a reading ``value`` of ``kpi``: each open goal checked
        against it that the reading meets is met now (its check recorded with the reading as evidence),
        whether or not its agent is busy; each other active one is due now, so its agent looks again.
        Only goals whose stored check names ``kpi`` are read (a text match, then parsed)."""
        for row in conn.execute(select(goals).where(
                goals.c.company_id == self.company, goals.c.state.in_(("active", "paused", "stalled")),
                goals.c.check_spec.contains(f'"kpi":"{kpi}"', autoescape=True))).all():
            check = GoalCheck.model_validate_json(row.check_spec)
            if check.kpi != kpi:
                continue
            passed, evidence = check.kpi_evidence(value, measured_at)
            if passed:
                self._record_check_txn(conn, head, row, {**evidence, "passed": True})
            elif row.state == "active":
                conn.execute(update(goals).where(goals.c.company_id == self.company, goals.c.id == row.id),
                             {"due_at": measured_at})


def _summary(goal: Goal) -> str:
    """A goal in one paragraph for the human it is escalated to."""
    spend = goal.spend
    last = goal.last_check
    verdict = "never checked" if last is None else ("its last check passed" if last.get("passed")
                                                    else "its last check was not met")
    return (f"Objective: {goal.objective[:300]}. Check: {goal.check.describe()}; {verdict}. Spent {spend.runs} "
            f"run(s), {spend.tokens} tokens, {spend.usd_text()}, {spend.seconds:.0f} s.")


def _utc(text: str) -> datetime:
    """An ISO 8601 time as a timezone-aware datetime (one without a zone is UTC)."""
    at = datetime.fromisoformat(text)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _next_turn(at: datetime, deadline_at: str | None) -> str:
    """A goal's next turn: ``at``, or its deadline if that comes first (so the deadline is seen on time)."""
    if deadline_at is not None and _utc(deadline_at) < at:
        return format_ts(_utc(deadline_at))
    return format_ts(at)


def _check_time(what: str, text: str) -> None:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"the {what} is an ISO 8601 time such as 2026-12-31T00:00:00Z, not '{text[:40]}'") from None


def _cut(evidence: Mapping[str, Any]) -> dict[str, Any]:
    """``evidence`` with each text cut to its last :data:`MAX_EVIDENCE_CHARS` characters."""
    return {k: (v[-MAX_EVIDENCE_CHARS:] if isinstance(v, str) else v) for k, v in evidence.items()}

