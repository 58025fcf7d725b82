"""The dispatcher's bookkeeping paths: leases renewed from one background thread while runs work, blocked
tasks that must not hide new work behind them, and the version a run's brief shows being the one as
of its claim."""

from __future__ import annotations

import threading
import time

from conftest import FIX_LINT, GOOD_SPEC

from roster.kernel.failures import Failure, FailureCategory
from roster.runtime.dispatcher import Dispatcher
from roster.runtime.runners import RunResult
from roster.specfile import parse_spec
from roster.store import Store

PLAN = RunResult.parse({"transition": "plan", "writes": {"spec": GOOD_SPEC}})
BROKEN = Failure(FailureCategory.DETERMINISTIC, "contract-violation", "the output broke the contract")


class Scripted:
    """An in-process runner: returns ``result``, after ``during(brief)`` (which may sleep or write)."""

    kind = "program"

    def __init__(self, result: RunResult, during=None) -> None:  # noqa: ANN001
        self.result, self.during, self.briefs = result, during, []

    def run(self, brief):  # noqa: ANN001, ANN201
        self.briefs.append(brief.data)
        if self.during is not None:
            self.during(brief)
        return self.result


def make_task(company, title: str = "fix E501", priority: int = 0):  # noqa: ANN001, ANN201
    return company.create_task(workflow="fix-lint", title=title, actor="alice", priority=priority,
                               fields={"rule": "E501"})[0]


def test_a_long_run_keeps_its_lease_by_renewal_and_no_renewal_outlives_the_run(databases, tmp_path):
    store = Store.open(databases("renew"))  # the real clock: leases really run out
    store.apply(parse_spec(FIX_LINT), applied_by="alice")
    company = store.company("acme")
    task = make_task(company)
    seen: list[str] = []

    def work(brief) -> None:  # noqa: ANN001
        for _ in range(8):  # 1.6 s of work under a 0.6 s lease: without renewal it would lapse twice over
            time.sleep(0.2)
            [lease] = company.leases()
            seen.append(lease.expires_at)

    runner = Scripted(PLAN, work)
    dispatcher = Dispatcher(company, workdir=tmp_path, lease_seconds=0.6, runners={"planner": runner})
    [outcome] = dispatcher.cycle()

    assert outcome.outcome == "succeeded" and company.get_task(task.id).state == "planned"
    assert len(set(seen)) >= 3  # renewed, every 0.2 s, while the runner worked
    assert company.leases() == []
    time.sleep(0.5)  # past the next renewal that would have been due: none happens after the release
    actions = [e.action for e in company.audit_log()]
    assert not [a for a in actions if a.startswith("lease.renew")]  # renewals are not audited, nor refused
    assert company.leases() == [] and company.get_task(task.id).fencing_token == 1
    # One thread serves every run of the dispatcher, not one per run.
    make_task(company, "second")
    runner.result = RunResult.parse({"transition": "plan", "writes": {"spec": GOOD_SPEC}})
    dispatcher.cycle()
    renewers = [t for t in threading.enumerate() if t.name == "lease-renewals"]
    assert len(renewers) >= 1 and dispatcher._renewals._thread in renewers
    store.close()


def test_tasks_blocked_for_an_agent_do_not_hide_new_work_behind_them(still):
    company = still
    blocked = [make_task(company, f"blocked {i}", priority=1) for i in range(45)]  # more than a page (40)
    for task in blocked:  # each failed deterministically for the planner: a persisted blocker
        company.record_failure(task.id, "planner", BROKEN, max_attempts=3)
    fresh = make_task(company, "fresh", priority=0)  # lower priority than all of them, and newer

    assert [t.id for t in company.pending_work("planner")] == [fresh.id]
    # Another agent's blockers do not hide the tasks from this one: the builder's page is unaffected.
    assert company.pending_work("builder") == []


def test_the_brief_shows_the_task_as_of_the_claim_and_the_transition_expects_that_version(still,
                                                                                          tmp_path):
    company = still
    task = make_task(company)
    runner = Scripted(PLAN)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner})
    [work] = company.pending_work_many(["planner"])["planner"][:1]
    # Someone raises the priority between this cycle's read and the claim: a new version. The claim
    # re-checks the version the work query saw: a lost race, which costs nothing (no run, no runner call).
    company.assign(task.id, actor="alice", priority=7)
    runs_before = len(company.list_runs())
    outcome = dispatcher.run_once("planner", work, trigger="task arrival")
    assert outcome.outcome == "skipped" and runner.briefs == [] and len(company.list_runs()) == runs_before
    assert company.get_task(task.id).fencing_token == 0 and dispatcher.lost_races == 1

    outcome = dispatcher.cycle()[0]  # the next cycle sees the new version and claims it
    assert outcome.outcome == "succeeded"
    [brief] = runner.briefs
    assert brief["task"]["version"] == 2 and brief["task"]["priority"] == 7  # not the stale version 1
    assert company.get_task(task.id).version == 3 and company.get_task(task.id).state == "planned"


def test_a_clean_run_commits_twice_the_transition_and_the_release_together(still, tmp_path):
    from sqlalchemy import event

    company = still
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": Scripted(PLAN)})
    assert dispatcher.cycle() == []  # registers the dispatcher (its row, its heartbeat thread): once, not per run
    task = make_task(company)
    writes: list[str] = []
    me = threading.current_thread()  # the heartbeat thread beats on its own schedule, not per run

    def listener(conn) -> None:  # noqa: ANN001
        if threading.current_thread() is me:
            writes.append(conn.get_execution_options().get("sqlite_begin", "DEFERRED"))

    event.listen(company.store.engine, "begin", listener)
    try:
        outcome = dispatcher.run_once("planner", task, trigger="task arrival")
    finally:
        event.remove(company.store.engine, "begin", listener)
    assert outcome.outcome == "succeeded"
    # one write to claim (and start the run), one to move the task, give the lease back and end the run
    assert writes.count("IMMEDIATE") == 2
    events = [(e.action, e.seq) for e in company.audit_log()][-5:]
    assert [a for a, _ in events] == ["lease.claim", "run.start", "task.transition", "lease.release", "run.finish"]
    assert company.leases() == [] and company.list_runs()[0].outcome == "succeeded"


def test_a_run_with_earlier_failures_still_ends_in_its_own_release(still, tmp_path):
    company = still
    task = make_task(company)
    company.record_failure(task.id, "planner", Failure(FailureCategory.TRANSIENT, "timeout", "slow"), max_attempts=3)
    still.store.clock.advance(3600)  # past the backoff
    [outcome] = Dispatcher(company, workdir=tmp_path, runners={"planner": Scripted(PLAN)}).cycle()
    assert outcome.outcome == "succeeded" and company.attempts_of(task.id) == []  # cleared after success
    assert company.leases() == [] and company.list_runs()[0].attempt == 2


def _count_connections_and_reads(engine):  # noqa: ANN001, ANN202
    """Listen for pool checkouts and for each transaction's begin mode, with the thread that took each;
    returns the two lists of (thread name, what)."""
    from sqlalchemy import event

    checkouts: list[tuple[str, int]] = []
    begins: list[tuple[str, str]] = []
    on_checkout = lambda *_: checkouts.append((threading.current_thread().name, 1))  # noqa: E731
    on_begin = lambda conn: begins.append(  # noqa: E731
        (threading.current_thread().name, conn.get_execution_options().get("sqlite_begin", "DEFERRED")))
    event.listen(engine, "checkout", on_checkout)
    event.listen(engine, "begin", on_begin)

    def stop() -> None:
        event.remove(engine, "checkout", on_checkout)
        event.remove(engine, "begin", on_begin)

    return checkouts, begins, stop


def test_a_cycle_claims_on_one_connection_from_one_read_and_the_run_moves_in_a_worker(still, tmp_path):
    company = still
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": Scripted(PLAN)})
    assert dispatcher.cycle() == []  # registers the dispatcher, takes its runtime leases
    task = make_task(company)
    checkouts, begins, stop = _count_connections_and_reads(company.store.engine)
    try:
        [outcome] = dispatcher.cycle()
    finally:
        stop()
    assert outcome.outcome == "succeeded" and company.get_task(task.id).state == "planned"
    me = threading.current_thread().name
    mine = [mode for thread, mode in begins if thread == me]
    workers = [mode for thread, mode in begins if thread.startswith("roster-run")]
    # The agents, the spec, the kill switches and the work come from one read; the run's brief is read in
    # the claim's transaction, on the dispatcher's one connection. The run moves the task in a worker.
    # On a server the claim looks first in a read of its own (store/fleet.py: a lost race queues behind no lock).
    look = ["DEFERRED"] if company.store.engine.dialect.name != "sqlite" else []
    assert mine[:2 + len(look)] == ["DEFERRED", *look, "IMMEDIATE"], begins
    assert mine.count("DEFERRED") <= 3 + len(look), begins  # + the message trigger's and the memory schedule's reads
    assert workers == ["IMMEDIATE"], begins  # the transition, the release and the run's end: one commit
    assert len([c for thread, c in checkouts if thread == me]) == 1
    # Outside a cycle, each transaction takes a connection from the pool and gives it back.
    company.get_task(task.id)
    assert company.store._local.__dict__.get("pinned") is None


def test_a_brief_that_cannot_be_built_fails_the_run_and_gives_the_lease_back(databases, tmp_path, clock):
    store = Store.open(databases("tight"), clock=clock)
    store.apply(parse_spec(FIX_LINT.replace("planner: {reports_to: alice,",
                                            "planner: {context_budget: 500, reports_to: alice,")), applied_by="alice")
    company = store.company("acme")
    task = company.create_task(workflow="fix-lint", title="fix E501", actor="alice",  # ~1,500 tokens of task
                               fields={"rule": "E501", "spec": "Wrap the long line; " * 300})[0]
    runner = Scripted(PLAN)
    outcome = Dispatcher(company, workdir=tmp_path, runners={"planner": runner}).run_once(
        "planner", task, trigger="task arrival")

    assert outcome.outcome == "failed" and runner.briefs == []  # the runner was never called
    assert outcome.failure.category is FailureCategory.DETERMINISTIC and "context_budget" in outcome.failure.message
    # The claim committed (the run is on record with its failure) and the lease went back.
    [run] = company.list_runs()
    assert run.outcome == "failed" and run.fencing_token == 1
    assert company.leases() == [] and company.get_task(task.id).state == "found"
    assert [a.agent for a in company.attempts_of(task.id)] == ["planner"]
    store.close()


def test_a_database_error_while_briefing_rolls_the_claim_back(still, tmp_path):
    from sqlalchemy import text

    company = still
    task = make_task(company)
    with company.store.engine.begin() as conn:  # the brief's memory recall will fail on the missing table
        conn.execute(text("ALTER TABLE memory_entries RENAME TO memory_entries_gone"))
    runner = Scripted(PLAN)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner})
    before = len(company.audit_log())
    try:
        dispatcher.run_once("planner", task, trigger="task arrival")
        raised = None
    except Exception as exc:  # noqa: BLE001
        raised = exc
    assert raised is not None and company.store.is_database_error(raised)
    # Nothing of the claim was kept: no lease, no run, no event, the fencing token unused.
    assert runner.briefs == [] and company.leases() == [] and company.list_runs() == []
    assert company.get_task(task.id).fencing_token == 0 and len(company.audit_log()) == before
    ok, broken = company.verify_audit()
    assert broken is None
