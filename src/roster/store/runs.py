"""Runs and retry bookkeeping: what the runtime records about each wake-up of an agent, and which
tasks an agent has work on now.

A run is one wake-up of one agent: its trigger, the task it claimed (with the fencing token), outcome,
failure category, tokens and cost. A failed (task, agent) pair gets an ``attempts`` row: the failure
count, when the agent may try again (backoff), and, once retries are exhausted or the failure is not
retryable, a persisted blocker that says why, so the dispatcher stops picking the task for that agent.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, exists, insert, or_, select, union_all, update

from roster.kernel.failures import Failure, backoff_seconds
from roster.kernel.rights import Resource
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase, CompanyCache
from roster.store.goal_links import linked_goal_of_run_txn
from roster.store.prepared import Prepared
from roster.store.schema import approval_requests, attempts, runs, tasks
from roster.store.store import format_ts
from roster.store.tasks import Task, task_from_row

_ATTEMPTS_OF = Prepared(select(attempts).where(attempts.c.company_id == bindparam("company"),
                                               attempts.c.task_id == bindparam("task_id"))
                        .order_by(attempts.c.agent))
_FINISH_COLUMNS = ("ended_at", "outcome", "transition", "model", "input_tokens", "output_tokens", "cost_usd",
                   "wall_seconds", "failure_category", "failure_code", "failure_message", "approval_id")
_FINISH_RUN = Prepared(update(runs).where(runs.c.company_id == bindparam("company"), runs.c.id == bindparam("run_id"))
                       .values({name: bindparam(name) for name in _FINISH_COLUMNS}))
_START_COLUMNS = ("company_id", "id", "agent", "trigger", "task_id", "fencing_token", "attempt", "started_at", "outcome",
                  "dispatcher_id", "goal_id", "reflection")
_START_RUN = Prepared(insert(runs).values({name: bindparam(name) for name in _START_COLUMNS}))
_AVAILABLE = (tasks.c.company_id == bindparam("company"), tasks.c.workflow == bindparam("workflow"),
              tasks.c.state == bindparam("state"),
              or_(tasks.c.lease_holder.is_(None), tasks.c.lease_expires_at <= bindparam("now")))
_CANDIDATE_COLUMNS = (tasks.c.id, tasks.c.workflow, tasks.c.state, tasks.c.priority, tasks.c.version)
_CANDIDATES = Prepared(select(*_CANDIDATE_COLUMNS).where(*_AVAILABLE)
                       .order_by(tasks.c.priority.desc(), tasks.c.id).limit(bindparam("scan")))
# Held back for one agent: waiting out a backoff or blocked, waiting on an approval request it opened, or
# told no by an approver and nothing changed since (the request was rejected at the task's current version:
# asking again unchanged would be refused, see store/approvals.py; a change to the task wakes it again).
_ATTEMPT_HOLDS = or_(attempts.c.blocked_reason.is_not(None), attempts.c.next_at > bindparam("now"))
_REQUEST_TASK = (approval_requests.c.company_id == tasks.c.company_id, approval_requests.c.task_id == tasks.c.id)
_REQUEST_HOLDS = or_(approval_requests.c.status == "pending",
                     and_(approval_requests.c.status == "rejected", approval_requests.c.task_version == tasks.c.version))
_HELD_BACK_ATTEMPT = (attempts.c.company_id == tasks.c.company_id, attempts.c.task_id == tasks.c.id, _ATTEMPT_HOLDS)
_HELD_BACK_REQUEST = (*_REQUEST_TASK, _REQUEST_HOLDS)
_REQUESTS_WITH_TASKS = approval_requests.join(tasks, and_(*_REQUEST_TASK))
# Over the id range of a page of candidates (a prebuilt statement; an IN list of ids would be rebuilt on
# every call), straight from the attempts' primary key and the requests' (company, status) index: only
# troubled tasks have such rows, so this is usually empty.
_HELD_BACK = Prepared(union_all(
    select(attempts.c.task_id, attempts.c.agent)
    .where(attempts.c.company_id == bindparam("company"), attempts.c.task_id.between(bindparam("low"), bindparam("high")),
           _ATTEMPT_HOLDS),
    select(approval_requests.c.task_id, approval_requests.c.requested_by).select_from(_REQUESTS_WITH_TASKS)
    .where(approval_requests.c.company_id == bindparam("company"), _REQUEST_HOLDS,
           approval_requests.c.task_id.between(bindparam("low"), bindparam("high")))))
# One agent's own page, when the shared page was all held back for it (many blocked tasks ahead of new ones).
_CANDIDATES_FOR_AGENT = Prepared(
    select(*_CANDIDATE_COLUMNS)
    .where(*_AVAILABLE,
           ~exists().where(*_HELD_BACK_ATTEMPT, attempts.c.agent == bindparam("agent")),
           ~exists().where(*_HELD_BACK_REQUEST, approval_requests.c.requested_by == bindparam("agent")))
    .order_by(tasks.c.priority.desc(), tasks.c.id).limit(bindparam("scan")))
HELD_BACK_FOR = Prepared(union_all(
    select(attempts.c.task_id)
    .where(attempts.c.company_id == bindparam("company"), attempts.c.task_id == bindparam("task_id"),
           attempts.c.agent == bindparam("agent"), _ATTEMPT_HOLDS),
    select(approval_requests.c.task_id).select_from(_REQUESTS_WITH_TASKS)
    .where(approval_requests.c.company_id == bindparam("company"), _REQUEST_HOLDS,
           approval_requests.c.task_id == bindparam("task_id"), approval_requests.c.requested_by == bindparam("agent"))))
_TASKS_BY_ID = select(tasks).where(tasks.c.company_id == bindparam("company"),
                                   tasks.c.id.in_(bindparam("ids", expanding=True)))
_RUN_AGENT = Prepared(select(runs.c.agent).where(runs.c.company_id == bindparam("company"),
                                                 runs.c.id == bindparam("run_id")))


@dataclass(frozen=True)
class Candidate:
    """A task some agent could act on now, as the work query sees it (the whole row is read at claim)."""

    id: int
    workflow: str
    state: str
    priority: int
    version: int
    """The version the work query saw: a claim re-checks it (:meth:`RunVerbs.claim_run`)."""


def new_run_id() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class RunRecord:
    id: str
    agent: str
    trigger: str
    task_id: int | None
    fencing_token: int | None
    attempt: int
    started_at: str
    ended_at: str | None
    outcome: str
    transition: str | None
    failure_category: str | None
    failure_code: str | None
    failure_message: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    """USD the run cost; ``None`` when it could not be priced (unknown, not 0)."""
    wall_seconds: float | None
    dispatcher_id: str | None = None
    """The ``roster up`` process that ran it (see :mod:`roster.store.fleet`)."""
    goal_id: int | None = None
    """The goal the run worked toward (its spend is the goal's; see :mod:`roster.store.goals`)."""
    reflection: bool = False
    """Whether it was a reflection run (see :mod:`roster.store.plans`)."""


@dataclass(frozen=True)
class Attempt:
    task_id: int
    agent: str
    failures: int
    next_at: str
    last_category: str
    last_message: str
    blocked_reason: str | None
    last_attempt: dict = field(default_factory=dict)
    """What the failed attempt tried (``transition``, ``writes``) and saved (``saved``), with its code."""


class RunVerbs(CompanyBase):
    """Runs, attempts and work discovery (mixed into ``CompanyStore``); the runtime's bookkeeping."""

    def pending_work(self, agent: str, *, limit: int = 20) -> list[Task]:
        """Tasks ``agent`` could act on now, most urgent first (see :meth:`pending_work_many`)."""
        return self.pending_work_many([agent], limit=limit).get(agent, [])

    def pending_work_many(self, agents: list[str], *, limit: int = 20,
                          scan: int | None = None) -> dict[str, list[Task]]:
        """For each agent, the tasks it could act on now, most urgent first (see :meth:`candidates_many`)."""
        chosen = self.candidates_many(agents, limit=limit, scan=scan)
        wanted = sorted({c.id for picks in chosen.values() for c in picks})
        if not wanted:
            return {}
        with self.store.read() as conn:
            full = {r.id: task_from_row(r) for r in conn.execute(_TASKS_BY_ID, {"company": self.company, "ids": wanted})}
        return {agent: [full[c.id] for c in picks if c.id in full] for agent, picks in chosen.items()}

    def candidates_many(self, agents: list[str], *, limit: int = 20,
                        scan: int | None = None) -> dict[str, list[Candidate]]:
        """For each agent, the tasks it could act on now, most urgent first (priority, then id): in a
        state one of its granted transitions starts from, with no live lease of someone else's run, not
        waiting out a backoff or blocked for this agent, not waiting on an approval request it
        opened, and not refused one at the task's current version. One indexed query over the candidate tasks for all agents together (at most ``scan``
        rows: by default four times what the agents could be shown, at most 1,000), plus two small ones
        when there are candidates; no model call. Agents with no work are absent from the result."""
        now = self.store.now()
        scan = scan or min(1000, 4 * limit * max(1, len(agents)))
        with self.store.read() as conn:
            cache = self.current_txn(conn)
            if cache.rights is None or cache.spec is None:
                return {}
            states = {agent: self.actionable_states(cache, agent) for agent in agents}
            union: dict[str, set[str]] = {}
            seen: set[tuple[str, frozenset[str]]] = set()
            for per_agent in states.values():
                for wf, wf_states in per_agent.items():
                    if (wf, wf_states) not in seen:  # agents of one role share their states: merge once
                        seen.add((wf, wf_states))
                        union.setdefault(wf, set()).update(wf_states)
            if not union:
                return {}
            # One indexed page per (workflow, state): each walks ix_tasks_work_order and stops after a
            # page (twice what an agent is shown, room for held-back tasks), so the cost does not grow
            # with the number of waiting tasks.
            page = min(scan, 2 * limit)
            params = {"company": self.company, "now": now, "scan": page}
            full_pages: set[tuple[str, str]] = set()
            rows = []
            for wf, wf_states in sorted(union.items()):
                for state in sorted(wf_states):
                    found = _CANDIDATES.all(conn, {**params, "workflow": wf, "state": state})
                    rows.extend(found)
                    if len(found) == page:
                        full_pages.add((wf, state))
            rows = sorted(rows, key=lambda r: (-r.priority, r.id))[:scan]
            if not rows:
                return {}
            ids = [t.id for t in rows]
            held_back = {(r[0], r[1]) for r in _HELD_BACK.all(conn, {"company": self.company, "now": now,
                                                                     "low": min(ids), "high": max(ids)})}
            chosen: dict[str, list[Candidate]] = {}
            for agent, per_agent in states.items():
                mine = [t for t in rows if t.state in per_agent.get(t.workflow, ()) and (t.id, agent) not in held_back]
                if not mine and any((wf, st) in full_pages for wf, sts in per_agent.items() for st in sts):
                    # Every task on the shared page is held back for this agent, and there may be more
                    # behind them: look past them, for this agent only (no starving behind blockers).
                    own = [r for wf, sts in sorted(per_agent.items()) for st in sorted(sts)
                           for r in _CANDIDATES_FOR_AGENT.all(conn, {**params, "workflow": wf, "state": st,
                                                                     "agent": agent, "scan": limit})]
                    mine = sorted(own, key=lambda r: (-r.priority, r.id))
                if mine:
                    chosen[agent] = [Candidate(r.id, r.workflow, r.state, r.priority, r.version) for r in mine[:limit]]
        return chosen

    def actionable_states(self, cache: CompanyCache, agent: str) -> dict[str, frozenset[str]]:
        """Per workflow, the states from which ``agent`` may take some offered transition (rights, ``by``
        and :attr:`~roster.kernel.spec.Transition.offered`).
        Kept on ``cache`` (one revision of spec, principals and rights): an idle cycle over thousands of
        agents asks it again for each, every cycle."""
        known = cache.actionable.get(agent)
        if known is not None:
            return known
        principal = cache.principals.get(agent)
        states: dict[str, set[str]] = {}
        if principal is not None and principal.status == "active":
            for wf_name, wf in cache.spec.workflows.items():
                if not self._decide(cache, agent, "read", Resource("workflow", wf_name)).allowed:
                    continue
                if cache.stage_of(agent, wf_name) == "shadow":  # it runs beside the owner, never on its own
                    continue
                for t_name, t in wf.transitions.items():
                    if t.offered and cache.actors[agent].matches(t.by) and self._decide(
                            cache, agent, "transition", Resource("workflow", wf_name), t_name).allowed:
                        states.setdefault(wf_name, set()).update(t.from_)
        frozen = {wf: frozenset(sts) for wf, sts in states.items()}
        cache.actionable[agent] = frozen
        return frozen

    def start_run(self, agent: str, *, trigger: str, task_id: int | None, fencing_token: int | None,
                  attempt: int = 1, run_id: str | None = None, dispatcher_id: str | None = None,
                  goal_id: int | None = None, reflection: bool = False) -> str:
        """Record that ``agent`` woke up (``run.start``), run by dispatcher ``dispatcher_id`` (see
        :mod:`roster.store.fleet`), for goal ``goal_id`` if any (its spend is the goal's), or to reflect
        (``reflection``). Returns the run id."""
        run_id = run_id or new_run_id()
        with self.store.write() as conn:
            head, _ = self._head_txn(conn)
            self.start_run_txn(conn, head, agent, run_id, trigger=trigger, task_id=task_id,
                                fencing_token=fencing_token, attempt=attempt, dispatcher_id=dispatcher_id,
                                goal_id=goal_id, reflection=reflection)
            audit.save_head(conn, head)
        return run_id

    def start_run_txn(self, conn: Connection, head: audit.ChainHead, agent: str, run_id: str, *, trigger: str,
                       task_id: int | None, fencing_token: int | None, attempt: int,
                       dispatcher_id: str | None = None, goal_id: int | None = None,
                       reflection: bool = False) -> None:
        """Record run ``run_id`` of ``agent`` as started (``running``) and audit ``run.start``."""
        now = self.store.now()
        _START_RUN.rowcount(conn, {"company_id": self.company, "id": run_id, "agent": agent, "trigger": trigger,
                                   "task_id": task_id, "fencing_token": fencing_token, "attempt": attempt,
                                   "started_at": now, "outcome": "running", "dispatcher_id": dispatcher_id,
                                   "goal_id": goal_id, "reflection": reflection})
        data = {"trigger": trigger, "task_id": task_id, "fencing_token": fencing_token, "attempt": attempt,
                **({"reflection": True} if reflection else {})}
        audit.append(conn, head, ts=now, principal=agent, action="run.start", subject=f"run:{run_id}",
                     data={**data, "goal_id": goal_id} if goal_id is not None else data)

    def finish_run(self, run_id: str, *, outcome: str, transition: str | None = None,
                   failure: Failure | None = None, model: str | None = None, input_tokens: int = 0,
                   output_tokens: int = 0, cost_usd: float | None = 0.0, wall_seconds: float | None = None,
                   approval_id: int | None = None) -> None:
        """Record how a run ended (``run.finish``): outcome, failure, model usage (tokens, USD: ``None`` when the
        run could not be priced, kept as unknown), wall time (s), and the approval request its transition
        opened (``approval_id``, outcome ``waiting``)."""
        with self.store.write() as conn:
            head, _ = self._head_txn(conn)
            self.finish_run_txn(conn, head, run_id, outcome=outcome, transition=transition, failure=failure,
                                 model=model, input_tokens=input_tokens, output_tokens=output_tokens,
                                 cost_usd=cost_usd, wall_seconds=wall_seconds, approval_id=approval_id)
            audit.save_head(conn, head)

    def finish_run_txn(self, conn: Connection, head: audit.ChainHead, run_id: str, *, outcome: str,
                        transition: str | None = None, failure: Failure | None = None, model: str | None = None,
                        input_tokens: int = 0, output_tokens: int = 0, cost_usd: float | None = 0.0,
                        wall_seconds: float | None = None, agent: str | None = None,
                        approval_id: int | None = None) -> None:
        """The ``run.finish`` bookkeeping in ``conn``'s transaction (``agent``: the run's, when the caller
        knows it; otherwise it is read)."""
        now = self.store.now()
        if agent is None:
            row = _RUN_AGENT.first(conn, {"company": self.company, "run_id": run_id})
            agent = row.agent if row else None
        values = {"ended_at": now, "outcome": outcome, "transition": transition, "model": model,
                  "input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": cost_usd,
                  "wall_seconds": wall_seconds,
                  "failure_category": failure.category.value if failure else None,
                  "failure_code": failure.code if failure else None,
                  "failure_message": failure.message if failure else None, "approval_id": approval_id}
        _FINISH_RUN.rowcount(conn, {**values, "company": self.company, "run_id": run_id})
        audit.append(conn, head, ts=now, principal=agent or "system", action="run.finish", subject=f"run:{run_id}",
                     data={k: v for k, v in values.items()
                           if k != "ended_at" and (k != "approval_id" or v is not None)})
        goal_id = linked_goal_of_run_txn(conn, self.company, run_id)
        if goal_id is not None:  # a run on a task filed toward a goal: what it spent is the goal's too
            self.charge_goal_txn(conn, head, goal_id, usd=cost_usd, tokens=input_tokens + output_tokens,
                                 seconds=wall_seconds or 0.0, changed=True, task_run=run_id)

    def abandon_running(self, *, reason: str) -> int:
        """Mark runs still ``running`` as ``abandoned`` (after a crash: their leases simply expire)."""
        with self.store.write() as conn:
            head, _ = self._head_txn(conn)
            ids = list(conn.scalars(select(runs.c.id).where(runs.c.company_id == self.company,
                                                            runs.c.outcome == "running")))
            now = self.store.now()
            for run_id in ids:
                conn.execute(update(runs).where(runs.c.company_id == self.company, runs.c.id == run_id),
                             {"outcome": "abandoned", "ended_at": now, "failure_message": reason})
                audit.append(conn, head, ts=now, principal="system", action="run.abandon", subject=f"run:{run_id}",
                             data={"reason": reason})
            audit.save_head(conn, head)
        return len(ids)

    def record_failure(self, task_id: int, agent: str, failure: Failure, *, max_attempts: int,
                       tried: dict | None = None) -> Attempt:
        """Count a failed attempt of ``agent`` on the task and schedule the next one with backoff; once
        ``failure`` is not retryable or ``max_attempts`` is reached, persist a blocker (``run.blocked``).
        ``tried`` (JSON) is what the attempt tried and what of it was saved; the next brief shows it."""
        with self.store.write() as conn:
            head, _ = self._head_txn(conn)
            attempt = self.record_failure_txn(conn, head, task_id, agent, failure, max_attempts=max_attempts,
                                               tried=tried)
            audit.save_head(conn, head)
        return attempt

    def record_failure_txn(self, conn: Connection, head: audit.ChainHead, task_id: int, agent: str,
                            failure: Failure, *, max_attempts: int, tried: dict | None = None) -> Attempt:
        """:meth:`record_failure` inside ``conn``'s transaction (the caller saves the head)."""
        row = conn.execute(select(attempts).where(attempts.c.company_id == self.company,
                                                  attempts.c.task_id == task_id,
                                                  attempts.c.agent == agent)).first()
        failures = (row.failures if row else 0) + 1
        now = self.store.clock()
        next_at = format_ts(now + timedelta(seconds=backoff_seconds(failures)))
        blocked = None
        if not failure.retryable:
            blocked = f"{failure.category.value} failure ({failure.code}), not retried unchanged: {failure.message}"
        elif failures >= max_attempts:
            blocked = f"stopped after {failures} attempts; last: {failure.message}"
        values = {"failures": failures, "next_at": next_at, "last_category": failure.category.value,
                  "last_message": failure.message, "blocked_reason": blocked,
                  "last_attempt": json.dumps({"code": failure.code, **(tried or {})}, sort_keys=True,
                                             default=str)}
        if row is None:
            conn.execute(insert(attempts), {"company_id": self.company, "task_id": task_id, "agent": agent,
                                            **values})
        else:
            conn.execute(update(attempts).where(attempts.c.company_id == self.company,
                                                attempts.c.task_id == task_id, attempts.c.agent == agent), values)
        if blocked:
            audit.append(conn, head, ts=format_ts(now), principal=agent, action="run.blocked",
                         subject=f"task:{task_id}", data={"reason": blocked, "failures": failures})
        return Attempt(task_id, agent, failures, next_at, failure.category.value, failure.message, blocked,
                       json.loads(values["last_attempt"]))

    def clear_attempts(self, task_id: int, agent: str) -> None:
        """Forget ``agent``'s failed attempts on the task (after it succeeded there), so no backoff remains."""
        with self.store.write() as conn:
            self.clear_attempts_txn(conn, task_id, agent)

    def clear_attempts_txn(self, conn: Connection, task_id: int, agent: str) -> None:
        """:meth:`clear_attempts` inside ``conn``'s transaction (a run's end in its transition's)."""
        conn.execute(delete(attempts).where(attempts.c.company_id == self.company, attempts.c.task_id == task_id,
                                            attempts.c.agent == agent))

    def attempts_of(self, task_id: int) -> list[Attempt]:
        """The failed-attempt records of every agent on the task, by agent."""
        with self.store.read() as conn:
            return self.attempts_txn(conn, task_id)

    def attempts_txn(self, conn: Connection, task_id: int) -> list[Attempt]:
        """:meth:`attempts_of` inside ``conn``'s transaction (the runtime reads them in its claim's)."""
        return [Attempt(r.task_id, r.agent, r.failures, r.next_at, r.last_category, r.last_message,
                        r.blocked_reason, json.loads(r.last_attempt or "{}"))
                for r in _ATTEMPTS_OF.all(conn, {"company": self.company, "task_id": task_id})]

    def list_runs(self, *, agent: str | None = None, task_id: int | None = None, limit: int = 100,
                  actor: ActorRef | None = None, before: str | None = None) -> list[RunRecord]:
        """Runs, newest first (``before``: a ``started_at`` cursor). With ``actor``: an agent sees only
        its own runs; a human sees all (audited denial otherwise is not needed: it is a filter)."""
        query = select(runs).where(runs.c.company_id == self.company)
        if actor is not None:
            with self._reading(actor, "run.read", f"company:{self.company}") as (_conn, cache, who):
                assert who is not None
                if not self._decide(cache, who.handle, "oversee", Resource("company", self.company)).allowed:
                    agent = who.handle
        if before is not None:
            query = query.where(runs.c.started_at < before)
        if agent is not None:
            query = query.where(runs.c.agent == agent)
        if task_id is not None:
            query = query.where(runs.c.task_id == task_id)
        with self.store.read() as conn:
            return [run_record(r) for r in conn.execute(query.order_by(runs.c.started_at.desc()).limit(limit))]


def run_record(r: Any) -> RunRecord:
    """A :class:`RunRecord` from a ``runs`` row."""
    return RunRecord(r.id, r.agent, r.trigger, r.task_id, r.fencing_token, r.attempt, r.started_at, r.ended_at,
                     r.outcome, r.transition, r.failure_category, r.failure_code, r.failure_message, r.model,
                     r.input_tokens, r.output_tokens, r.cost_usd, r.wall_seconds, r.dispatcher_id, r.goal_id,
                     bool(r.reflection))
