"""One run as an explicit pipeline of named steps over a typed :class:`RunState`:

``claim`` (the lease, re-checked against what the work query saw; the run's start and its brief, in one
transaction) -> ``execute`` (the runner, its lease renewed meanwhile) -> ``apply`` (what it produced,
through the store's verbs with the fencing token, step by step) -> ``record`` (the failure, its retry or
blocker and escalation; messages marked read) -> ``release`` (the run ends and the lease goes back, in
one transaction; on a clean success both happen inside the transition's own transaction).

The dispatcher (:mod:`roster.runtime.dispatcher`) decides which runs to start and runs
:meth:`RunPipeline.run` in a worker thread; the claim happens in the dispatcher's thread. The
pipeline uses only the store's public verbs.

Crash-only: a process may die at any step. What committed stays; a run left ``running`` is ended as
``crashed`` by the sweep (:meth:`~roster.store.fleet.FleetVerbs.end_crashed_runs`) and counts as an
attempt. Transitions commit exactly once (the fencing token and the version); a step's work runs at
least once, so the brief carries an ``idempotency_key`` per step.

A database that cannot be reached while a run ends (:class:`StoreUnavailable`, :class:`StoreBusy`) is
waited for, with backoff, for up to ``outage_patience`` seconds: the apply steps already committed are
not repeated, the rest are applied when the store is back. Past that, the run is handed to the
dispatcher, which records it as failed (transient) at its next cycle that gets through.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from roster.errors import (
    ApprovalPending,
    Denied,
    MalformedOutput,
    NotFound,
    RosterError,
    StoreBusy,
    StoreUnavailable,
    UsageError,
)
from roster.kernel.failures import Failure, FailureCategory, classify
from roster.kernel.goals import GoalBudget, GoalCheck
from roster.kernel.stages import SHADOW_TRIGGER
from roster.runtime.context import ContextAssembler, Wakeup
from roster.runtime.runners import Brief, Runner, RunResult, Usage
from roster.store import CompanyStore, Task, faults
from roster.store.fleet import ClaimedRun
from roster.store.leases import Lease
from roster.store.runs import Attempt, Candidate

OUTAGES = (StoreBusy, StoreUnavailable)
"""Errors that mean the store could not be reached or locked, not that the run did anything wrong."""
CURRENT_RUN: ContextVar[str | None] = ContextVar("roster_current_run", default=None)
"""The run the current thread is executing (a ``process`` runner's token is named after it)."""


class JudgmentCall(RosterError):
    """The runner said it cannot decide (or another category it reported itself)."""

    code = "runner-reported"

    def __init__(self, category: str, reason: str) -> None:
        self.category = category
        super().__init__(reason)


@dataclass(frozen=True)
class Outcome:
    """What one run did: ``outcome`` is succeeded, failed, waiting (an approval request), stopped (by the
    kill switch while it ran, or a budget before it) or skipped (the task was no longer offered: a lost
    race, which costs nothing); or checked: no run, a goal's check on its cadence while its agent was
    busy (``blocked`` says when it met the goal)."""

    agent: str
    task_id: int | None
    run_id: str | None
    outcome: str
    transition: str | None = None
    failure: Failure | None = None
    blocked: str | None = None


@dataclass
class RunState:
    """Everything one run carries from step to step. ``started`` is ``time.monotonic()`` at the claim;
    ``applied`` counts the apply steps committed (a retry after an outage resumes after them)."""

    agent: str
    run_id: str
    trigger: str
    runner: Runner
    task: Task | None = None
    lease: Lease | None = None
    attempt: int = 1
    previous: list[Attempt] = field(default_factory=list)
    brief: Brief | None = None
    unbriefed: Exception | None = None
    delivered: bool = False
    """Whether the runner showed the brief (a model answered; a program was started with it)."""
    result: RunResult | None = None
    started: float = field(default_factory=time.monotonic)
    outcome: str = "succeeded"
    transition: str | None = None
    failure: Failure | None = None
    stopped: bool = False
    saved: list[str] = field(default_factory=list)
    applied: int = 0
    ended: bool = False
    blocked: str | None = None
    approval_id: int | None = None
    """The approval request the run's transition opened (outcome ``waiting``)."""
    usage: Usage = field(default_factory=Usage)
    begun: bool = False
    """Whether the run's row was written (``run.start``): an outage after it leaves a row to finish."""
    stop_renewing: Callable[[], None] = lambda: None
    """Stops the lease's renewals (before the transaction that ends the run releases the lease)."""

    def outcome_record(self) -> Outcome:
        return Outcome(self.agent, self.task.id if self.task else None, self.run_id, self.outcome, self.transition,
                       self.failure, self.blocked)

    def finish(self) -> dict:
        """The run record's closing values: outcome, failure, the runner's usage and the wall time (s)."""
        usage = self.usage
        return {"outcome": self.outcome, "transition": self.transition, "failure": self.failure,
                "model": usage.model, "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                "cost_usd": usage.cost_usd, "wall_seconds": round(time.monotonic() - self.started, 6),
                "approval_id": self.approval_id}


class RunPipeline:
    """The steps of one run for one company (see the module docstring). ``renew(agent, lease)`` is a
    context manager that keeps a lease alive while the runner works; ``outage_patience`` (seconds) is how
    long a run's end waits for an unavailable store."""

    def __init__(self, company: CompanyStore, context: ContextAssembler, *, lease_seconds: float,
                 max_attempts: int, dispatcher_id: str | None, renew: Callable, log: Callable[[str], None],
                 outage_patience: float = 300.0) -> None:
        self.company = company
        self.context = context
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.dispatcher_id = dispatcher_id
        self.renew = renew
        self.log = log
        self.outage_patience = outage_patience

    # -- claim --------------------------------------------------------------------------------------

    def claim(self, state: RunState, seen: Candidate | Task, queue: tuple[int, ...] = ()) -> None:
        """Claim ``seen`` for the run and build its brief in the claim's transaction. Raises
        :class:`~roster.errors.LostRace` (nothing written). A brief that cannot be built fails the run
        later (:meth:`run`), once the claim has committed; a database error while building it rolls
        the claim back."""

        def brief(conn: Any, cache: Any, claimed: ClaimedRun) -> Brief | Exception:
            wakeup = Wakeup(state.run_id, claimed.lease.fencing_token, claimed.attempt, queue)
            try:
                return self.context.brief_txn(conn, cache, state.agent, claimed.task, wakeup, claimed.previous)
            except Exception as exc:  # noqa: BLE001 - not the claim's fault: the run fails with it, classified
                if self.company.store.is_database_error(exc):
                    raise  # the claim's transaction failed with it (on PostgreSQL it cannot commit)
                return exc

        claimed = self.company.claim_run(seen, agent=state.agent, run_id=state.run_id, trigger=state.trigger,
                                         ttl=self.lease_seconds, dispatcher_id=self.dispatcher_id, then=brief)
        state.task, state.lease, state.attempt, state.previous = (claimed.task, claimed.lease, claimed.attempt,
                                                                  claimed.previous)
        state.started = time.monotonic()
        if isinstance(claimed.prepared, Exception):
            state.unbriefed = claimed.prepared
        else:
            state.brief = claimed.prepared

    # -- the rest, in a worker thread ---------------------------------------------------------------

    def run(self, state: RunState) -> Outcome:
        """Execute, apply, record and release a claimed run. Never raises for the run's own failures (they
        are classified and recorded); raises an outage error only once ``outage_patience`` is spent, with
        nothing of the run's end written (the caller records it later)."""
        assert state.task is not None and state.lease is not None
        with self.renew(state.agent, state.lease) as stop_renewing:
            state.stop_renewing = stop_renewing
            try:
                self.execute(state)
                if faults.ARMED: faults.hit("run.mid_run")  # tests only (roster.store.faults)
                self._patiently(lambda: self.apply(state), state.run_id)
            except Exception as exc:  # noqa: BLE001 - every failure is classified and recorded
                if isinstance(exc, OUTAGES):
                    raise
                self._failed(state, exc)
        if not state.ended:
            self._patiently(lambda: self.record(state), state.run_id)
            self._patiently(lambda: self.release(state), state.run_id)
        return state.outcome_record()

    def execute(self, state: RunState) -> None:
        """Run the runner on the brief (in this thread; :data:`CURRENT_RUN` names the run meanwhile)."""
        if state.unbriefed is not None:
            raise state.unbriefed
        assert state.brief is not None
        token = CURRENT_RUN.set(state.run_id)
        try:
            state.result = state.runner.run(state.brief)
        finally:
            CURRENT_RUN.reset(token)
            state.usage = getattr(state.runner, "last_usage", None) or Usage()
            state.delivered = getattr(state.runner, "delivered", True)

    def apply(self, state: RunState) -> None:
        """Apply the result through the store with the fencing token: filed and delegated tasks,
        artifacts, checks, messages and memories, then the transition; each step once, even when an
        outage makes the caller retry. A clean success (no earlier attempts to clear, no messages to
        mark read) ends the run and releases the lease in the transition's own transaction."""
        result, task, lease = state.result, state.task, state.lease
        assert result is not None and task is not None and lease is not None
        if result.reflects:
            raise MalformedOutput("only a reflection run revises the plan or opens and closes goals; this run is on "
                                  f"task {task.id}")
        agent = state.agent
        steps: list[tuple[str, Callable[[], None]]] = []
        for new in result.tasks:
            steps.append((f"task '{new.title}'", lambda new=new: self._file_task(agent, new, parent=task)))
        for artifact in result.artifacts:
            steps.append((f"artifact {artifact.kind} '{artifact.name or artifact.kind}'",
                          lambda a=artifact: self.company.record_artifact(
                              task.id, a.kind, a.content.encode(), actor=agent, name=a.name, reason=a.reason,
                              run_id=lease.run_id, fencing_token=lease.fencing_token)))
        for check in result.checks:
            steps.append((f"check {check.name} ({'passed' if check.passed else 'failed'})",
                          lambda c=check: self.company.record_check(
                              task.id, c.name, passed=c.passed, detail=c.detail, actor=agent,
                              fencing_token=lease.fencing_token)))
        steps.extend(self._communication(agent, task, result, state.run_id))
        for what, step in steps[state.applied:]:
            step()
            state.applied += 1
            state.saved.append(what)
        if result.failure is not None:
            raise JudgmentCall(result.failure.category, result.failure.reason)
        if result.transition is None:
            return
        # The version the brief showed, unless this run's own evidence (artifacts, checks) moved it since.
        version = self.company.get_task(task.id).version if result.artifacts or result.checks else task.version
        shown = [m["id"] for m in (state.brief.data.get("messages") or [])] if state.brief and state.delivered else []

        def finish() -> dict:
            state.transition, state.outcome = result.transition, "succeeded"
            return state.finish()

        # The move, the run's end, the lease's release, the earlier attempts' clearing and the messages it
        # was shown marked read commit together: a kill after the move can leave no run 'running'.
        ender = self.company.run_ender(state.run_id, agent=agent, fencing_token=lease.fencing_token, finish=finish,
                                       clear_attempts=bool(state.previous), read=shown)
        state.stop_renewing()  # the transition's transaction releases the lease: no renewal may follow it
        try:
            self.company.transition(task.id, result.transition, actor=agent, expected_version=version,
                                    writes=result.writes, rationale=result.rationale,
                                    fencing_token=lease.fencing_token, then=ender)
        except ApprovalPending as pending:
            state.transition, state.outcome = result.transition, "waiting"
            state.approval_id = pending.request_id
            return
        state.transition, state.outcome = result.transition, "succeeded"
        state.ended = True  # only once the transition's transaction has committed

    def record(self, state: RunState) -> None:
        """After a run that did not end in its transition's transaction: mark the messages it was shown
        read, count a failure (its retry with backoff, or its blocker and a step up the escalation
        ladder), or clear the earlier attempts of a success."""
        task = state.task
        assert task is not None
        self._mark_read(state)
        failure = state.failure
        if failure is not None and not state.stopped:  # a kill switch is not the task's fault: no blocker
            tried = {"transition": state.result.transition if state.result else None,
                     "writes": state.result.writes if state.result else None, "saved": state.saved}
            attempt, step = self.company.fail_attempt(task.id, state.agent, failure, max_attempts=self.max_attempts,
                                                      tried=tried)
            state.blocked = attempt.blocked_reason
            self.log(f"{state.agent} on task {task.id}: {failure.category.value} failure: {failure.message}")
            if step is not None:
                self.log(f"  escalated to {step.to} ({step.step}): {step.reason}")
        elif state.outcome == "succeeded" and state.previous:
            self.company.clear_attempts(task.id, state.agent)

    def release(self, state: RunState) -> None:
        """End the run and give the lease back, in one transaction (only the run ends if the lease is no
        longer its own: taken over, or released by the kill switch)."""
        assert state.task is not None and state.lease is not None
        self.company.end_run(state.run_id, agent=state.agent, task_id=state.task.id,
                             fencing_token=state.lease.fencing_token, finish=state.finish())
        state.ended = True

    # -- a shadow run ---------------------------------------------------------------------------------

    def run_shadow(self, state: RunState, task: Task, owner_run: str) -> Outcome:
        """Run ``state.agent`` (in stage ``shadow`` on the task's workflow) beside run ``owner_run`` on
        ``task``, as the owner saw it: no lease, its brief built read-only, and its result only recorded
        and compared (:meth:`~roster.store.shadows.ShadowVerbs.record_shadow`), never applied."""
        state.task = task
        state.run_id = self.company.start_run(state.agent, trigger=f"{SHADOW_TRIGGER} {owner_run}", task_id=task.id,
                                              fencing_token=None, run_id=state.run_id,
                                              dispatcher_id=self.dispatcher_id)
        state.begun = True
        failure = None
        try:
            state.brief = self.context.brief(state.agent, task, Wakeup(state.run_id, None, 1, (),
                                                                       reason=f"shadow of run {owner_run}"))
            self.execute(state)
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is recorded as a miss, like any run's
            if isinstance(exc, OUTAGES):
                raise
            failure = classify(exc)
        result = state.result if failure is None else None
        usage = state.usage
        agreed: list[bool | None] = [None]

        def record() -> None:
            agreed[0] = self.company.record_shadow(
                state.run_id, agent=state.agent, seen=task, transition=result.transition if result else None,
                writes=dict(result.writes) if result else {}, failure=failure, model=usage.model,
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost_usd=usage.cost_usd,
                wall_seconds=round(time.monotonic() - state.started, 6))

        self._patiently(record, state.run_id)
        state.ended, state.outcome, state.failure = True, "shadow", failure
        state.transition = result.transition if result else None
        self.log(f"{state.agent} shadowed run {owner_run} on task {task.id}: proposed "
                 f"{state.transition or 'nothing'}"
                 + ("" if agreed[0] is None else f", {'agreed' if agreed[0] else 'differed'}"))
        return state.outcome_record()

    # -- a run without a task -----------------------------------------------------------------------

    def run_without_task(self, state: RunState, context: dict) -> Outcome:
        """A run woken by a schedule, event, condition, messages, a goal (``context["goal_id"]``) or for
        reflection (``context["reflection"]``): it holds no lease and may only file tasks, send messages
        and remember; a reflection run also revises its plan and opens and abandons goals (a refused plan
        fails the run, and nothing else of it is applied)."""
        goal_id = context.get("goal_id")
        reflection = bool(context.get("reflection"))
        state.run_id = self.company.start_run(state.agent, trigger=state.trigger, task_id=None, fencing_token=None,
                                              run_id=state.run_id, dispatcher_id=self.dispatcher_id, goal_id=goal_id,
                                              reflection=reflection)
        state.begun = True
        state.started = time.monotonic()
        try:
            fired = tuple(context.get("triggers", []))
            state.brief = self.context.brief(state.agent, None, Wakeup(state.run_id, fired=fired, reason=state.trigger,
                                                                       goal_id=goal_id, reflection=reflection))
            self.execute(state)
            result = state.result
            assert result is not None
            if result.transition or result.artifacts or result.checks:
                raise MalformedOutput("a run woken without a task can only file tasks, send messages and remember "
                                      "(no transition, artifact or check)")
            if result.reflects and not reflection:
                raise MalformedOutput("only a reflection run revises the plan or opens and closes goals; this run "
                                      f"was woken by {state.trigger}")
            if result.failure is not None:
                raise JudgmentCall(result.failure.category, result.failure.reason)
            if reflection:
                self._reflect(state.agent, state.run_id, result)
            for new in result.tasks:
                self._file_task(state.agent, new, parent=None, goal_id=goal_id)
            for _what, step in self._communication(state.agent, None, result, state.run_id):
                step()
        except Exception as exc:  # noqa: BLE001 - every failure is classified and recorded
            if isinstance(exc, OUTAGES):
                raise
            self._failed(state, exc)
            self.log(f"{state.agent} ({state.trigger}): {state.failure.category.value} failure: "
                     f"{state.failure.message}")
        self._patiently(lambda: self._mark_read(state), state.run_id)
        self._patiently(lambda: self.company.finish_run(state.run_id, **state.finish()), state.run_id)
        state.ended = True
        return state.outcome_record()

    # -- helpers ------------------------------------------------------------------------------------

    def _mark_read(self, state: RunState) -> None:
        """Mark the messages of the brief read once the runner showed it (whatever the outcome then: a
        failing run must not wake on them forever); a run that never reached its model leaves them unread."""
        if state.brief is not None and state.delivered:
            self.company.mark_read([m["id"] for m in state.brief.data.get("messages") or []], actor=state.agent)

    def _failed(self, state: RunState, exc: BaseException) -> None:
        state.failure = classify(exc)
        if isinstance(exc, JudgmentCall):
            state.failure = Failure(FailureCategory(exc.category), exc.code, exc.message)
        state.stopped = stopped_by_kill_switch(exc)
        state.outcome = "stopped" if state.stopped else "failed"

    def _patiently(self, step: Callable[[], None], state_id: str = "") -> None:
        """Run ``step``; while the store is unreachable or locked, wait (0.5 s doubling to 15 s) and run
        it again, for up to ``outage_patience`` seconds, then let the outage error through."""
        deadline = time.monotonic() + self.outage_patience
        wait = 0.5
        while True:
            try:
                step()
                return
            except OUTAGES as exc:
                if time.monotonic() + wait > deadline:
                    raise
                self.log(f"the store is {outage_word(exc)} ({exc.message}); run {state_id} goes on in {wait:g} s")
                time.sleep(wait)
                wait = min(2 * wait, 15.0)

    def _reflect(self, agent: str, run_id: str, result: RunResult) -> None:
        """Apply what a reflection run decided, as the agent (its rights decide): the plan's new version
        (refused whole, with the clause, when it breaks the plan contract), then goals opened and abandoned."""
        if result.plan is not None:
            self.company.revise_plan(agent, result.plan.content(), actor=agent, reason=result.plan.reason,
                                     run_id=run_id)
        for new in result.goals:
            if new.budget_usd is None and new.budget_tokens is None and new.budget_runs is None:
                raise MalformedOutput(f"goal '{new.objective[:80]}' needs a budget: budget_usd, budget_tokens or "
                                      "budget_runs")
            try:
                check = GoalCheck.parse_kpi(new.kpi)
            except UsageError as exc:
                raise MalformedOutput(f"goal '{new.objective[:80]}': {exc.message}") from None
            budget = GoalBudget(usd=new.budget_usd, tokens=new.budget_tokens, runs=new.budget_runs)
            try:
                self.company.set_goal(new.agent or agent, new.objective, actor=agent, check=check, budget=budget,
                                      every_seconds=new.every_seconds)
            except (UsageError, NotFound) as exc:  # the run's output was wrong, not the store
                raise MalformedOutput(f"goal '{new.objective[:80]}': {exc.message}") from None
        for close in result.close_goals:
            try:
                self.company.move_goal(close.goal_id, "abandon", actor=agent, note=close.note)
            except (UsageError, NotFound) as exc:
                raise MalformedOutput(f"closing goal {close.goal_id}: {exc.message}") from None

    def _file_task(self, agent: str, new: Any, parent: Task | None, goal_id: int | None = None) -> None:
        if new.packet is not None and parent is None:
            raise MalformedOutput(f"task '{new.title}' carries a delegation packet, but this run has no task "
                                  "to delegate from; file it without a packet, or delegate from a task run")
        if new.packet is not None and parent is not None:
            task, created = self.company.delegate_filed(
                parent.id, actor=agent, workflow=new.workflow, title=new.title, packet=new.packet, fields=new.fields,
                owner=new.owner, priority=new.priority, idempotency_key=new.key)
        else:
            task, created = self.company.create_task(workflow=new.workflow, title=new.title, actor=agent,
                                                     fields=new.fields, owner=new.owner, priority=new.priority,
                                                     idempotency_key=new.key)
        for artifact in new.artifacts if created else []:
            self.company.record_artifact(task.id, artifact.kind, artifact.content.encode(), actor=agent,
                                         name=artifact.name, reason=artifact.reason)
        if goal_id is not None:  # filed toward a goal: its finishing makes the goal due at once
            self.company.link_goal_task(goal_id, task.id)

    def _communication(self, agent: str, task: Task | None, result: RunResult,
                       run_id: str) -> list[tuple[str, Callable[[], None]]]:
        """The steps that send the run's messages and keep its memories (provenance: this run and task)."""
        steps: list[tuple[str, Callable[[], None]]] = []
        for message in result.messages:
            task_id = message.task_id if message.task_id is not None else (task.id if task else None)
            steps.append((f"message to {message.to}", lambda m=message, t=task_id: self.company.send_message(
                m.to, m.body, actor=agent, task_id=t, thread_id=m.thread_id)))
        provenance = {"run": run_id, **({"task": task.id} if task else {})}
        for memory in result.memories:
            steps.append((f"memory {memory.kind}", lambda m=memory: self.company.remember(
                m.text, actor=agent, kind=m.kind, confidence=m.confidence, provenance=provenance,
                expires_in=m.expires_in)))
        return steps


def outage_word(error: BaseException) -> str:
    """How a log line names an outage: the store is ``busy`` (a lock) or ``unavailable`` (a server)."""
    return "busy" if isinstance(error, StoreBusy) else "unavailable"


def stopped_by_kill_switch(error: BaseException) -> bool:
    """Whether a run was stopped by the kill switch (its agent paused, or its scope) while it ran."""
    return isinstance(error, Denied) and any(
        p == "inactive-principal" or p.startswith("kill-switch:") for p in error.policies)
