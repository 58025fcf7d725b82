"""The dispatcher: one action per agent per cycle, each on the record.

A cycle asks the store, for every active agent with a runner, which tasks it could act on now
(:meth:`~roster.store.runs.RunVerbs.pending_work`: one indexed query, no model). An agent with no work
costs nothing. An agent with work gets one run: the dispatcher claims the most urgent task with a lease
(renewed in the background while the runner works), records the run, builds the brief, runs the runner,
and applies the result through the store with the run's fencing token: artifacts, checks, then the
transition, each checked against rights and the contract. Then it records the outcome and releases the
lease. Many pending tasks make one run per cycle that sees them all (the brief's ``queue``).

Failures are classified (:mod:`roster.kernel.failures`): transient ones are retried with backoff up to
``max_attempts``; others, and exhausted retries, leave a persisted blocker on the (task, agent) pair.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from roster.errors import (
    ApprovalPending,
    Denied,
    LeaseHeld,
    MalformedOutput,
    NotFound,
    RosterError,
    StaleFencingToken,
    StoreBusy,
    UsageError,
)
from roster.kernel.failures import Failure, FailureCategory, classify
from roster.kernel.spec import CompanySpec
from roster.runtime.context import ContextAssembler, Wakeup
from roster.runtime.kpis import KpiMeter
from roster.runtime.runners import Brief, Runner, RunResult, Usage, make_runner
from roster.runtime.triggers import Periodic, Triggers
from roster.store import CompanyStore, Task
from roster.store.leases import Lease
from roster.store.runs import Candidate, new_run_id

RUNTIME = "runtime"
"""Who the runtime's own housekeeping is recorded as (in trigger_state and the audit)."""
CONSOLIDATION = "memory:consolidate"
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_MAX_ATTEMPTS = 3
MAX_BUSY_WAIT = 60.0
"""Seconds :meth:`Dispatcher.run_forever` waits at most between cycles while the store stays busy."""


class JudgmentCall(RosterError):
    """The runner said it cannot decide (or another category it reported itself)."""

    code = "runner-reported"

    def __init__(self, category: str, reason: str) -> None:
        self.category = category
        super().__init__(reason)


@dataclass(frozen=True)
class Outcome:
    """What one run did: ``outcome`` is succeeded, failed, waiting (an approval request), stopped (by the
    kill switch while it ran) or skipped (the task was leased meanwhile)."""

    agent: str
    task_id: int | None
    run_id: str | None
    outcome: str
    transition: str | None = None
    failure: Failure | None = None
    blocked: str | None = None


class Dispatcher:
    """Runs a company's agents. ``runners`` overrides the spec's runner per agent (tests, embedding)."""

    def __init__(self, company: CompanyStore, *, workdir: Path, lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, runners: dict[str, Runner] | None = None,
                 max_task_cost_usd: float | None = None, mcp_url: str | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.company = company
        self.workdir = workdir
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.max_task_cost_usd = max_task_cost_usd
        self.mcp_url = mcp_url
        """Roster's MCP server (``roster up`` serving it): ``process`` runners point their agent CLI at it."""
        self._runners: dict[str, Runner | None] = dict(runners or {})
        self.log = log or (lambda _message: None)
        self.stopping = threading.Event()
        self._spec: CompanySpec | None = None
        self.triggers = Triggers(company, workdir=workdir)
        self.context = ContextAssembler(company)
        self._renewals = _Renewals(company, lease_seconds)
        self.periodic = Periodic(company, RUNTIME)
        self.kpis = KpiMeter(company, workdir=workdir, schedule=self.periodic, log=self.log)
        self._unrecorded: list[_Unrecorded] = []
        """Runs whose end a busy store refused (:class:`StoreBusy`): recorded at the next cycle's start."""

    # -- who runs -----------------------------------------------------------------------------------

    def runner(self, agent: str) -> Runner | None:
        if agent not in self._runners:
            spec_agent = self.company.spec().agents.get(agent)
            config = spec_agent.runner.model_dump() if spec_agent and spec_agent.runner else None
            try:
                self._runners[agent] = make_runner(
                    config, workdir=self.workdir, tools=lambda: self.company.spec().tools,
                    authorize_tool=lambda tool, arguments: self.company.record_tool_call(
                        tool, actor=agent, arguments=arguments),
                    issue_token=self._issue_run_token, mcp_url=self.mcp_url)
            except UsageError as exc:
                self.log(f"agent {agent}: no runner: {exc.message}")
                self._runners[agent] = None
        return self._runners[agent]

    def _issue_run_token(self, agent: str, lifetime: timedelta) -> tuple[str, Callable[[], None]]:
        """A short-lived token for one run of an external agent, and how to revoke it afterwards."""
        issued = self.company.issue_token(agent, actor=None, name="run token (process runner)", lifetime=lifetime)

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
        """Active agents that have a runner, by handle."""
        return [p.handle for p in self.company.list_principals()
                if p.kind == "agent" and p.status == "active" and self.runner(p.handle) is not None]

    # -- the loop -----------------------------------------------------------------------------------

    def cycle(self) -> list[Outcome]:
        """One pass over every agent: at most one run each. Returns what each run did."""
        with self.company.store.pinned():  # one connection for the cycle's transactions
            return self._cycle()

    def _cycle(self) -> list[Outcome]:
        outcomes = []
        self._record_unrecorded()
        with self.company.store.read():  # the agents, the spec, the kill switches and the work: one snapshot
            agents = self.agents()
            self._spec, paused = self.company.spec_and_paused()
            candidates = self.company.candidates_many(agents)
        for agent, work in candidates.items():
            if self.stopping.is_set():
                break
            outcomes.append(self.run_once(agent, work[0], trigger="task arrival", queue=[t.id for t in work[1:]]))
        spec = self._spec
        if "*" in paused:
            return outcomes  # the company-wide kill switch: no wake-ups, and no event is used up meanwhile
        for agent in agents:
            if self.stopping.is_set() or not spec.agents.get(agent) or not spec.agents[agent].triggers:
                continue
            fired = self.triggers.fired(agent, spec.agents[agent].triggers)
            if fired:
                keys = ", ".join(f.key for f in fired)
                outcome = self.run_once(agent, None, trigger=keys, context={"triggers": [f.as_dict() for f in fired]})
                outcomes.append(outcome)
                if outcome.outcome != "stopped":  # a run the kill switch stopped leaves its triggers to fire again
                    self.triggers.commit(agent, fired)
        # The message trigger: an agent with unread messages (and no run yet this cycle) wakes to read them.
        ran = {o.agent for o in outcomes}
        for agent, unread in self.company.unread_messages([a for a in agents if a not in ran]).items():
            if self.stopping.is_set():
                break
            outcomes.append(self.run_once(agent, None, trigger=f"{len(unread)} unread message(s)"))
        self._consolidate_memory_if_due(spec)
        self.kpis.measure_due(spec)
        return outcomes

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

    def run_forever(self, *, poll_seconds: float = 1.0, report: Callable[[list[Outcome]], None] | None = None) -> None:
        """Cycle until :attr:`stopping` is set (SIGINT/SIGTERM in ``roster up``); a run in flight finishes
        and releases its lease first. ``report`` is given each cycle's outcomes. Sleeps ``poll_seconds``
        after a cycle with nothing to do.

        A database that another process keeps locked past the lock timeout (:class:`StoreBusy`) does not
        stop the loop: it is logged and the next cycle waits ``poll_seconds``, doubling after each busy
        cycle up to :data:`MAX_BUSY_WAIT` seconds. What the busy cycle committed stays. A run whose end
        could not be written is recorded at the start of the next cycle that gets through: failed, with
        the failure it met (transient: the task is retried), and its lease given back unless another run
        has taken the task since (its fencing token then refuses the late release). Any other error
        stops the loop."""
        wait = poll_seconds
        while not self.stopping.is_set():
            try:
                outcomes = self.cycle()
            except StoreBusy as exc:
                self.log(f"the store is busy: {exc.message} Next cycle in {wait:g} s.")
                self.stopping.wait(wait)
                wait = min(2 * wait, MAX_BUSY_WAIT)
                continue
            wait = poll_seconds
            if report is not None:
                report(outcomes)
            if not outcomes:
                self.stopping.wait(poll_seconds)

    # -- one run ------------------------------------------------------------------------------------

    def run_once(self, agent: str, task: Task | Candidate | None, *, trigger: str, queue: list[int] | None = None,
                 context: dict | None = None) -> Outcome:
        """Claim ``task`` for ``agent``, run its runner once, apply the result, record everything. The
        brief shows the task as read in the claim's transaction. With
        ``task=None`` (a schedule, an event, a condition), the run holds no lease and may only file
        tasks; ``context`` (what fired) goes into its brief."""
        runner = self.runner(agent)
        if runner is None:
            raise UsageError(f"agent '{agent}' has no runner configured")
        exhausted = self.enforce_budgets(agent, task.workflow if task else None)
        if exhausted:
            return Outcome(agent, task.id if task else None, None, "stopped", blocked=exhausted)
        if task is None:
            return self._run_without_task(agent, runner, trigger, context or {})
        previous: list = []
        if self.max_task_cost_usd is not None:  # the stop rule: no more money into this task
            previous = [a for a in self.company.attempts_of(task.id) if a.agent == agent]
            spent = self.company.task_cost(task.id) if previous else 0.0
            if previous and spent >= self.max_task_cost_usd:
                stop = Failure(FailureCategory.DETERMINISTIC, "cost-limit",
                               f"task {task.id} has cost {spent:.4f} USD, at or past the limit of "
                               f"{self.max_task_cost_usd:.4f} USD per task")
                blocked = self.company.record_failure(task.id, agent, stop, max_attempts=1).blocked_reason
                self.company.escalate(task.id, from_agent=agent, category=stop.category.value, reason=blocked or "")
                return Outcome(agent, task.id, None, "stopped", failure=stop, blocked=blocked)
        run_id = new_run_id()
        claimed: Task | None = None
        brief: Brief | None = None
        unbriefed: Exception | None = None  # why the brief could not be built: the run's failure, once claimed

        def start(conn, head, lease: Lease, as_claimed: Task) -> None:  # noqa: ANN001 - in the claim's transaction
            nonlocal previous, claimed, brief, unbriefed
            # Read here, not in transactions of their own: the task, the attempt count and the whole brief
            # are as of the claim.
            claimed = as_claimed
            previous = [a for a in self.company.attempts_txn(conn, task.id) if a.agent == agent]
            attempt = 1 + sum(a.failures for a in previous)
            self.company._start_run_txn(conn, head, agent, run_id, trigger=trigger, task_id=task.id,
                                        fencing_token=lease.fencing_token, attempt=attempt)
            wakeup = Wakeup(run_id, lease.fencing_token, attempt, tuple(queue or []))
            try:
                brief = self.context.brief_txn(conn, self.company._refresh_txn(conn, head), agent, claimed, wakeup,
                                               previous)
            except Exception as exc:  # noqa: BLE001 - not the claim's fault: the run fails with it, classified
                if self.company.store.is_database_error(exc):
                    raise  # the claim's transaction failed with it (on PostgreSQL it cannot commit)
                unbriefed = exc

        try:
            lease = self.company.claim(task.id, actor=agent, run_id=run_id, ttl=self.lease_seconds, then=start)
        except LeaseHeld:
            return Outcome(agent, task.id, None, "skipped")
        assert claimed is not None
        task = claimed
        started = time.monotonic()
        failure: Failure | None = None
        stopped = False
        transition: str | None = None
        outcome = "succeeded"
        tried: dict = {"saved": []}
        ended = False  # whether the run ended, and its lease went back, in its transition's (committed) transaction
        fused: list[bool] = []
        with self._renewals.held(agent, lease):
            try:
                if unbriefed is not None:
                    raise unbriefed
                assert brief is not None
                result = runner.run(brief)
                tried.update(transition=result.transition, writes=result.writes)

                def end_with_transition(conn, head, cache, moved: Task) -> None:  # noqa: ANN001
                    # A clean success (no earlier attempts to clear, no messages to mark read): one commit
                    # moves the task, releases the lease, ends the run and records what the agent saw.
                    done = self._finisher(run_id, runner, outcome="succeeded", transition=result.transition,
                                          failure=None, started=started)
                    self.company.release_txn(conn, head, self.company._actor(cache, agent), task.id,
                                             lease.fencing_token, row=moved)
                    self.company._finish_run_txn(conn, head, run_id, agent=agent, **done)
                    self.company.record_view_txn(conn, head, task.id, agent, task=moved)
                    fused.append(True)

                clean = not previous and not brief.data.get("messages")
                transition, outcome = self._apply(agent, task, lease, result, saved=tried["saved"],
                                                  then=end_with_transition if clean else None)
                ended = bool(fused)  # only once the transition's transaction has committed
            except Exception as exc:  # noqa: BLE001 - every failure is classified and recorded
                failure = classify(exc)
                if isinstance(exc, JudgmentCall):
                    failure = Failure(FailureCategory(exc.category), exc.code, exc.message)
                stopped = _stopped_by_kill_switch(exc)
                outcome = "stopped" if stopped else "failed"
        blocked = None
        if not ended:
            try:
                blocked = self._end_run(agent, task, lease, run_id, runner, brief, previous, failure, stopped, tried,
                                        outcome=outcome, transition=transition, started=started)
            except StoreBusy as busy:  # nothing of the run's end was written: it is, once the store is free
                self._unrecorded.append(_Unrecorded(agent, task.id, run_id, lease.fencing_token,
                                                    failure or classify(busy), time.monotonic() - started))
                raise
        if outcome == "succeeded" and transition is not None:  # ground truth after the change, not a report
            self.kpis.after(self._current_spec(), task.workflow, transition, task.id)
        self.enforce_budgets(agent, task.workflow)
        return Outcome(agent, task.id, run_id, outcome, transition, failure, blocked)

    def _end_run(self, agent: str, task: Task, lease: Lease, run_id: str, runner: Runner, brief: Brief | None,
                 previous: list, failure: Failure | None, stopped: bool, tried: dict, *, outcome: str,
                 transition: str | None, started: float) -> str | None:
        """After a run that did not end in its transition's transaction: mark its messages read, record a
        failure (and climb the ladder), finish the run and release the lease. Returns the blocker, if any."""
        if brief is not None:  # read, whatever the outcome: a failing run must not see them forever
            self.company.mark_read([m["id"] for m in brief.data.get("messages") or []], actor=agent)
        blocked = None
        if failure is not None and not stopped:  # a kill switch is not the task's fault: no blocker
            blocked = self.company.record_failure(task.id, agent, failure, max_attempts=self.max_attempts,
                                                  tried=tried).blocked_reason
            self.log(f"{agent} on task {task.id}: {failure.category.value} failure: {failure.message}")
            if blocked:  # the self step is over: up the ladder, to a peer or a human
                step = self.company.escalate(task.id, from_agent=agent, category=failure.category.value,
                                             reason=blocked)
                self.log(f"  escalated to {step.to} ({step.step}): {step.reason}")
        elif outcome == "succeeded" and previous:
            self.company.clear_attempts(task.id, agent)
        finish = self._finisher(run_id, runner, outcome=outcome, transition=transition, failure=failure,
                                started=started)
        def end(conn, head) -> None:  # noqa: ANN001 - the run ends, and what it saw is kept, in the release's transaction
            self.company._finish_run_txn(conn, head, run_id, agent=agent, **finish)
            self.company.record_view_txn(conn, head, task.id, agent)

        try:
            self.company.release(task.id, actor=agent, fencing_token=lease.fencing_token, then=end)
        except (StaleFencingToken, Denied):
            # taken over, or released by the kill switch (which also stops us acting): nothing to give back
            self.company.finish_run(run_id, **finish)
        return blocked

    def _record_unrecorded(self) -> None:
        """End the runs a busy store kept from ending (see :meth:`run_forever`): each is finished as failed
        with the failure it met, and its lease, if still its own, goes back now rather than at expiry."""
        while self._unrecorded:
            run = self._unrecorded[0]
            finish = {"outcome": "failed", "failure": run.failure, "wall_seconds": round(run.wall_seconds, 6)}

            def end(conn, head, run=run, finish=finish) -> None:  # noqa: ANN001
                self.company._finish_run_txn(conn, head, run.run_id, agent=run.agent, **finish)

            try:
                self.company.release(run.task_id, actor=run.agent, fencing_token=run.fencing_token, then=end)
            except (StaleFencingToken, Denied, NotFound):  # taken over, or the agent paused: only the run to end
                self.company.finish_run(run.run_id, **finish)
            self._unrecorded.pop(0)
            self.log(f"{run.agent} on task {run.task_id}: run {run.run_id} recorded as failed "
                     f"({run.failure.category.value}: {run.failure.message})")

    def _run_without_task(self, agent: str, runner: Runner, trigger: str, context: dict) -> Outcome:
        run_id = self.company.start_run(agent, trigger=trigger, task_id=None, fencing_token=None)
        started = time.monotonic()
        failure, outcome = None, "succeeded"
        brief: Brief | None = None
        try:
            fired = tuple(context.get("triggers", []))
            brief = self.context.brief(agent, None, Wakeup(run_id, fired=fired))
            result = runner.run(brief)
            if result.transition or result.artifacts or result.checks:
                raise MalformedOutput("a run woken without a task can only file tasks, send messages and remember "
                                      "(no transition, artifact or check)")
            if result.failure is not None:
                raise JudgmentCall(result.failure.category, result.failure.reason)
            self._file_tasks(agent, result)
            self._communicate(agent, None, result, run_id)
        except Exception as exc:  # noqa: BLE001 - every failure is classified and recorded
            failure = classify(exc)
            if isinstance(exc, JudgmentCall):
                failure = Failure(FailureCategory(exc.category), exc.code, exc.message)
            outcome = "stopped" if _stopped_by_kill_switch(exc) else "failed"
            self.log(f"{agent} ({trigger}): {failure.category.value} failure: {failure.message}")
        if brief is not None:  # read, whatever the outcome: a failing run must not wake on them forever
            self.company.mark_read([m["id"] for m in brief.data.get("messages") or []], actor=agent)
        self._finish(run_id, runner, outcome=outcome, failure=failure, started=started)
        self.enforce_budgets(agent, None)
        return Outcome(agent, None, run_id, outcome, None, failure)

    def _finish(self, run_id: str, runner: Runner, *, outcome: str, started: float, failure: Failure | None,
                transition: str | None = None) -> None:
        self.company.finish_run(run_id, **self._finisher(run_id, runner, outcome=outcome, started=started,
                                                         failure=failure, transition=transition))

    @staticmethod
    def _finisher(run_id: str, runner: Runner, *, outcome: str, started: float, failure: Failure | None,
                  transition: str | None = None) -> dict:
        """The run record's closing values: outcome, failure, the runner's usage and the wall time."""
        usage = getattr(runner, "last_usage", None) or Usage()
        return {"outcome": outcome, "transition": transition, "failure": failure, "model": usage.model,
                "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                "cost_usd": usage.cost_usd, "wall_seconds": round(time.monotonic() - started, 6)}

    # -- budgets ------------------------------------------------------------------------------------

    def enforce_budgets(self, agent: str, workflow: str | None) -> str | None:
        """Check the budgets a run of ``agent`` counts toward. Past ``warn_at``: a ``budget.warn`` event,
        once per budget and period. At 100%: a hard stop (``budget.exhausted``): the agent is paused (an
        agent budget), or its portfolio (a portfolio budget) or every agent (the company budget), with
        the reason, and their leases released. Returns that reason, or ``None`` if the run may go on."""
        reason = None
        spec = self._current_spec()
        if not spec.budgets:
            return None
        for budget in self.company.budgets_for(agent, workflow, spec=spec):
            status = self.company.budget_status(budget)
            level = status.level(budget.warn_at)
            if level == "ok":
                continue
            why = (f"budget {budget.scope} per {budget.period}: {status.spent_usd:.4f} of {budget.usd:.2f} USD "
                   f"spent since {status.since}")
            if level == "warn":
                self._warn_once(budget.scope, budget.period, status.since, why)
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

    def _warn_once(self, scope: str, period: str, since: str, why: str) -> None:
        seen = self.company.audit_log(action="budget.warn", since=since)
        if not any(e.data.get("scope") == scope and e.data.get("period") == period for e in seen):
            self.company.note_budget_warning(scope, period, why)
            self.log(f"warning: {why}")

    def _file_tasks(self, agent: str, result: RunResult, parent: Task | None = None) -> None:
        for new in result.tasks:
            if new.packet is not None and parent is None:
                raise MalformedOutput(f"task '{new.title}' carries a delegation packet, but this run has no task "
                                      "to delegate from; file it without a packet, or delegate from a task run")
            if new.packet is not None and parent is not None:
                self.company.delegate(parent.id, actor=agent, workflow=new.workflow, title=new.title,
                                      packet=new.packet, fields=new.fields, owner=new.owner, priority=new.priority,
                                      idempotency_key=new.key)
                continue
            task, created = self.company.create_task(workflow=new.workflow, title=new.title, actor=agent,
                                                     fields=new.fields, owner=new.owner, priority=new.priority,
                                                     idempotency_key=new.key)
            for artifact in new.artifacts if created else []:
                self.company.record_artifact(task.id, artifact.kind, artifact.content.encode(), actor=agent,
                                             name=artifact.name, reason=artifact.reason)

    def _communicate(self, agent: str, task: Task | None, result: RunResult, run_id: str,
                     saved: list[str] | None = None) -> None:
        """Send the run's messages and keep its memories (provenance: this run and task)."""
        saved = saved if saved is not None else []
        for message in result.messages:
            task_id = message.task_id if message.task_id is not None else (task.id if task else None)
            self.company.send_message(message.to, message.body, actor=agent, task_id=task_id,
                                      thread_id=message.thread_id)
            saved.append(f"message to {message.to}")
        for memory in result.memories:
            provenance = {"run": run_id, **({"task": task.id} if task else {})}
            self.company.remember(memory.text, actor=agent, kind=memory.kind, confidence=memory.confidence,
                                  provenance=provenance, expires_in=memory.expires_in)
            saved.append(f"memory {memory.kind}")

    def _apply(self, agent: str, task: Task, lease: Lease, result: RunResult, saved: list[str] | None = None,
               then: Callable | None = None) -> tuple[str | None, str]:
        """Apply a result; ``saved`` collects what was kept, so a failure later on can say what partly
        succeeded. ``then`` runs in the transition's transaction, once it is made (see
        :meth:`~roster.store.tasks.TaskVerbs.transition`)."""
        saved = saved if saved is not None else []
        self._file_tasks(agent, result, parent=task)
        saved.extend(f"task '{t.title}'" for t in result.tasks)
        for artifact in result.artifacts:
            self.company.record_artifact(task.id, artifact.kind, artifact.content.encode(), actor=agent,
                                         name=artifact.name, reason=artifact.reason, run_id=lease.run_id,
                                         fencing_token=lease.fencing_token)
            saved.append(f"artifact {artifact.kind} '{artifact.name or artifact.kind}'")
        for check in result.checks:
            self.company.record_check(task.id, check.name, passed=check.passed, detail=check.detail, actor=agent,
                                      fencing_token=lease.fencing_token)
            saved.append(f"check {check.name} ({'passed' if check.passed else 'failed'})")
        self._communicate(agent, task, result, lease.run_id, saved)
        if result.failure is not None:
            raise JudgmentCall(result.failure.category, result.failure.reason)
        if result.transition is None:
            return None, "succeeded"
        # The version the brief showed, unless this run's own evidence (artifacts, checks) moved it since.
        version = self.company.get_task(task.id).version if result.artifacts or result.checks else task.version
        try:
            self.company.transition(task.id, result.transition, actor=agent, expected_version=version,
                                    writes=result.writes, rationale=result.rationale,
                                    fencing_token=lease.fencing_token, then=then)
        except ApprovalPending:
            return result.transition, "waiting"
        return result.transition, "succeeded"

    def brief(self, agent: str, task: Task, lease: Lease, run_id: str, attempt: int, queue: list[int],
              previous: list | None = None) -> Brief:
        """The brief of one run on ``task`` (see :mod:`roster.runtime.context`)."""
        return self.context.brief(agent, task, Wakeup(run_id, lease.fencing_token, attempt, tuple(queue)), previous)


def _stopped_by_kill_switch(error: BaseException) -> bool:
    """Whether a run was stopped by the kill switch (its agent paused, or its scope) while it ran."""
    return isinstance(error, Denied) and any(
        p == "inactive-principal" or p.startswith("kill-switch:") for p in error.policies)


@dataclass(frozen=True)
class _Unrecorded:
    """A run whose end the store refused while busy: enough to record it later (wall time in seconds)."""

    agent: str
    task_id: int
    run_id: str
    fencing_token: int
    failure: Failure
    wall_seconds: float


class _Renewals:
    """Renews the lease of every run in flight each third of the lease's length (``seconds``), from one
    background thread started with the first run and kept for the dispatcher's life (a thread per run
    cost more than the rest of a short run's bookkeeping). A lease that cannot be renewed (taken over,
    released by the kill switch) is dropped: the run's writes will be refused by its fencing token.

    The thread wakes at least every ``seconds / 3``, even with nothing to renew. Every lease it is given
    has the same length, so a new one is never due before the thread's next wake-up: adding one needs
    no signal, and a short run costs no thread switch."""

    def __init__(self, company: CompanyStore, seconds: float) -> None:
        self.company, self.seconds = company, seconds
        self._leases: dict[int, tuple[str, Lease, float]] = {}  # task id -> (agent, lease, due: monotonic s)
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextmanager
    def held(self, agent: str, lease: Lease) -> Iterator[None]:
        """Renew ``lease`` while the block runs. On exit no renewal of it is in progress, or will be."""
        with self._changed:
            self._leases[lease.task_id] = (agent, lease, time.monotonic() + self.seconds / 3)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="lease-renewals")
                self._thread.start()
        try:
            yield
        finally:
            with self._changed:  # waits for a renewal in progress: it holds the condition's lock
                self._leases.pop(lease.task_id, None)

    def _loop(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for task_id, (agent, lease, due) in list(self._leases.items()):
                    if due > now:
                        continue
                    try:
                        self.company.renew(task_id, actor=agent, fencing_token=lease.fencing_token, ttl=self.seconds)
                        self._leases[task_id] = (agent, lease, now + self.seconds / 3)
                    except RosterError:
                        del self._leases[task_id]
                wake = min([due for _, _, due in self._leases.values()], default=now + self.seconds / 3)
                self._changed.wait(timeout=max(0.0, wake - time.monotonic()))
