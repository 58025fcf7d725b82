"""The fleet's bookkeeping: which ``roster up`` processes (dispatchers) serve a company, the runs each has
in flight, claims that re-check the offer, runs of a dead process ended as ``crashed``, and named runtime
leases so that work any process could do is done by one.

A dispatcher registers a row and heartbeats it (every third of its lease length) while it lives. A run
records the dispatcher that runs it. A dispatcher that stopped heartbeating for a lease length, or whose
process is gone (same host, its pid no longer alive), is dead: its runs still ``running`` are ended as
``crashed`` (a transient failure that counts as an attempt), their leases given back and their run
tokens revoked, by whichever process sweeps first (:meth:`FleetVerbs.end_crashed_runs`).

Times are the store's clock; durations are seconds.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, or_, select, update

from roster.errors import Denied, LeaseHeld, LostRace, NotFound, StaleFencingToken
from roster.kernel.failures import Failure, FailureCategory
from roster.store import audit
from roster.store.company_base import CompanyCache
from roster.store.leases import Lease, LeaseVerbs
from roster.store.prepared import Prepared
from roster.store.runs import HELD_BACK_FOR, Attempt, Candidate, RunRecord, RunVerbs, run_record
from roster.store.schema import api_tokens, audit_events, dispatchers, runs, runtime_leases
from roster.store.store import format_ts
from roster.store.shadows import is_shadow_trigger
from roster.store.tasks import SELECT_TASK, Task

_STEP_EVENT = Prepared(
    select(func.max(audit_events.c.seq))
    .where(audit_events.c.company_id == bindparam("company"), audit_events.c.subject == bindparam("subject"),
           or_(audit_events.c.action == "task.create", audit_events.c.action == "task.transition")))
_RUNNING_OF = Prepared(select(func.count()).select_from(runs).where(
    runs.c.company_id == bindparam("company"), runs.c.outcome == "running", runs.c.agent == bindparam("agent")))
_RUNNING = Prepared(select(runs.c.agent, func.count()).where(
    runs.c.company_id == bindparam("company"), runs.c.outcome == "running").group_by(runs.c.agent))
CRASHED = "crashed"
"""The outcome of a run whose dispatcher died under it."""


def run_token_name(run_id: str) -> str:
    """The name of the API token issued to an external agent for run ``run_id`` (revoked if it crashes)."""
    return f"run token (process runner, run {run_id})"


@dataclass(frozen=True)
class ClaimedRun:
    """A claim that went through: the lease, the task as claimed, the attempt number this run is (1 + the
    agent's earlier failures on the task), those earlier attempts, and what ``then`` returned."""

    lease: Lease
    task: Task
    attempt: int
    previous: list[Attempt]
    prepared: Any = None


@dataclass(frozen=True)
class CrashedRun:
    """A run ended as crashed by the sweep: whose, on which task, why, and the blocker if its attempts
    ran out (then it was escalated)."""

    run_id: str
    agent: str
    task_id: int | None
    reason: str
    blocked: str | None = None


@dataclass(frozen=True)
class DispatcherRecord:
    """A ``roster up`` process serving the company (``agents`` None: every agent)."""

    id: str
    host: str
    pid: int
    agents: list[str] | None
    max_runs: int
    lease_seconds: float
    started_at: str
    heartbeat_at: str
    stopped_at: str | None
    runs_in_flight: int
    runs_started: int
    lost_races: int


@dataclass
class FleetStats:
    """What ``roster status`` shows of the fleet: live dispatchers, runs in flight (with the seconds each
    has run), runs ended in the last minute, and lost races summed over live dispatchers."""

    dispatchers: list[DispatcherRecord] = field(default_factory=list)
    in_flight: list[tuple[RunRecord, float]] = field(default_factory=list)
    runs_last_minute: int = 0
    lost_races: int = 0


class FleetVerbs(LeaseVerbs, RunVerbs):
    """Claims for runs, run ends, dispatchers, the crash sweep and runtime leases (mixed into ``CompanyStore``)."""

    # -- a run's claim and end ----------------------------------------------------------------------

    def claim_run(self, task: Candidate | Task, *, agent: str, run_id: str, trigger: str, ttl: float,
                  dispatcher_id: str | None = None,
                  then: Callable[[Connection, CompanyCache, ClaimedRun], Any] | None = None) -> ClaimedRun:
        """Claim ``task`` for a run of ``agent``, re-checking in the claim's own transaction that it is
        still offered to the agent as the work query saw it: the same state and version, no live lease,
        a transition the agent may take from that state (rights, ``by``), and not held back for it
        (backoff, blocker, its own pending approval or one rejected at the task's version). Then record ``run.start`` (with the attempt number
        and ``dispatcher_id``) and call ``then(conn, cache, claimed)`` in the same transaction (the
        runtime builds the brief there); its value is :attr:`ClaimedRun.prepared`.

        Raises :class:`LostRace` (nothing written, nothing audited: losing a race is not an act), or
        whatever ``then`` raises (the claim rolls back)."""
        if self.store.dialect.server:
            # A server: look first without the company row's lock, so a race already lost does not queue
            # behind every other process's writes (on SQLite one process writes at a time anyway).
            with self.store.read() as conn:
                self._check_offered_txn(conn, self.current_txn(conn), agent, self._task_row(conn, task.id), task,
                                        self.store.now())
        with self.store.write() as conn:
            head, cache = self._head_txn(conn)
            row = self._task_row(conn, task.id)
            self._check_offered_txn(conn, cache, agent, row, task, self.store.now())
            try:
                who = self._actor(cache, agent)
                lease, claimed = self.claim_row_txn(conn, head, who, row, run_id, ttl)
            except (Denied, LeaseHeld) as exc:
                raise LostRace(task.id, agent, exc.message) from None
            previous = [a for a in self.attempts_txn(conn, task.id) if a.agent == agent]
            attempt = 1 + sum(a.failures for a in previous)
            self.start_run_txn(conn, head, agent, run_id, trigger=trigger, task_id=task.id,
                                fencing_token=lease.fencing_token, attempt=attempt, dispatcher_id=dispatcher_id)
            done = ClaimedRun(lease, claimed, attempt, previous)
            if then is not None:
                done = dataclasses.replace(done, prepared=then(conn, cache, done))
            audit.save_head(conn, head)
        return done

    def _task_row(self, conn: Connection, task_id: int) -> Any:
        row = SELECT_TASK.first(conn, {"company": self.company, "task_id": task_id})
        if row is None:
            raise NotFound(f"no task {task_id} in company '{self.company}'")
        return row

    def _check_offered_txn(self, conn: Connection, cache: CompanyCache, agent: str, row: Any,
                           seen: Candidate | Task, now: str) -> None:
        if (row.state, row.version) != (seen.state, seen.version):
            raise LostRace(row.id, agent, f"it moved on to state '{row.state}' (version {row.version}) since "
                                          f"it was seen in '{seen.state}' (version {seen.version})")
        if row.lease_holder is not None and (row.lease_expires_at or "") > now:
            raise LostRace(row.id, agent, f"'{row.lease_holder}' holds its lease until {row.lease_expires_at}")
        if row.state not in self.actionable_states(cache, agent).get(row.workflow, ()):
            raise LostRace(row.id, agent, f"no transition from '{row.state}' is offered to it (rights, 'by', or "
                                          "the agent is not active)")
        spec_agent = cache.spec.agents.get(agent)
        limit = spec_agent.max_concurrent_runs if spec_agent else 1
        running = _RUNNING_OF.first(conn, {"company": self.company, "agent": agent})[0]
        if running >= limit:  # its runs in flight in every process, not only the claiming one's
            raise LostRace(row.id, agent, f"it has {running} run(s) in flight, its max_concurrent_runs ({limit})")
        if HELD_BACK_FOR.first(conn, {"company": self.company, "task_id": row.id, "agent": agent, "now": now}):
            raise LostRace(row.id, agent, "it is held back for the agent: a backoff, a blocker or an approval "
                                          "request it opened")

    def end_run(self, run_id: str, *, agent: str, task_id: int, fencing_token: int, finish: dict) -> bool:
        """End a run that holds the task's lease, in one transaction: release the lease, record ``finish``
        (see :meth:`finish_run`) and what the agent saw of the task (its next hand-off diff). If the lease
        is no longer the run's (taken over, or released by the kill switch), only the run is ended.
        Returns whether the lease was given back."""
        with self.store.write() as conn:
            head, cache = self._head_txn(conn)
            row = SELECT_TASK.first(conn, {"company": self.company, "task_id": task_id})
            released = False
            if row is not None:
                try:
                    self.release_row_txn(conn, head, self._actor(cache, agent), row, task_id, fencing_token)
                    released = True
                except (StaleFencingToken, Denied):
                    pass  # taken over, or released by the kill switch: nothing to give back
            self.finish_run_txn(conn, head, run_id, agent=agent, **finish)
            if released:
                self.record_view_txn(conn, head, task_id, agent)
            audit.save_head(conn, head)
        return released

    def run_ender(self, run_id: str, *, agent: str, fencing_token: int, finish: Callable[[], dict],
                  clear_attempts: bool = False,
                  read: list[int] | None = None) -> Callable[[Connection, audit.ChainHead, CompanyCache, Task], None]:
        """What a run passes as its transition's ``then``: in the transition's transaction, release the
        lease, end the run with ``finish()``, record what the agent saw of the moved task, forget the
        agent's earlier failed attempts on it (``clear_attempts``) and mark the messages it was shown
        (``read``) read. A kill after the move leaves nothing of the run to sweep."""

        def end(conn: Connection, head: audit.ChainHead, cache: CompanyCache, moved: Task) -> None:
            self.release_txn(conn, head, self._actor(cache, agent), moved.id, fencing_token, row=moved)
            self.finish_run_txn(conn, head, run_id, agent=agent, **finish())
            self.record_view_txn(conn, head, moved.id, agent, task=moved)
            if clear_attempts:
                self.clear_attempts_txn(conn, moved.id, agent)
            if read:
                self.mark_read_txn(conn, read, agent)

        return end

    def idempotency_key_txn(self, conn: Connection, task: Task) -> str:
        """The key of the step ``task`` is at: ``<company>:task-<id>:step-<seq>``, where ``seq`` is the audit
        event that put the task in its current state (its creation or its latest transition). It is the
        same for every run and retry of that step (evidence saved meanwhile does not change it) and new
        for the next step: an agent's side effects keyed on it happen once per step."""
        seq = _STEP_EVENT.first(conn, {"company": self.company, "subject": f"task:{task.id}"})[0]
        return f"{self.company}:task-{task.id}:step-{seq or 0}"

    # -- dispatchers --------------------------------------------------------------------------------

    def register_dispatcher(self, dispatcher_id: str, *, host: str, pid: int, agents: list[str] | None,
                            max_runs: int, lease_seconds: float) -> None:
        """Record a ``roster up`` process serving the company. Not audited: a process is infrastructure,
        not an act on the company's work (its runs are, and name it)."""
        with self.store.write() as conn:
            now = self.store.now()
            conn.execute(insert(dispatchers), {
                "company_id": self.company, "id": dispatcher_id, "host": host, "pid": pid,
                "agents": json.dumps(agents) if agents is not None else None, "max_runs": max_runs,
                "lease_seconds": lease_seconds, "started_at": now, "heartbeat_at": now})

    def heartbeat(self, dispatcher_id: str, *, runs_in_flight: int, runs_started: int, lost_races: int) -> None:
        """A dispatcher is alive: stamp it, with its counters (not audited: it beats every few seconds)."""
        with self.store.write() as conn:
            conn.execute(update(dispatchers).where(dispatchers.c.company_id == self.company,
                                                   dispatchers.c.id == dispatcher_id),
                         {"heartbeat_at": self.store.now(), "runs_in_flight": runs_in_flight,
                          "runs_started": runs_started, "lost_races": lost_races})

    def stop_dispatcher(self, dispatcher_id: str, *, runs_started: int, lost_races: int) -> None:
        """A dispatcher stopped cleanly, with its final counters; its runtime leases go back."""
        with self.store.write() as conn:
            conn.execute(update(dispatchers).where(dispatchers.c.company_id == self.company,
                                                   dispatchers.c.id == dispatcher_id),
                         {"stopped_at": self.store.now(), "runs_in_flight": 0, "runs_started": runs_started,
                          "lost_races": lost_races})
            conn.execute(runtime_leases.delete().where(runtime_leases.c.company_id == self.company,
                                                       runtime_leases.c.holder == dispatcher_id))

    def list_dispatchers(self, *, live: bool = True) -> list[DispatcherRecord]:
        """Dispatchers of the company, oldest first (``live``: not stopped, not found dead)."""
        query = select(dispatchers).where(dispatchers.c.company_id == self.company)
        if live:
            query = query.where(dispatchers.c.stopped_at.is_(None))
        with self.store.read() as conn:
            return [_dispatcher(r) for r in conn.execute(query.order_by(dispatchers.c.started_at))]

    # -- the crash sweep ----------------------------------------------------------------------------

    def end_crashed_runs(self, *, max_attempts: int, me: str | None, host: str,
                         alive: Callable[[int], bool]) -> list[CrashedRun]:
        """End as ``crashed`` every run still ``running`` whose dispatcher is dead: it has not heartbeat
        for its lease length, or it ran on ``host`` and ``alive(pid)`` says its process is gone (a run
        recorded without a dispatcher counts as dead once its task's lease is no longer live). Each
        crash is a transient failure counted as an attempt of the run's agent on the task (so
        ``max_attempts`` ends a crash loop with a blocker, then an escalation); its lease is given back
        and its run tokens are revoked. A dead dispatcher is marked stopped and its runtime leases go back
        (with runs in flight or not). ``me`` (the sweeping dispatcher) is never dead. Audited:
        ``run.crash`` (naming why), ``lease.release``, ``run.blocked``. Returns the runs ended."""
        in_flight = select(runs).where(runs.c.company_id == self.company, runs.c.outcome == "running")
        if me is not None:
            in_flight = in_flight.where(runs.c.dispatcher_id.is_(None) | (runs.c.dispatcher_id != me))
        with self.store.read() as conn:  # usually nothing: no write lock taken for it
            if conn.execute(in_flight.limit(1)).first() is None and not self._dead_dispatchers_txn(
                    conn, self.store.clock(), me, host, alive):
                return []
        with self.store.write() as conn:
            # The company row's lock first, then the runs: a sweep queued behind another (PostgreSQL) must
            # see the runs that one ended, or it ends them again (a second run.crash, a second attempt).
            head, _ = self._head_txn(conn)
            running = list(conn.execute(in_flight))
            now = self.store.clock()
            stamp = format_ts(now)
            dead = self._dead_dispatchers_txn(conn, now, me, host, alive)
            crashed: list[CrashedRun] = []
            for run in running:
                reason = self._crash_reason_txn(conn, run, dead, me, stamp)
                if reason is None:
                    continue
                crashed.append(self._end_crashed_txn(conn, head, run, reason, max_attempts, stamp))
                if run.goal_id is not None:  # its goal pays for it: unpriced (what it spent died with it), idle
                    seconds = (now - datetime.fromisoformat(run.started_at)).total_seconds()
                    self.charge_goal_txn(conn, head, run.goal_id, usd=None, tokens=0, seconds=max(seconds, 0.0),
                                         changed=False)
            for dispatcher_id in dead:  # found dead: not looked at again (each crashed run names why), and
                # its runtime leases go back at once, as on a clean stop (the leader's jobs need not wait
                # for them to expire)
                conn.execute(update(dispatchers).where(dispatchers.c.company_id == self.company,
                                                       dispatchers.c.id == dispatcher_id), {"stopped_at": stamp})
                conn.execute(runtime_leases.delete().where(runtime_leases.c.company_id == self.company,
                                                           runtime_leases.c.holder == dispatcher_id))
            audit.save_head(conn, head)
        for run in crashed:
            if run.blocked and run.task_id is not None:  # the self step is over: up the ladder
                self.escalate(run.task_id, from_agent=run.agent, category=FailureCategory.TRANSIENT.value,
                              reason=run.blocked)
        return crashed

    def _dead_dispatchers_txn(self, conn: Connection, now: datetime, me: str | None, host: str,
                              alive: Callable[[int], bool]) -> dict[str, str]:
        dead: dict[str, str] = {}
        for d in conn.execute(select(dispatchers).where(dispatchers.c.company_id == self.company,
                                                        dispatchers.c.stopped_at.is_(None))):
            if d.id == me:
                continue
            last = datetime.fromisoformat(d.heartbeat_at)
            if d.host == host and not alive(d.pid):
                dead[d.id] = f"its process {d.pid} on {d.host} has exited"
            elif last + timedelta(seconds=d.lease_seconds) < now:
                dead[d.id] = f"it ({d.host}, pid {d.pid}) has not heartbeat since {d.heartbeat_at}"
        return dead

    def _crash_reason_txn(self, conn: Connection, run: Any, dead: dict[str, str], me: str | None,
                          stamp: str) -> str | None:
        if run.dispatcher_id is not None:
            if run.dispatcher_id == me:
                return None
            if run.dispatcher_id in dead:
                return f"the dispatcher running it died: {dead[run.dispatcher_id]}"
            known = conn.execute(select(dispatchers.c.stopped_at).where(
                dispatchers.c.company_id == self.company, dispatchers.c.id == run.dispatcher_id)).first()
            return "its dispatcher has stopped" if known is not None and known.stopped_at is not None else None
        if run.task_id is None:
            return None  # a run by hand with no task and no dispatcher: nothing tells whether it lives
        task = SELECT_TASK.first(conn, {"company": self.company, "task_id": run.task_id})
        live = task is not None and task.lease_run == run.id and (task.lease_expires_at or "") > stamp
        return None if live else "its lease expired or was taken over while it was recorded as running"

    def _end_crashed_txn(self, conn: Connection, head: audit.ChainHead, run: Any, reason: str, max_attempts: int,
                         stamp: str) -> CrashedRun:
        message = (f"run {run.id} crashed: {reason}. Its step may have partly run (side effects are "
                   "at-least-once; see the brief's idempotency_key)")
        conn.execute(update(runs).where(runs.c.company_id == self.company, runs.c.id == run.id,
                                        runs.c.outcome == "running"),
                     {"outcome": CRASHED, "ended_at": stamp, "failure_category": FailureCategory.TRANSIENT.value,
                      "failure_code": CRASHED, "failure_message": message})
        audit.append(conn, head, ts=stamp, principal=run.agent, action="run.crash", subject=f"run:{run.id}",
                     data={"task_id": run.task_id, "reason": reason, "dispatcher_id": run.dispatcher_id})
        conn.execute(update(api_tokens).where(api_tokens.c.company_id == self.company,
                                              api_tokens.c.principal == run.agent,
                                              api_tokens.c.name == run_token_name(run.id),
                                              api_tokens.c.revoked_at.is_(None)), {"revoked_at": stamp})
        audit.touch(head, "principals", run.agent)  # the run's token revoked: run.crash records it
        if run.task_id is None or is_shadow_trigger(run.trigger):  # a shadow holds no lease and owes no attempt
            return CrashedRun(run.id, run.agent, None, reason)
        task = SELECT_TASK.first(conn, {"company": self.company, "task_id": run.task_id})
        if task is not None and task.lease_run == run.id:
            self.drop_lease_txn(conn, head, task, by="runtime", reason=CRASHED, now=stamp)
        attempt = self.record_failure_txn(conn, head, run.task_id, run.agent,
                                           Failure(FailureCategory.TRANSIENT, CRASHED, message),
                                           max_attempts=max_attempts, tried={"crashed_run": run.id})
        return CrashedRun(run.id, run.agent, run.task_id, reason, attempt.blocked_reason)

    # -- runtime leases -----------------------------------------------------------------------------

    def acquire_runtime_leases(self, holder: str, names: Iterable[str], ttl: float) -> set[str]:
        """Take or renew, for ``ttl`` seconds, each named runtime lease that is free, expired or already
        ``holder``'s; returns the names ``holder`` now holds. One transaction, serialised with every other
        write on the company row, so two dispatchers never both hold one name."""
        wanted = sorted(set(names))
        if not wanted:
            return set()
        with self.store.write() as conn:
            self._head_txn(conn)  # the company row: the serialisation point
            now = self.store.clock()
            stamp, expires = format_ts(now), format_ts(now + timedelta(seconds=ttl))
            current = {r.name: r for r in conn.execute(
                select(runtime_leases).where(runtime_leases.c.company_id == self.company,
                                             runtime_leases.c.name.in_(wanted)))}
            held = set()
            for name in wanted:
                row = current.get(name)
                if row is None:
                    conn.execute(insert(runtime_leases), {"company_id": self.company, "name": name, "holder": holder,
                                                          "expires_at": expires})
                elif row.holder == holder or row.expires_at <= stamp:
                    conn.execute(update(runtime_leases).where(runtime_leases.c.company_id == self.company,
                                                              runtime_leases.c.name == name),
                                 {"holder": holder, "expires_at": expires})
                else:
                    continue
                held.add(name)
        return held

    def running_counts(self) -> dict[str, int]:
        """Runs in flight per agent, in every process (rows still ``running``; a dead process's are swept)."""
        with self.store.read() as conn:
            return {agent: count for agent, count in _RUNNING.all(conn, {"company": self.company})}

    # -- what status shows --------------------------------------------------------------------------

    def fleet_stats(self) -> FleetStats:
        """Live dispatchers, runs in flight (oldest first, with seconds running), runs that ended in the
        last 60 s, and the lost races of live dispatchers."""
        now = self.store.clock()
        minute_ago = format_ts(now - timedelta(seconds=60))
        with self.store.read() as conn:
            live = [_dispatcher(r) for r in conn.execute(
                select(dispatchers).where(dispatchers.c.company_id == self.company,
                                          dispatchers.c.stopped_at.is_(None)).order_by(dispatchers.c.started_at))]
            flying = [run_record(r) for r in conn.execute(
                select(runs).where(runs.c.company_id == self.company, runs.c.outcome == "running")
                .order_by(runs.c.started_at))]
            ended = conn.scalar(select(func.count()).select_from(runs).where(
                runs.c.company_id == self.company, runs.c.ended_at >= minute_ago)) or 0
        in_flight = [(r, max(0.0, (now - datetime.fromisoformat(r.started_at)).total_seconds()))
                     for r in flying]
        return FleetStats(live, in_flight, int(ended), sum(d.lost_races for d in live))


def _dispatcher(row: Any) -> DispatcherRecord:
    return DispatcherRecord(row.id, row.host, row.pid, json.loads(row.agents) if row.agents else None, row.max_runs,
                            row.lease_seconds, row.started_at, row.heartbeat_at, row.stopped_at, row.runs_in_flight,
                            row.runs_started, row.lost_races)
