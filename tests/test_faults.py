"""Faults injected at named points (:mod:`roster.store.faults`), on SQLite and on PostgreSQL: a crash just
before a write commits keeps nothing and the verb can be retried; a crash after the commit, before the
caller hears of it, keeps what committed and a retry does not do it twice; a ``roster up`` killed in the
middle of a run (its runner answered, nothing applied) has the run counted as crashed and the task done
by the next process, once."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest
from conftest import GOOD_SPEC, wait_for
from test_fleet_processes import fleet  # noqa: F401 - the fleet fixture, used by name

from roster.errors import StaleVersion, UsageError
from roster.store import faults
from roster.store.faults import InjectedFault


def _create(company, key: str = "ruff:E501:a.py"):
    return company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"},
                               idempotency_key=key)


def _actions(company) -> list[str]:
    return [e.action for e in company.audit_log(limit=1000)]


def test_an_unknown_point_or_action_is_refused_naming_the_known_ones():
    with pytest.raises(UsageError, match="store.before_commit, store.after_commit, run.mid_run"):
        faults.arm("store.somewhere")
    with pytest.raises(UsageError, match="raise, kill"):
        faults.arm("run.mid_run", action="explode")
    assert faults.ARMED == {}


def test_an_unarmed_point_does_nothing_and_an_armed_one_fires_its_times_then_disarms():
    faults.hit("store.before_commit")  # unarmed: nothing
    with faults.armed("store.before_commit", times=2) as arming:
        for _ in range(2):
            with pytest.raises(InjectedFault, match="about to commit"):
                faults.hit("store.before_commit")
        faults.hit("store.before_commit")  # spent
        assert arming.fired == 2 and faults.ARMED == {}


# -- before the commit: nothing kept, the verb retried -----------------------------------------------


def test_a_fault_before_commit_keeps_nothing_of_a_create_and_the_retry_creates_it_once(company):
    before = _actions(company)
    with faults.armed("store.before_commit") as arming, pytest.raises(InjectedFault):
        _create(company)
    assert arming.fired == 1
    assert company.list_tasks() == [] and _actions(company) == before  # no row, no event, no head moved
    assert company.verify_audit()[1] is None

    task, created = _create(company)
    assert created and [t.id for t in company.list_tasks()] == [task.id]
    assert _actions(company) == [*before, "task.create"]
    assert company.verify_audit()[1] is None


def test_a_fault_before_commit_leaves_a_transition_untaken_and_the_retry_takes_it(company):
    task, _ = _create(company)
    with faults.armed("store.before_commit"), pytest.raises(InjectedFault):
        company.transition(task.id, "plan", actor="planner", expected_version=task.version,
                           writes={"spec": GOOD_SPEC})
    unchanged = company.get_task(task.id)
    assert (unchanged.state, unchanged.version, unchanged.fields) == ("found", task.version, task.fields)

    moved = company.transition(task.id, "plan", actor="planner", expected_version=task.version,
                               writes={"spec": GOOD_SPEC})
    assert (moved.state, moved.version) == ("planned", task.version + 1)
    assert Counter(_actions(company))["task.transition"] == 1
    assert company.verify_audit()[1] is None


# -- after the commit, before the acknowledgement: kept, and not done twice --------------------------


def test_a_fault_after_commit_keeps_the_create_and_the_retry_with_its_key_returns_it(company):
    with faults.armed("store.after_commit") as arming, pytest.raises(InjectedFault):
        _create(company)
    assert arming.fired == 1
    [kept] = company.list_tasks()  # committed, though the caller never heard so

    again, created = _create(company)  # the caller retries with the same idempotency key
    assert not created and again.id == kept.id
    assert [t.id for t in company.list_tasks()] == [kept.id]
    assert Counter(_actions(company))["task.create"] == 1
    assert company.verify_audit()[1] is None


def test_a_fault_after_commit_keeps_the_transition_and_a_retry_sees_it_instead_of_moving_twice(company):
    task, _ = _create(company)
    with faults.armed("store.after_commit"), pytest.raises(InjectedFault):
        company.transition(task.id, "plan", actor="planner", expected_version=task.version,
                           writes={"spec": GOOD_SPEC})
    assert company.get_task(task.id).state == "planned"

    with pytest.raises(StaleVersion):  # the retry is refused: the version it names has moved on
        company.transition(task.id, "plan", actor="planner", expected_version=task.version,
                           writes={"spec": GOOD_SPEC})
    now = company.get_task(task.id)
    assert (now.state, now.version, now.fields["spec"]) == ("planned", task.version + 1, GOOD_SPEC)
    assert Counter(_actions(company))["task.transition"] == 1
    assert company.verify_audit()[1] is None


# -- mid run: roster up killed between the runner's answer and its apply -----------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_roster_up_killed_mid_run_has_the_run_counted_as_a_crash_and_the_next_one_does_the_task_once(
        fleet, backend):  # noqa: F811 - the fixture imported above
    ws = fleet(backend)
    ws.write_spec({"fix-lint": "planner"}, {"planner": (["planner"], ws.command(0.05))})
    [task] = ws.create(1)
    args = ("--lease-seconds", "2", "--poll", "0.2")

    dying = ws.up(*args, env={faults.ENVIRONMENT: "run.mid_run=kill"})
    assert dying.proc.wait(timeout=60) == -signal.SIGKILL, dying.stderr()  # killed itself at the point
    assert [c["phase"] for c in ws.calls_of("end")] == ["end"]  # the runner had answered...
    assert ws.company.get_task(task).state == "found"  # ...and nothing of it was applied
    [running] = ws.company.list_runs(task_id=task)
    assert (running.outcome, running.attempt) == ("running", 1)

    up = ws.up(*args)  # the next process sweeps the dead one's run, waits out the backoff, does the task
    wait_for(lambda: ws.company.get_task(task).state == "planned" or up.proc.poll() is not None, 60,
             "the task to be planned by the next roster up")
    assert up.terminate() == 0, up.stderr()

    runs = sorted(ws.company.list_runs(task_id=task), key=lambda r: r.attempt)
    assert [(r.outcome, r.failure_code, r.attempt) for r in runs] == [("crashed", "crashed", 1),
                                                                      ("succeeded", None, 2)]
    assert len(ws.calls_of("start")) == 2  # the runner ran again for the second attempt
    assert len(ws.company.audit_log(action="task.transition", limit=100)) == 1  # applied once
    releases = ws.company.audit_log(action="lease.release", limit=100)
    assert [e.data["reason"] for e in releases] == ["crashed", "done"]
    assert ws.company.leases() == []
    status = ws.js("status", "--json")
    assert status["leases"] == [] and status["fleet"]["in_flight"] == []
    verify = ws.cli("audit", "verify")
    assert verify.returncode == 0, verify.stderr


# -- two processes sweeping the same crashed run at once -----------------------------------------------


def test_two_sweeps_at_once_end_a_dead_dispatchers_run_once_and_count_one_attempt(db_url, tmp_path):
    """Found by the chaos test on PostgreSQL: each sweep read the runs in flight before it locked the
    company row, so a second sweep queued behind the first ended the same run again (two ``run.crash``
    events, two attempts counted). Three stores on one database: one holds the company row's lock while
    two sweeps queue behind it, then lets them go."""
    from conftest import FIX_LINT

    from roster.specfile import parse_spec
    from roster.store import Store
    from roster.store.audit import read_head

    stores = [Store.open(db_url, artifact_root=tmp_path / "art") for _ in range(3)]
    try:
        stores[0].apply(parse_spec(FIX_LINT), applied_by="alice")
        company = stores[0].company("acme")
        task, _ = _create(company)
        company.register_dispatcher("deadbeef", host="elsewhere", pid=1, agents=None, max_runs=4, lease_seconds=0.2)
        seen = company.candidates_many(["planner"])["planner"][0]
        company.claim_run(seen, agent="planner", run_id="r-dead", trigger="task arrival", ttl=60,
                          dispatcher_id="deadbeef")
        time.sleep(0.3)  # the dead dispatcher's heartbeat is now older than its lease
        sweepers = [s.company("acme") for s in stores[1:]]
        swept: list[list] = []
        errors: list[BaseException] = []

        def sweep(sweeper) -> None:  # noqa: ANN001
            try:
                swept.append(sweeper.end_crashed_runs(max_attempts=5, me=None, host="here", alive=lambda _pid: True))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        with stores[0].write() as conn:
            read_head(conn, "acme")  # the company row, locked (on SQLite: the write lock) until the block ends
            threads = [threading.Thread(target=sweep, args=(s,)) for s in sweepers]
            for thread in threads:
                thread.start()
            time.sleep(1.0)  # both sweeps have seen the run in flight and wait for the lock
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        assert sorted(len(s) for s in swept) == [0, 1]  # one sweep ended it; the other found nothing left
        assert len(company.audit_log(action="run.crash")) == 1
        [attempt] = company.attempts_of(task.id)
        assert attempt.failures == 1
        [run] = company.list_runs(task_id=task.id)
        assert (run.id, run.outcome) == ("r-dead", "crashed")
        assert company.verify_audit()[1] is None
    finally:
        for store in stores:
            store.close()
