"""The dispatcher: runs a company's agents, many runs at once, each task to exactly one agent.

A cycle asks the store, for every active agent it serves that has a runner and room for another run,
which tasks it could act on now (:meth:`~roster.store.runs.RunVerbs.candidates_many`: one indexed query,
no model). An agent with no work costs nothing. The tasks are handed out in priority, then age order;
each goes to one agent of those it is offered to, picked by the :class:`SelectionPolicy` (by default
:class:`LeastLoaded`), up to each agent's ``max_concurrent_runs`` (spec, default 1) and the dispatcher's
``max_runs``. Each run is claimed in the dispatcher's thread (the claim re-checks the offer: a lost
race costs nothing) and then runs in a worker thread (:mod:`roster.runtime.pipeline`), so a slow run
never delays another agent's claim. One background thread renews the leases of every run in flight and
heartbeats the dispatcher's row.

Wake-ups: a committed write that made work (a task created or moved, a lease or hold given back, a
message, an approval decided; see :data:`roster.store.audit.WAKE_ACTIONS`) wakes the dispatchers of the
same process at once, and on PostgreSQL every process through ``LISTEN``/``NOTIFY``. Polling every
``poll_seconds`` stays as the fallback (SQLite across processes).

Several dispatchers (``roster up`` processes, on one or many hosts) share a company: claims never
double, the crash sweep ends the runs of a dead one as ``crashed``, and named runtime leases make sure
the runtime's own periodic jobs (``leader``) and each agent's triggers and message wake-ups
(``agent:<handle>``) are done by one process.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from roster.defaults import DEFAULT_MAX_ATTEMPTS
from roster.errors import LostRace, RosterError, UsageError
from roster.kernel.failures import Failure, FailureCategory, classify
from roster.kernel.plans import reflection_cron
from roster.kernel.spec import CompanySpec
from roster.kernel.stages import SHADOW_TRIGGER
from roster.runtime.background import LeaseRenewals, NotifyListener, pid_alive
from roster.runtime.context import ContextAssembler, Wakeup
from roster.runtime.goal_checks import check_goal
from roster.runtime.kpis import KpiMeter
from roster.runtime.pipeline import (
    CURRENT_RUN,
    OUTAGES,
    JudgmentCall,
    Outcome,
    RunPipeline,
    RunState,
    outage_word,
)
from roster.runtime.runners import Brief, Runner, Usage, make_runner
from roster.runtime.reputation import Reputations
from roster.runtime.selection import FromSpec, LeastLoaded, SelectionPolicy
from roster.runtime.triggers import Fired, Periodic, Reflections, Triggers
from roster.runtime.webhooks import WebhookWorker
from roster.store import CompanyStore, Task
from roster.store.costs import BudgetStatus
from roster.store.fleet import run_token_name
from roster.store.goals import Goal
from roster.store.leases import DEFAULT_LEASE_SECONDS, Lease
from roster.store.runs import Candidate, new_run_id

RUNTIME = "runtime"
"""Who the runtime's own housekeeping is recorded as (in trigger_state and the audit)."""
CONSOLIDATION = "memory:consolidate"
STAGE_CRITERIA = "fitness:stages"
"""The periodic job that judges every (agent, workflow) against the stage criteria."""
MAX_BUSY_WAIT = 60.0
"""Seconds :meth:`Dispatcher.run_forever` waits at most between cycles while the store stays unavailable."""
LEADER = "leader"
"""The runtime lease whose holder runs the company's periodic jobs (memory consolidation, KPIs)."""

__all__ = ["CONSOLIDATION", "DEFAULT_LEASE_SECONDS", "DEFAULT_MAX_ATTEMPTS", "RUNTIME", "Dispatcher", "JudgmentCall",
           "LeastLoaded", "Outcome", "SelectionPolicy", "default_max_runs"]


def default_max_runs() -> int:
    """Runs in flight at once by default: four per core, at least 4. Runs mostly wait (on a model, an
    agent CLI, a command), so the limit is about the host's memory and child processes, not its CPU."""
    return max(4, 4 * (os.cpu_count() or 1))


@dataclass(frozen=True)
class _Unrecorded:
    """A run whose end the store refused while unavailable: enough to record it later (wall time in s)."""

    agent: str
    task_id: int | None  # None: a run without a task (a trigger, message, reflection or goal run)
    run_id: str
    fencing_token: int | None
    failure: Failure
    wall_seconds: float
    usage: Usage = Usage()
    """What the runner reported it spent (a model's tokens and USD): kept, never recorded as 0."""


@dataclass
class _Flight:
    agent: str
    kind: str  # task, trigger, message, goal, reflection, check (a goal's check without a run), shadow
    run_id: str | None = None
    task: Task | None = None
    """A task run's claimed task, as its brief showed it (what its shadows are shown)."""


class Dispatcher:
    """Runs a company's agents (see the module docstring). ``runners`` overrides the spec's runner per
    agent (tests, embedding); ``max_runs`` bounds runs in flight (default :func:`default_max_runs`);
    ``agents`` limits this dispatcher to some agents, by handle or ``role:<role>``; ``selection`` is the
    pool's :class:`SelectionPolicy` (default: the one the spec's ``fitness.selection`` names)."""

    def __init__(self, company: CompanyStore, *, workdir: Path, lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, runners: dict[str, Runner] | None = None,
                 max_task_cost_usd: float | None = None, mcp_url: str | None = None,
                 log: Callable[[str], None] | None = None, max_runs: int | None = None,
                 agents: Iterable[str] | None = None, selection: SelectionPolicy | None = None) -> None:
        self.company = company
        self.workdir = workdir
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.max_task_cost_usd = max_task_cost_usd
        self.mcp_url = mcp_url
        """Roster's MCP server (``roster up`` serving it): ``process`` runners point their agent CLI at it."""
        self.max_runs = max_runs if max_runs is not None else default_max_runs()
        if self.max_runs < 1:
            raise UsageError(f"--max-runs must be at least 1, not {self.max_runs}")
        self.only = sorted(set(agents)) if agents is not None else None
        self.reputations = Reputations(company)
        """Reputations on the record, read at most once a minute: the selection policy's and the briefs'."""
        self.selection: SelectionPolicy = selection or FromSpec(self.reputations)
        self._injected: dict[str, Runner] = dict(runners or {})
        self._made: dict[str, Runner | None] = {}
        self._idle: dict[str, list[Runner]] = {}
        self._handed_out: set[str] = set()
        self._paused: list[str] | None = None
        self._served: list[str] = []
        self._with_work: set[str] = set()
        """The agents the last cycle offered task work (a goal wakes an agent only without it)."""
        self._limits_of: CompanySpec | None = None
        self._wide: dict[str, int] = {}
        self.log = log or (lambda _message: None)
        self.stopping = threading.Event()
        self._spec: CompanySpec | None = None
        self.triggers = Triggers(company, workdir=workdir)
        self.reflections = Reflections(company)
        self._schedules_of: tuple[CompanySpec, list[str], list[tuple[str, str]]] | None = None
        self.context = ContextAssembler(company, reputations=self.reputations)
        self.periodic = Periodic(company, RUNTIME)
        self.kpis = KpiMeter(company, workdir=workdir, schedule=self.periodic, log=self.log)
        self.webhooks = WebhookWorker(company, log=self.log, leader_seconds=lease_seconds)
        self.id = new_run_id()
        """This dispatcher's id in the ``dispatchers`` table (see :mod:`roster.store.fleet`)."""
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.lost_races = 0
        self.runs_started = 0
        self._registered = False
        self._renewals = LeaseRenewals(company, lease_seconds, tick=self._heartbeat, log=self.log)
        self.pipeline = RunPipeline(company, self.context, lease_seconds=lease_seconds, max_attempts=max_attempts,
                                    dispatcher_id=self.id, renew=self._renewals.held, log=self.log)
        self._lock = threading.Lock()
        self._flights: dict[Future, _Flight] = {}
        self._load: Counter[str] = Counter()
        self._finished: list[Outcome] = []
        self._unrecorded: list[_Unrecorded] = []
        """Runs whose end an unavailable store refused: recorded at the next cycle's start."""
        self._pool: ThreadPoolExecutor | None = None
        self.wake = threading.Event()
        """Set when work may have appeared (a committed write, a NOTIFY, a run ending)."""
        self._forget_listener = company.store.on_work(self._on_work)
        self._listener: NotifyListener | None = None
        self._runtime_leases: set[str] = set()
        self._housekeeping_due = 0.0
        self._peers = (1, 0)
        """How many live dispatchers serve the company, and this one's place among them."""

    # -- who runs -----------------------------------------------------------------------------------

    def runner(self, agent: str) -> Runner | None:
        """The agent's runner (one instance; :meth:`_take_runner` hands out more for concurrent runs)."""
        if agent in self._injected:
            return self._injected[agent]
        if agent not in self._made:
            self._made[agent] = self._make_runner(agent)
        return self._made[agent]

    def _make_runner(self, agent: str) -> Runner | None:
        spec_agent = self.company.spec().agents.get(agent)
        config = spec_agent.runner.model_dump() if spec_agent and spec_agent.runner else None
        try:
            return make_runner(
                config, workdir=self.workdir, tools=lambda: self.company.spec().tools,
                authorize_tool=lambda tool, arguments: self.company.record_tool_call(
                    tool, actor=agent, arguments=arguments),
                issue_token=self._issue_run_token, mcp_url=self.mcp_url, company=self.company,
                prices=lambda: self.company.spec().models)
        except UsageError as exc:
            self.log(f"agent {agent}: no runner: {exc.message}")
            return None

    def _take_runner(self, agent: str) -> Runner:
        """A runner instance for one run: the injected one, or an idle instance of the agent's own (a
        runner keeps per-run state such as its usage, so concurrent runs of one agent get their own)."""
        if agent in self._injected:
            return self._injected[agent]
        with self._lock:
            idle = self._idle.setdefault(agent, [])
            if idle:
                return idle.pop()
            first = agent not in self._handed_out
            self._handed_out.add(agent)
        runner = self.runner(agent) if first else self._make_runner(agent)
        if runner is None:
            raise UsageError(f"agent '{agent}' has no runner configured")
        return runner

    def _give_back_runner(self, agent: str, runner: Runner) -> None:
        if agent not in self._injected:
            with self._lock:
                self._idle.setdefault(agent, []).append(runner)

    def _issue_run_token(self, agent: str, lifetime: timedelta) -> tuple[str, Callable[[], None]]:
        """A short-lived token for one run of an external agent, and how to revoke it afterwards. It is
        named after the run (:data:`~roster.runtime.pipeline.CURRENT_RUN`), so the crash sweep can revoke
        it if the run's dispatcher dies."""
        run_id = CURRENT_RUN.get()
        name = run_token_name(run_id) if run_id else "run token (process runner)"
        issued = self.company.issue_token(agent, actor=None, name=name, lifetime=lifetime)

        def revoke() -> None:
            try:
                self.company.revoke_token(issued.record.id, actor=None)
            except RosterError as exc:
                self.log(f"could not revoke run token {issued.record.id}: {exc.message}")

        return issued.token, revoke

    def _current_spec(self) -> CompanySpec:
        """The spec as of this cycle (read at its start), or now outside a cycle."""
        return self._spec if self._spec is not None else self.company.spec()

    def agents(self) -> list[str]:
        """Active agents this dispatcher serves (all, or those named by ``agents``) that have a runner."""
        spec = self.company.spec()
        return [p.handle for p in self.company.list_principals()
                if p.kind == "agent" and p.status == "active" and self._serves(p.handle, spec)
                and self.runner(p.handle) is not None]

    def _serves(self, agent: str, spec: CompanySpec) -> bool:
        if self.only is None:
            return True
        roles = set(spec.agents[agent].roles) if agent in spec.agents else set()
        return agent in self.only or any(f"role:{r}" in self.only for r in roles)

    def capacity(self, agent: str, spec: CompanySpec | None = None) -> int:
        """How many runs ``agent`` may have in flight at once (``max_concurrent_runs``, default 1)."""
        return self._limits(spec or self._current_spec()).get(agent, 1)

    def _limits(self, spec: CompanySpec) -> dict[str, int]:
        """The agents of ``spec`` whose ``max_concurrent_runs`` is not 1 (kept while the spec is the same:
        a cycle over thousands of agents asks for each)."""
        if self._limits_of is not spec:
            self._limits_of = spec
            self._wide = {a: n.max_concurrent_runs for a, n in spec.agents.items() if n.max_concurrent_runs != 1}
        return self._wide

    def in_flight(self) -> dict[str, int]:
        """Runs in flight per agent, now."""
        with self._lock:
            return {a: n for a, n in self._load.items() if n}

    # -- the loop -----------------------------------------------------------------------------------

    def cycle(self) -> list[Outcome]:
        """One pass: start every run there is room for (tasks first, then triggers, then unread messages),
        and wait for them. Returns what each did (a lost race is ``skipped``)."""
        self.reputations.refresh()  # between cycles, never inside a claim's transaction
        with self.company.store.pinned():  # one connection for the cycle's transactions
            outcomes, futures = self._start_task_runs()
            outcomes += self._wait(futures)
            if not self._company_paused():
                outcomes += self._wait(self._start_trigger_runs())
                ran = {o.agent for o in outcomes}
                outcomes += self._wait(self._start_message_runs(exclude=ran))
                outcomes += self._wait(self._start_reflection_runs())
                ran = {o.agent for o in outcomes}
                outcomes += self._wait(self._start_goal_runs(exclude=ran))
            self._periodic_jobs()
        return outcomes

    def step(self) -> list[Outcome]:
        """One pass without waiting (``roster up``): start what there is room for; returns the outcomes of
        runs that ended since the last step, and of claims lost now."""
        self.reputations.refresh()
        with self.company.store.pinned():
            outcomes, _ = self._start_task_runs()
            if not self._company_paused():
                self._start_trigger_runs()
                self._start_message_runs(exclude=set(self.in_flight()))
                self._start_reflection_runs()
                self._start_goal_runs(exclude=set(self.in_flight()))
            self._periodic_jobs()
        with self._lock:
            finished, self._finished = self._finished, []
        return outcomes + finished

    def run_forever(self, *, poll_seconds: float = 1.0, report: Callable[[list[Outcome]], None] | None = None) -> None:
        """Step until :attr:`stopping` is set (SIGINT/SIGTERM in ``roster up``), then wait for the runs in
        flight to finish and release their leases, and record the stop. Between steps it sleeps until
        woken (:attr:`wake`) or ``poll_seconds`` pass. ``report`` is given each step's outcomes.

        A store that is locked past the lock timeout or cannot be reached (a dropped connection, a
        PostgreSQL restart) does not stop the loop: it is logged and the next step waits ``poll_seconds``,
        doubling up to :data:`MAX_BUSY_WAIT` seconds. Runs in flight keep working meanwhile; their
        results are applied once the store is back (see :class:`~roster.runtime.pipeline.RunPipeline`)."""
        wait_s = poll_seconds
        self._listen()
        try:
            while not self.stopping.is_set():
                self.wake.clear()
                try:
                    outcomes = self.step()
                except OUTAGES as exc:
                    self.log(f"the store is {outage_word(exc)}: {exc.message} Next cycle in {wait_s:g} s.")
                    self.stopping.wait(wait_s)
                    wait_s = min(2 * wait_s, MAX_BUSY_WAIT)
                    continue
                wait_s = poll_seconds
                if report is not None and outcomes:
                    report(outcomes)
                # After a lost race the work list is stale: look again soon, not at the next poll.
                self.wake.wait(0.05 if any(o.outcome == "skipped" for o in outcomes) else poll_seconds)
        finally:
            report_rest = self.close()
            if report is not None and report_rest:
                report(report_rest)

    def close(self) -> list[Outcome]:
        """Wait for the runs in flight, record this dispatcher's stop, stop its threads. Returns the
        outcomes of the runs that ended meanwhile."""
        with self._lock:
            futures = list(self._flights)
        wait(futures)
        with self._lock:
            finished, self._finished = self._finished, []
        if self._listener is not None:
            self._listener.stop()
        self._renewals.stop()
        self.webhooks.stop()
        self._forget_listener()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._registered:
            try:
                self.company.stop_dispatcher(self.id, runs_started=self.runs_started, lost_races=self.lost_races)
            except OUTAGES as exc:
                self.log(f"could not record the stop: {exc.message}")
            self._registered = False
        return finished

    # -- starting runs ------------------------------------------------------------------------------

    def _company_paused(self) -> bool:
        return self._paused is not None and "*" in self._paused

    def _start_task_runs(self) -> tuple[list[Outcome], list[Future]]:
        self._housekeeping()
        self._record_unrecorded()
        outcomes: list[Outcome] = []
        futures: list[Future] = []
        with self.company.store.read():  # the agents, the spec, the kill switches and the work: one snapshot
            agents = self._served = self.agents()
            self._spec, self._paused = self.company.spec_and_paused()
            load = self.in_flight()
            everywhere = self.company.running_counts()  # other processes' runs count against an agent's limit
            limits = self._limits(self._spec)
            room = {a: limits.get(a, 1) - max(load.get(a, 0), everywhere.get(a, 0)) for a in agents}
            free = self.max_runs - sum(load.values())
            ready = [a for a in agents if room[a] > 0]
            offers = self.company.candidates_many(ready) if ready and free > 0 else {}
            self._with_work = {a for a, found in offers.items() if found}
        for task, agent in self._assign(offers, room, load, free):
            if self.stopping.is_set():
                break
            outcome, future = self._start(agent, task, trigger="task arrival",
                                          queue=tuple(t.id for t in offers[agent] if t.id != task.id))
            if outcome is not None:
                outcomes.append(outcome)
            if future is not None:
                futures.append(future)
                futures += self._start_shadows(future)
        return outcomes, futures

    def _start_shadows(self, owner: Future) -> list[Future]:
        """Start a shadow run beside the task run behind ``owner`` for each agent this dispatcher serves
        that is in stage ``shadow`` on the task's workflow and could act on it otherwise, if it has room
        (its ``max_concurrent_runs`` and the dispatcher's ``max_runs``). Shadows see the task as the
        owner's brief did."""
        with self._lock:
            flight = self._flights.get(owner)
        if flight is None or flight.task is None or flight.run_id is None or self._company_paused():
            return []
        seen, owner_run = flight.task, flight.run_id
        shadows = [a for a in self.company.shadows_for(seen.workflow, seen.state)
                   if a in self._served and self.runner(a) is not None]
        if not shadows:
            return []
        spec = self._current_spec()
        load = self.in_flight()
        futures = []
        for agent in shadows:
            if sum(load.values()) >= self.max_runs or load.get(agent, 0) >= self.capacity(agent, spec):
                continue
            if self.enforce_budgets(agent, seen.workflow):
                continue
            runner = self._take_runner(agent)
            state = RunState(agent, new_run_id(), f"{SHADOW_TRIGGER} {owner_run}", runner)

            def work(state: RunState = state, runner: Runner = runner) -> Outcome:
                try:
                    return self.pipeline.run_shadow(state, seen, owner_run)
                except Exception as exc:  # noqa: BLE001 - a shadow must not take the worker down
                    self.log(f"{state.agent} shadowing task {seen.id}: the runtime failed: {exc!r}")
                    return Outcome(state.agent, seen.id, state.run_id, "failed", failure=classify(exc))
                finally:
                    self._give_back_runner(state.agent, runner)

            futures.append(self._submit(_Flight(agent, "shadow"), work))
            load[agent] = load.get(agent, 0) + 1
        return futures

    def _assign(self, offers: dict[str, list[Candidate]], room: dict[str, int], load: Mapping[str, int],
                free: int) -> list[tuple[Candidate, str]]:
        """Hand out the offered tasks, most urgent first, each to one agent picked by the selection policy
        among those it is offered to that have room, within ``free`` runs in all."""
        offered: dict[int, tuple[Candidate, list[str]]] = {}
        for agent, tasks in offers.items():
            for task in tasks:
                offered.setdefault(task.id, (task, []))[1].append(agent)
        room, load = dict(room), Counter(load)
        chosen = []
        peers, me = self._peers
        # Priority, then age; with peers (other dispatchers serving this company), each first takes the
        # tasks whose id falls to it (id modulo the number of dispatchers), so they do not all race for
        # the same head of the queue.
        for task, agents in sorted(offered.values(), key=lambda o: (-o[0].priority, o[0].id % peers != me, o[0].id)):
            if free <= 0:
                break
            eligible = [a for a in agents if room.get(a, 0) > 0]
            if not eligible:
                continue
            agent = self.selection.choose(task, eligible, load, offered=agents)
            if agent is None:  # the policy leaves it for a busy agent (fitness-weighted shares)
                continue
            chosen.append((task, agent))
            room[agent] -= 1
            load[agent] += 1
            free -= 1
        return chosen

    def _start(self, agent: str, task: Candidate | Task, *, trigger: str,
               queue: tuple[int, ...] = ()) -> tuple[Outcome | None, Future | None]:
        """Claim ``task`` for ``agent`` in this thread and hand the run to a worker thread. Returns an
        outcome now (a budget stop, a cost stop, a lost race) or the run's future."""
        runner = self._take_runner(agent)
        try:
            claimed = self._claim(agent, task, runner, trigger=trigger, queue=queue)
        except BaseException:
            self._give_back_runner(agent, runner)
            raise
        if isinstance(claimed, Outcome):
            self._give_back_runner(agent, runner)
            return claimed, None
        return None, self._submit(_Flight(agent, "task", claimed.run_id, claimed.task), lambda: self._run_task(claimed))

    def _claim(self, agent: str, task: Candidate | Task, runner: Runner, *, trigger: str,
               queue: tuple[int, ...]) -> RunState | Outcome:
        """The stop rules, then the claim, in this thread. An outcome when no run starts: a budget or cost
        stop, or a lost race (counted, and nothing else)."""
        stop = self._stop_before_claim(agent, task)
        if stop is not None:
            return stop
        state = RunState(agent, new_run_id(), trigger, runner)
        try:
            self.pipeline.claim(state, task, queue)
        except LostRace:
            with self._lock:
                self.lost_races += 1
            return Outcome(agent, task.id, None, "skipped")
        return state

    def _stop_before_claim(self, agent: str, task: Candidate | Task) -> Outcome | None:
        exhausted = self.enforce_budgets(agent, task.workflow)
        if exhausted:
            return Outcome(agent, task.id, None, "stopped", blocked=exhausted)
        if self.max_task_cost_usd is None:  # the stop rule: no more money into this task
            return None
        previous = [a for a in self.company.attempts_of(task.id) if a.agent == agent]
        spent = self.company.task_cost(task.id) if previous else 0.0
        if not previous or spent < self.max_task_cost_usd:
            return None
        stop = Failure(FailureCategory.DETERMINISTIC, "cost-limit",
                       f"task {task.id} has cost {spent:.4f} USD, at or past the limit of "
                       f"{self.max_task_cost_usd:.4f} USD per task")
        attempt, _ = self.company.fail_attempt(task.id, agent, stop, max_attempts=1)
        return Outcome(agent, task.id, None, "stopped", failure=stop, blocked=attempt.blocked_reason)

    def _start_trigger_runs(self) -> list[Future]:
        spec = self._current_spec()
        futures = []
        for agent in self._may_wake([a for a in self._served if a in spec.agents and spec.agents[a].triggers], spec):
            if self.stopping.is_set():
                break
            fired = self.triggers.fired(agent, spec.agents[agent].triggers)
            if fired:
                keys = ", ".join(f.key for f in fired)
                futures.append(self._start_without_task(agent, keys, {"triggers": [f.as_dict() for f in fired]},
                                                        fired))
        return futures

    def _start_message_runs(self, exclude: set[str]) -> list[Future]:
        """The message trigger: an agent with unread messages (and no run yet this cycle) wakes to read them."""
        unread = self.company.unread_messages(self._served)
        wanted = [a for a in unread if a not in exclude]
        self._take_agent_leases(wanted)  # taken when it has mail: one process wakes it
        futures = []
        for agent in self._may_wake(wanted, self._current_spec()):
            if self.stopping.is_set():
                break
            futures.append(self._start_without_task(agent, f"{len(unread[agent])} unread message(s)", {}, []))
        return futures

    def _start_reflection_runs(self) -> list[Future]:
        """Reflection: an agent whose reflection slot has come (its mission's ``reflect`` schedule, nightly
        by default) wakes to revise its plan (:meth:`_run_reflection`), even when its task work fills its
        ``max_concurrent_runs``: one run more a night, so an agent that is always busy still reflects."""
        spec = self._current_spec()
        due = self.reflections.due_many(self._schedules(spec), self.company.store.clock())
        if not due:
            return []
        self._take_agent_leases(due)  # as for messages: one process wakes it
        futures = []
        for agent in self._may_wake(list(due), spec, beyond_capacity=True):
            if self.stopping.is_set():
                break
            state = RunState(agent, new_run_id(), due[agent].reason, self._take_runner(agent))
            futures.append(self._submit(_Flight(agent, "reflection"),
                                        lambda s=state, f=due[agent]: self._run_reflection(s, f)))
        return futures

    def _run_reflection(self, state: RunState, fired: Fired | None) -> Outcome:
        """One reflection run (in a worker thread, or in this one for :meth:`reflect_once`): the agent is
        briefed on its period and its plan, and what it decides is applied (see
        :meth:`~roster.runtime.pipeline.RunPipeline.run_without_task`). While a human holds the plan, the
        slot is skipped: the next reflection sees the human's edit."""
        hold = self.company.plan_hold(state.agent)
        if hold is not None:
            if fired is not None:
                self.reflections.done(state.agent, fired)
            self._give_back_runner(state.agent, state.runner)
            reason = f"no reflection: the plan is held by {hold.holder} until {hold.expires_at}"
            self.log(f"{state.agent}: {reason}")
            return Outcome(state.agent, None, None, "stopped", blocked=reason)
        outcome = self._run_without_task(state, {"reflection": True}, [])
        if fired is not None and outcome.outcome != "stopped":  # a run the kill switch stopped reflects again
            self.reflections.done(state.agent, fired)
        if outcome.outcome == "succeeded":  # as it rethinks its plan, its memory is organized: lessons merged
            try:
                done = self.company.consolidate_memory(actor=None, pads=[state.agent])
                if done.merged or done.expired:
                    self.log(f"{state.agent}: memory consolidated after reflection: {len(done.merged)} group(s) "
                             f"merged, {len(done.expired)} expired entr(ies) dropped")
            except OUTAGES as exc:
                self.log(f"{state.agent}: memory not consolidated after reflection: {exc.message}")
        return outcome

    def _schedules(self, spec: CompanySpec) -> list[tuple[str, str]]:
        """``(agent, cron)`` of each served agent that reflects, kept while the spec and the served agents
        are the same (a cycle over thousands of agents asks every time)."""
        if self._schedules_of is None or self._schedules_of[0] is not spec or self._schedules_of[1] != self._served:
            pairs = []
            for agent in self._served:
                me = spec.agents.get(agent)
                cron = reflection_cron(me.mission, me.reflect) if me is not None else None
                if cron is not None:
                    pairs.append((agent, cron))
            self._schedules_of = (spec, list(self._served), pairs)
        return self._schedules_of[2]

    def reflect_once(self, agent: str) -> Outcome:
        """A reflection run of ``agent`` now, in this thread (``roster reflect AGENT --now``), whatever its
        schedule (which it leaves as it was). Raises :class:`UsageError` (no runner)."""
        runner = self.runner(agent)
        if runner is None:
            raise UsageError(f"agent '{agent}' has no runner configured")
        self._register()
        return self._run_reflection(RunState(agent, new_run_id(), "reflection on demand", runner), None)

    def _start_goal_runs(self, exclude: set[str]) -> list[Future]:
        """The goal loop: an agent with a due active goal, no task work and no run this cycle wakes for
        its longest-due goal (one goal run per agent at a time). The goal's turn moves a cadence ahead
        when the run is taken (:meth:`~roster.store.goals.GoalVerbs.start_goal_run`), and after the run
        by its backoff; so a goal never loops tightly, even if its run fails or is never recorded."""
        spec = self._current_spec()
        served = [a for a in self._served if a in spec.agents]
        due: dict[str, Goal] = {}
        futures = []
        for goal in self.company.due_goals(served):
            if goal.agent not in self._with_work and goal.agent not in exclude:
                due.setdefault(goal.agent, goal)
            elif goal.agent in self._with_work and goal.check.command is not None:  # busy: the check keeps its cadence
                futures += self._start_goal_check(goal)
        if not due:
            return futures
        self._take_agent_leases(due)  # as for messages: one process wakes it
        now = self.company.store.clock()
        for agent in self._may_wake(list(due), spec):
            if self.stopping.is_set():
                break
            if due[agent].deadline_passed(now):  # checked once more (it may pass at the deadline), then closed
                checked = check_goal(self.company, due[agent], workdir=self.workdir)
                if self.company.miss_deadline(checked.id).state == "exhausted":
                    self.log(f"{agent}: goal {checked.id} missed its deadline {checked.deadline_at}; escalated")
                continue
            goal = self.company.start_goal_run(due[agent].id)
            if goal is None:  # met, moved or taken since the query
                continue
            runner = self._take_runner(agent)
            state = RunState(agent, new_run_id(), f"goal {goal.id}: {goal.objective[:120]}", runner)
            futures.append(self._submit(_Flight(agent, "goal"), lambda s=state, g=goal: self._run_goal(s, g)))
        return futures

    def _start_goal_check(self, goal: Goal) -> list[Future]:
        """The goal's turn without a run, for an agent busy with task work: its command check runs (in a
        worker thread, counted against ``max_runs``: it is a process) on the goal's cadence, so a goal met
        by others' work, or by the agent's task work, is closed on time. Returns its future, or none when
        the turn was taken elsewhere."""
        if self.max_runs - sum(self.in_flight().values()) <= 0:
            return []  # no room: the turn stays due for the next cycle
        taken = self.company.start_goal_run(goal.id)
        if taken is None:
            return []

        def check() -> Outcome:
            checked = check_goal(self.company, taken, workdir=self.workdir)
            return Outcome(goal.agent, None, None, "checked",
                           blocked=f"goal {goal.id} met: {checked.reason}" if checked.state == "met" else None)

        return [self._submit(_Flight(f"goal-check:{goal.id}", "check"), check, run=False)]

    def _run_goal(self, state: RunState, goal: Goal) -> Outcome:
        """One goal run (in a worker thread): the run, its spend charged to the goal (which may exhaust or
        stall it), then the goal's check (which may meet it). A KPI check costs nothing, so it is taken
        first too: a goal its KPI already meets is closed without waking the agent's model. The run is
        progress (it does not count toward a stall) when it filed, sent or remembered something, or when
        the goal's KPI moved toward its target since the check before."""
        before = (goal.last_check or {}).get("value")
        if goal.check.kpi is not None:
            try:
                goal = check_goal(self.company, goal, workdir=self.workdir)
            except OUTAGES as exc:
                self.log(f"{state.agent} (goal {goal.id}): not checked: {exc.message}")
            if goal.state == "met":
                self._give_back_runner(state.agent, state.runner)
                return Outcome(state.agent, None, None, "stopped", blocked=f"goal {goal.id} met: {goal.reason}")
        outcome = self._run_without_task(state, {"goal_id": goal.id}, [])
        try:
            if outcome.run_id is not None and outcome.outcome != "stopped":
                result = state.result
                now = (goal.last_check or {}).get("value")
                moved = goal.check.kpi is not None and before is not None and now is not None \
                    and goal.check.closer(before, now)
                changed = moved or (outcome.outcome == "succeeded" and result is not None and bool(
                    result.tasks or result.messages or result.memories))
                goal = self.company.record_goal_run(goal.id, outcome.run_id, changed=changed)
            if goal.state in ("active", "paused", "stalled"):
                check_goal(self.company, goal, workdir=self.workdir)
        except OUTAGES as exc:  # the goal's turn already moved on: it is charged and checked next time
            self.log(f"{state.agent} (goal {goal.id}): not recorded: {exc.message}")
        return outcome

    def _take_agent_leases(self, agents: Iterable[str]) -> None:
        """Take the runtime lease (``agent:<handle>``) of each of ``agents`` this dispatcher does not hold yet,
        before waking them without a task: the one process that holds it wakes the agent."""
        missing = [f"agent:{a}" for a in agents if f"agent:{a}" not in self._runtime_leases]
        if missing:
            self._runtime_leases |= self.company.acquire_runtime_leases(self.id, missing, ttl=self.lease_seconds)

    def _may_wake(self, agents: list[str], spec: CompanySpec, *, beyond_capacity: bool = False) -> list[str]:
        """Which of ``agents`` this dispatcher may wake without a task now: it holds the agent's runtime
        lease (``agent:<handle>``), the agent has room for a run (unless ``beyond_capacity``: a nightly
        reflection of an agent that is always busy) and no run without a task in flight, and the
        dispatcher has room."""
        load = self.in_flight()
        with self._lock:
            busy = {f.agent for f in self._flights.values() if f.kind != "task"}
        free = self.max_runs - sum(load.values())
        woken = []
        for agent in agents:
            if free <= 0:
                break
            if f"agent:{agent}" in self._runtime_leases and agent not in busy \
                    and (beyond_capacity or load.get(agent, 0) < self.capacity(agent, spec)):
                woken.append(agent)
                free -= 1
        return woken

    def _start_without_task(self, agent: str, trigger: str, context: dict, fired: list[Fired]) -> Future:
        runner = self._take_runner(agent)
        state = RunState(agent, new_run_id(), trigger, runner)
        kind = "trigger" if fired else "message"
        return self._submit(_Flight(agent, kind), lambda: self._run_without_task(state, context, fired))

    def _submit(self, flight: _Flight, work: Callable[[], Outcome], *, run: bool = True) -> Future:
        """Hand ``work`` to a worker thread, counted in flight under ``flight.agent``; a ``run`` (not a
        goal's check) also counts in ``runs_started`` and for the selection policy."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_runs, thread_name_prefix="roster-run")
        with self._lock:
            self._load[flight.agent] += 1
            if run:
                self.runs_started += 1
                self.selection.started(flight.agent)
            future = self._pool.submit(work)
            self._flights[future] = flight
        future.add_done_callback(self._landed)
        return future

    def _landed(self, future: Future) -> None:
        with self._lock:
            flight = self._flights.pop(future, None)
            if flight is not None:
                self._load[flight.agent] -= 1
                if flight.kind == "check" and not self._load[flight.agent]:
                    del self._load[flight.agent]  # one key per goal checked: not kept
            if not future.cancelled() and future.exception() is None:
                self._finished.append(future.result())
        self.wake.set()  # room for another run

    def _wait(self, futures: list[Future]) -> list[Outcome]:
        """Wait for ``futures`` (runs of this cycle) and take their outcomes out of the finished list."""
        if not futures:
            return []
        wait(futures)
        while True:  # and for their done-callbacks (_landed): the next cycle's load must not count them
            with self._lock:
                if not any(f in self._flights for f in futures):
                    break
            time.sleep(0.001)
        outcomes = [f.result() for f in futures]
        with self._lock:
            self._finished = [o for o in self._finished if o not in outcomes]
        return outcomes

    # -- one run, in a worker thread ----------------------------------------------------------------

    def _run_task(self, state: RunState) -> Outcome:
        assert state.task is not None and state.lease is not None
        try:
            outcome = self.pipeline.run(state)
        except OUTAGES as exc:  # nothing of the run's end was written: it is, once the store is back
            failure = state.failure or classify(exc)
            with self._lock:
                self._unrecorded.append(_Unrecorded(state.agent, state.task.id, state.run_id,
                                                    state.lease.fencing_token, failure,
                                                    time.monotonic() - state.started, state.usage))
            outcome = Outcome(state.agent, state.task.id, state.run_id, "failed", failure=failure)
        except Exception as exc:  # noqa: BLE001 - a bug in the runtime must not take the worker down
            self.log(f"{state.agent} on task {state.task.id}: the runtime failed: {exc!r}\n{traceback.format_exc()}")
            outcome = Outcome(state.agent, state.task.id, state.run_id, "failed", failure=classify(exc))
        finally:
            self._give_back_runner(state.agent, state.runner)
        self._after_run(state.agent, state.task.workflow, outcome)
        return outcome

    def _run_without_task(self, state: RunState, context: dict, fired: list[Fired]) -> Outcome:
        try:
            exhausted = self.enforce_budgets(state.agent, None)
            if exhausted:
                return Outcome(state.agent, None, None, "stopped", blocked=exhausted)
            outcome = self.pipeline.run_without_task(state, context)
            if fired and outcome.outcome != "stopped":  # a run the kill switch stopped leaves its triggers
                self.triggers.commit(state.agent, fired)
        except OUTAGES as exc:  # its end is recorded once the store is back; the triggers fire again
            failure = state.failure or classify(exc)
            if state.begun and not state.ended:
                with self._lock:
                    self._unrecorded.append(_Unrecorded(state.agent, None, state.run_id, None, failure,
                                                        time.monotonic() - state.started, state.usage))
            self.log(f"{state.agent} ({state.trigger}): the store is {outage_word(exc)}; the run's end is recorded "
                     "once it is back")
            return Outcome(state.agent, None, state.run_id, "failed", failure=failure)
        except Exception as exc:  # noqa: BLE001 - a bug: logged, the triggers fire again
            self.log(f"{state.agent} ({state.trigger}): the run could not be recorded: {exc!r}")
            return Outcome(state.agent, None, state.run_id, "failed", failure=classify(exc))
        finally:
            self._give_back_runner(state.agent, state.runner)
        self._after_run(state.agent, None, outcome)
        return outcome

    def _after_run(self, agent: str, workflow: str | None, outcome: Outcome) -> None:
        """After a run: the budgets it counts toward are checked. (KPIs named for its transition are
        measured by the leader from the record, like every transition: :meth:`_periodic_jobs`.)"""
        try:
            self.enforce_budgets(agent, workflow)
        except OUTAGES as exc:
            self.log(f"{agent}: budgets not checked after run {outcome.run_id}: {exc.message}")

    def run_once(self, agent: str, task: Task | Candidate | None, *, trigger: str, queue: list[int] | None = None,
                 context: dict | None = None) -> Outcome:
        """One run of ``agent`` by hand, in this thread (``roster run``): claim ``task`` (which must still be
        offered to the agent as given), run, apply, record. With ``task=None`` (a schedule, an event, a
        condition), the run holds no lease and may only file tasks; ``context`` (what fired) goes into
        its brief."""
        runner = self.runner(agent)
        if runner is None:
            raise UsageError(f"agent '{agent}' has no runner configured")
        self._register()
        if task is None:
            return self._run_without_task(RunState(agent, new_run_id(), trigger, runner), context or {}, [])
        claimed = self._claim(agent, task, runner, trigger=trigger, queue=tuple(queue or ()))
        if isinstance(claimed, Outcome):
            return claimed
        outcome = self.pipeline.run(claimed)
        self._after_run(agent, task.workflow, outcome)
        return outcome

    def brief(self, agent: str, task: Task, lease: Lease, run_id: str, attempt: int, queue: list[int],
              previous: list | None = None) -> Brief:
        """The brief of one run on ``task`` (see :mod:`roster.runtime.context`)."""
        return self.context.brief(agent, task, Wakeup(run_id, lease.fencing_token, attempt, tuple(queue)), previous)

    # -- housekeeping -------------------------------------------------------------------------------

    def _register(self) -> None:
        if not self._registered:
            self.company.register_dispatcher(self.id, host=self.host, pid=self.pid, agents=self.only,
                                             max_runs=self.max_runs, lease_seconds=self.lease_seconds)
            self._registered = True
            self._renewals.start()

    def _housekeeping(self) -> None:
        """Every third of a lease: take or renew the runtime leases (the leader's, and each served agent's),
        and end the runs of dead dispatchers as crashed."""
        self._register()
        now = time.monotonic()
        if now < self._housekeeping_due:
            return
        self._housekeeping_due = now + self.lease_seconds / 3
        # The crash sweep first: a dead dispatcher's runs end and its runtime leases go back, to be taken now.
        for crashed in self.company.end_crashed_runs(max_attempts=self.max_attempts, me=self.id, host=self.host,
                                                     alive=pid_alive):
            where = f"task {crashed.task_id}" if crashed.task_id is not None else "no task"
            self.log(f"{crashed.agent} on {where}: run {crashed.run_id} crashed ({crashed.reason})"
                     + (f"; blocked: {crashed.blocked}" if crashed.blocked else ""))
        # The leader's lease, the triggers' of each served agent that has triggers, and the ones held (an
        # agent's message wake-ups take theirs when mail arrives): not one per agent of a 10,000-agent fleet.
        spec = self.company.spec()
        names = {LEADER, *self._runtime_leases,
                 *(f"agent:{a}" for a in self.agents() if a in spec.agents and spec.agents[a].triggers)}
        self._runtime_leases = self.company.acquire_runtime_leases(self.id, names, ttl=self.lease_seconds)
        if LEADER in self._runtime_leases:  # before any run: a leader's first look sets where KPIs follow from
            self.kpis.follow(spec)
        live = sorted(d.id for d in self.company.list_dispatchers())
        self._peers = (len(live), live.index(self.id)) if self.id in live else (1, 0)

    def _periodic_jobs(self) -> None:
        """The runtime's own jobs, by the leader only: memory consolidation and KPI measurements (on their
        schedule, and after the transitions they name, wherever those were made: runs, approvals, humans)."""
        if LEADER not in self._runtime_leases:
            return
        spec = self._current_spec()
        self._consolidate_memory_if_due(spec)
        self.kpis.follow(spec)
        self.kpis.measure_due(spec)
        self._judge_stages_if_due(spec)
        self.webhooks.tick(bool(spec.webhooks))  # delivered by its own thread, never in this cycle

    def _heartbeat(self) -> None:
        with self._lock:
            counters = {"runs_in_flight": sum(self._load.values()), "runs_started": self.runs_started,
                        "lost_races": self.lost_races}
        self.company.heartbeat(self.id, **counters)

    def _on_work(self, company: str) -> None:
        if company == self.company.company:
            self.wake.set()

    def _heard(self, company: str | None) -> None:
        if company is None or company == self.company.company:
            self.wake.set()

    def _listen(self) -> None:
        """On PostgreSQL, wake on other processes' commits (``LISTEN``); elsewhere polling stays the way."""
        if self.company.store.dialect.listens and self._listener is None:
            self._listener = NotifyListener(self.company.store, self._heard, self.log)
            self._listener.start()

    def _record_unrecorded(self) -> None:
        """End the runs an unavailable store kept from ending (see :meth:`run_forever`): each is finished
        as failed with the failure it met (an attempt, so the task backs off), and its lease, if still its
        own, goes back now rather than at expiry."""
        while True:
            with self._lock:
                if not self._unrecorded:
                    return
                run = self._unrecorded[0]
            usage = run.usage
            finish = {"outcome": "failed", "failure": run.failure, "wall_seconds": round(run.wall_seconds, 6),
                      "model": usage.model, "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                      "cost_usd": usage.cost_usd}
            if run.task_id is None:  # no task, no lease, no attempt: only the run's own row
                self.company.finish_run(run.run_id, **finish)
            else:
                self.company.fail_attempt(run.task_id, run.agent, run.failure, max_attempts=self.max_attempts)
                self.company.end_run(run.run_id, agent=run.agent, task_id=run.task_id,
                                     fencing_token=run.fencing_token, finish=finish)
            with self._lock:
                self._unrecorded.pop(0)
            where = f"task {run.task_id}" if run.task_id is not None else "no task"
            self.log(f"{run.agent} on {where}: run {run.run_id} recorded as failed "
                     f"({run.failure.category.value}: {run.failure.message})")

    # -- budgets ------------------------------------------------------------------------------------

    def enforce_budgets(self, agent: str, workflow: str | None) -> str | None:
        """Check the budgets a run of ``agent`` counts toward, in USD or in tokens. Past ``warn_at``: a
        ``budget.warn`` event, once per budget and period. At 100%: a hard stop (``budget.exhausted``): the
        agent is paused (an agent budget), or its portfolio (a portfolio budget) or every agent (the company
        budget), with the reason, and their leases released. A USD budget over runs that could not be
        priced cannot be enforced in full: a ``budget.unpriced`` event and a log line say so, once per
        budget and period (what is known is still enforced). Returns the hard stop's reason, or ``None`` if
        the run may go on."""
        reason = None
        spec = self._current_spec()
        if not spec.budgets:
            return None
        for budget in self.company.budgets_for(agent, workflow, spec=spec):
            status = self.company.budget_status(budget)
            label = f"budget {budget.scope} per {budget.period}"
            if not status.spent_known:
                self._once("budget.unpriced", status, f"{label} cannot be enforced: {status.unpriced_runs} run(s) "
                           f"since {status.since} could not be priced, so their cost is unknown; give their "
                           "models a price under 'models:' in the spec, or set a 'tokens' budget")
            level = status.level(budget.warn_at)
            if level in ("ok", "unknown"):
                continue
            why = f"{label}: {status.describe()} spent since {status.since}"
            if level == "warn":
                self._once("budget.warn", status, why)
                continue
            reason = f"hard stop, {why}"
            self.company.note_budget_exhausted(budget.scope, reason)
            kind, _, name = budget.scope.partition(":")
            if kind == "agent":
                if self.company.get_principal(name).status == "active":
                    self.company.set_status(name, "paused", actor=None, reason=reason)
            else:
                scope = "*" if kind == "company" else name
                if scope not in self.company.paused():
                    self.company.pause(scope, actor=None, reason=reason)
            self.log(f"{agent}: {reason}")
        return reason

    def _once(self, action: str, status: BudgetStatus, why: str) -> None:
        """Audit ``action`` (``budget.warn`` or ``budget.unpriced``) for a budget, and log it, unless it was
        already audited for that budget (scope, period and unit) this period."""
        seen = self.company.audit_log(action=action, since=status.since)
        if any(e.data.get("scope") == status.scope and e.data.get("period") == status.period
               and e.data.get("unit", "usd") == status.unit for e in seen):
            return
        if action == "budget.unpriced":
            self.company.note_budget_unpriced(status.scope, status.period, status.unpriced_runs, why)
        else:
            self.company.note_budget_warning(status.scope, status.period, why, unit=status.unit)
        self.log(f"warning: {why}")

    def _judge_stages_if_due(self, spec: CompanySpec) -> None:
        """Judge every (agent, workflow) against the stage criteria each ``fitness.evaluate_every``:
        demotions, retirement and promotion proposals (see :mod:`roster.store.stage_criteria`)."""
        every = spec.fitness.evaluate_every
        if every is None:
            return
        now = self.company.store.clock()
        if not self.periodic.due(STAGE_CRITERIA, every, now):
            return
        done = self.company.judge_stages()
        self.periodic.ran(STAGE_CRITERIA, every, now)
        for move in done:
            self.log(f"stages: {move['agent']} on {move['workflow']}: {move['move']} ({'; '.join(move['why'])}), "
                     f"now {move['stage']}")

    def _consolidate_memory_if_due(self, spec: CompanySpec) -> None:
        """Consolidate every memory pad each ``memory.consolidate_every`` (state kept in trigger_state)."""
        every = spec.memory.consolidate_every
        if every is None:
            return
        now = self.company.store.clock()
        if not self.periodic.due(CONSOLIDATION, every, now):
            return
        done = self.company.consolidate_memory(actor=None)
        self.periodic.ran(CONSOLIDATION, every, now)
        if done.merged or done.expired:
            self.log(f"memory: merged {len(done.merged)} group(s) of duplicates, dropped {len(done.expired)} "
                     "expired entr(ies)")

