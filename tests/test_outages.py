"""Database outages under the fleet runtime: a store locked by another process while runs are in flight
(SQLite), with the run's end waiting for it or, past its patience, recorded at the next cycle; the
lease-renewal thread surviving errors; and PostgreSQL connections killed with pg_terminate_backend
under a run in flight. Each asserts the rows and events that reached the store."""

from __future__ import annotations

import threading
import time

from conftest import FIX_LINT, GOOD_SPEC, PG_DSN, need_pg, pg_schema, wait_for
from test_locking import lock_held

from roster.errors import StoreBusy
from roster.runtime.dispatcher import Dispatcher
from roster.runtime.runners import RunResult
from roster.specfile import parse_spec
from roster.store import Store

PLAN = RunResult.parse({"transition": "plan", "writes": {"spec": GOOD_SPEC}})


class Slow:
    kind = "program"

    def __init__(self, seconds: float, started: threading.Event | None = None) -> None:
        self.seconds, self.started, self.calls = seconds, started or threading.Event(), 0

    def run(self, brief):  # noqa: ANN001, ANN201
        self.calls += 1
        self.started.set()
        time.sleep(self.seconds)
        return PLAN


def _store(tmp_path, lock_timeout: float = 0.2) -> Store:  # noqa: ANN001
    store = Store.open(f"sqlite:///{tmp_path / 'out.db'}", lock_timeout=lock_timeout)
    store.apply(parse_spec(FIX_LINT), applied_by="alice")
    return store


def _task(company):  # noqa: ANN001, ANN202
    return company.create_task(workflow="fix-lint", title="fix", actor="alice", fields={"rule": "E501"})[0]


def test_a_run_that_ends_while_the_store_is_locked_is_applied_once_it_is_free(tmp_path):
    store = _store(tmp_path)
    company = store.company("acme")
    task = _task(company)
    runner = Slow(0.5)
    logs: list[str] = []
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner}, log=logs.append)
    result: list = []
    with lock_held(tmp_path / "out.db") as holder:
        cycle = threading.Thread(target=lambda: result.extend(dispatcher.cycle()))
        # The claim needs the lock too: release it once, then take it again while the run works.
        holder.release()
        cycle.start()
        wait_for(lambda: runner.started.is_set(), 10, "the run to start")
    with lock_held(tmp_path / "out.db") as holder:
        time.sleep(1.5)  # the run ends meanwhile and waits for the store
        assert cycle.is_alive() and company.store is store
        holder.release()
    cycle.join(timeout=30)
    dispatcher.close()
    [outcome] = result
    assert outcome.outcome == "succeeded" and company.get_task(task.id).state == "planned"
    assert any("goes on in" in line for line in logs)  # it waited, and said so
    [run] = company.list_runs()
    assert (run.outcome, run.fencing_token) == ("succeeded", 1)
    assert [e.action for e in company.audit_log(action="task.transition")] == ["task.transition"]
    assert company.leases() == [] and company.verify_audit()[1] is None
    store.close()


def test_past_its_patience_the_run_is_recorded_as_failed_at_the_next_cycle_and_done_once(tmp_path):
    store = _store(tmp_path)
    company = store.company("acme")
    task = _task(company)
    runner = Slow(0.5)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner}, lease_seconds=30)
    dispatcher.pipeline.outage_patience = 0.6
    raised: list = []

    def one_cycle() -> None:
        try:
            dispatcher.cycle()
        except StoreBusy as exc:  # the cycle's own housekeeping after the run met the lock too (--once: exit 8)
            raised.append(exc)

    cycle = threading.Thread(target=one_cycle)
    cycle.start()
    wait_for(lambda: runner.started.is_set(), 10, "the run to start")
    with lock_held(tmp_path / "out.db") as holder:
        cycle.join(timeout=30)  # the run's end gave up waiting: nothing of it written
        holder.release()
    assert not cycle.is_alive()
    assert company.get_task(task.id).state == "found" and company.list_runs()[0].outcome == "running"
    later = dispatcher.cycle()  # records the run as failed, gives its lease back; the task backs off
    [run] = company.list_runs()
    assert (run.outcome, run.failure_category, run.failure_code) == ("failed", "transient", "store-busy")
    assert company.leases() == [] and later == []
    [attempt] = company.attempts_of(task.id)
    assert attempt.failures == 1 and attempt.blocked_reason is None
    dispatcher.close()
    assert company.verify_audit()[1] is None
    store.close()


def test_the_renewal_thread_survives_a_locked_store_and_renews_after(tmp_path):
    store = _store(tmp_path)
    company = store.company("acme")
    task = _task(company)
    runner = Slow(3.0)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner}, lease_seconds=0.9)
    result: list = []
    cycle = threading.Thread(target=lambda: result.extend(dispatcher.cycle()))
    cycle.start()
    wait_for(lambda: runner.started.is_set(), 10, "the run to start")
    with lock_held(tmp_path / "out.db") as holder:
        time.sleep(0.8)  # renewals and heartbeats meet the lock
        holder.release()
    thread = dispatcher._renewals._thread
    before = company.get_task(task.id).lease_expires_at
    time.sleep(0.8)
    assert thread is not None and thread.is_alive()
    assert company.get_task(task.id).lease_expires_at > before  # renewed again once the store was free
    cycle.join(timeout=30)
    dispatcher.close()
    [outcome] = result
    assert outcome.outcome == "succeeded" and company.get_task(task.id).fencing_token == 1  # never lost its lease
    store.close()


def test_postgresql_connections_killed_under_runs_in_flight_do_not_lose_or_double_anything(tmp_path):
    need_pg()
    import psycopg

    with pg_schema("roster_outage") as (schema, url):
        store = Store.open(url)
        try:
            store.apply(parse_spec(FIX_LINT), applied_by="alice")
            company = store.company("acme")
            ids = [_task(company).id for _ in range(3)]
            started = threading.Event()
            runner = Slow(1.5, started)
            logs: list[str] = []
            dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner}, log=logs.append,
                                    lease_seconds=6)
            loop = threading.Thread(target=dispatcher.run_forever, kwargs={"poll_seconds": 0.2}, daemon=True)
            loop.start()
            wait_for(started.is_set, 20, "a run to start")
            with psycopg.connect(PG_DSN, autocommit=True) as admin:  # every connection of this store, mid-run
                killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                       "WHERE application_name = %s", (schema,)).fetchone()[0]
            assert killed >= 1
            wait_for(lambda: all(company.get_task(i).state == "planned" for i in ids), 60,
                     "every task to be planned")
            dispatcher.stopping.set()
            dispatcher.wake.set()
            loop.join(timeout=30)
            assert not loop.is_alive()
            transitions = company.audit_log(action="task.transition")
            assert sorted(int(e.subject.split(":")[1]) for e in transitions) == ids  # each once
            runs = company.list_runs()
            assert all(r.outcome != "running" for r in runs)
            assert sorted(r.task_id for r in runs if r.outcome == "succeeded") == ids
            assert company.leases() == [] and company.verify_audit()[1] is None
        finally:
            store.close()


class SlowQuiet(Slow):
    """A slow runner woken without a task: it answers with nothing to apply."""

    def run(self, brief):  # noqa: ANN001, ANN201
        super().run(brief)
        return RunResult()


def test_a_run_without_a_task_whose_end_meets_a_locked_store_is_recorded_at_the_next_cycle(tmp_path):
    """Found in issue 16's work: a run without a task (a trigger, message, goal or reflection run) whose
    end met an unavailable store was only logged, so its row stayed ``running`` under a live dispatcher
    (the crash sweep ends only dead dispatchers' runs). It now waits out the outage like a task run, and
    past its patience is recorded as failed at the next cycle, with what the runner reported it spent."""
    store = _store(tmp_path)
    company = store.company("acme")
    runner = SlowQuiet(0.5)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner}, lease_seconds=30)
    dispatcher.pipeline.outage_patience = 0.6
    result: list = []
    woken = threading.Thread(target=lambda: result.append(
        dispatcher.run_once("planner", None, trigger="a schedule", context={})))
    woken.start()
    wait_for(lambda: runner.started.is_set(), 10, "the run to start")
    with lock_held(tmp_path / "out.db") as holder:
        woken.join(timeout=30)  # its end gave up waiting: nothing of it written
        holder.release()
    [outcome] = result
    assert (outcome.outcome, outcome.failure.code) == ("failed", "store-busy")
    [run] = company.list_runs()
    assert run.outcome == "running"  # not yet: the store was locked
    dispatcher.cycle()  # the next cycle records it
    [run] = company.list_runs()
    assert (run.outcome, run.failure_category, run.failure_code, run.task_id) == (
        "failed", "transient", "store-busy", None)
    assert run.wall_seconds is not None and run.wall_seconds >= 0.5
    dispatcher.close()
    assert company.verify_audit()[1] is None
    store.close()
