"""The fleet runtime in one process, on SQLite and on PostgreSQL: many runs at once, a pool of agents on one
transition that spreads its tasks (each task to exactly one agent, no runner call on a task that moved
on, no escalation), wake-ups on arrival instead of polling, a slow run that never delays another agent,
the selection policy hook, lost races counted, and a crashed run ended as crashed and counted."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from conftest import GOOD_SPEC, need_pg, pg_schema, wait_for

from roster.runtime.dispatcher import Dispatcher, LeastLoaded
from roster.runtime.runners import RunResult
from roster.specfile import parse_spec
from roster.store import Store

POOL = """\
company: acme
workflows:
  fix-lint:
    states: [found, planned]
    initial: found
    fields:
      rule: {type: string}
      spec: {type: string, minLength: 20}
    transitions:
      plan: {from: found, to: planned, by: [planner], writes: [spec], requires: {fields: [rule]}}
agents:
  p1: {roles: [planner], tier: bounded-mutator}
  p2: {roles: [planner], tier: bounded-mutator}
  p3: {roles: [planner], tier: bounded-mutator}
  p4: {roles: [planner], tier: bounded-mutator}
humans:
  alice: {}
"""
PLAN = {"transition": "plan", "writes": {"spec": GOOD_SPEC}}


@pytest.fixture
def pool_store(databases, tmp_path):
    """A store with the POOL spec applied, on each backend."""
    store = Store.open(databases("pool"), artifact_root=tmp_path / "art")
    store.apply(parse_spec(POOL), applied_by="alice")
    yield store
    store.close()


class Timed:
    """A runner that sleeps ``seconds`` and plans; records (agent, task id, state seen, start, end) and the
    most runs it saw in flight at once."""

    kind = "program"

    def __init__(self, agent: str, seconds: float, log: list, gauge: dict) -> None:
        self.agent, self.seconds, self.log, self.gauge = agent, seconds, log, gauge

    def run(self, brief):  # noqa: ANN001, ANN201
        with self.gauge["lock"]:
            self.gauge["now"] += 1
            self.gauge["max"] = max(self.gauge["max"], self.gauge["now"])
        start = time.monotonic()
        time.sleep(self.seconds)
        with self.gauge["lock"]:
            self.gauge["now"] -= 1
        self.log.append((self.agent, brief.data["task"]["id"], brief.data["task"]["state"], start, time.monotonic()))
        return RunResult.parse(PLAN)


def _pool(seconds: float, agents=("p1", "p2", "p3", "p4")) -> tuple[dict, list, dict]:
    log: list = []
    gauge = {"lock": threading.Lock(), "now": 0, "max": 0}
    return {a: Timed(a, seconds, log, gauge) for a in agents}, log, gauge


def _create(company, n: int) -> list[int]:  # noqa: ANN001
    return [company.create_task(workflow="fix-lint", title=f"fix {i}", actor="alice", fields={"rule": "E501"})[0].id
            for i in range(n)]


def test_a_pool_of_four_agents_spreads_forty_tasks_each_done_once_with_no_wasted_run(pool_store, tmp_path):
    company = pool_store.company("acme")
    ids = _create(company, 40)
    runners, log, gauge = _pool(0.05)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners=runners, max_runs=8)
    outcomes = []
    for _ in range(30):
        outcomes += dispatcher.cycle()
        if all(company.get_task(i).state == "planned" for i in ids):
            break
    dispatcher.close()

    assert sorted(task for _, task, _, _, _ in log) == ids  # every task reached a runner exactly once
    assert all(state == "found" for _, _, state, _, _ in log)  # 0 runner calls on a task that had moved on
    assert Counter(o.outcome for o in outcomes) == {"succeeded": 40}  # no failed run, no lost race in one process
    assert company.list_escalations(status=None) == []
    per_agent = Counter(agent for agent, *_ in log)
    assert set(per_agent) == {"p1", "p2", "p3", "p4"} and max(per_agent.values()) - min(per_agent.values()) <= 1
    assert gauge["max"] == 4  # one run per agent at a time (max_concurrent_runs 1), four agents at once
    transitions = [e for e in company.audit_log(action="task.transition")]
    assert sorted(int(e.subject.split(":")[1]) for e in transitions) == ids
    # Each agent got its own task, in priority then age order: the first four went to four agents at once.
    first = sorted(log, key=lambda entry: entry[3])[:4]
    assert sorted(task for _, task, *_ in first) == ids[:4] and len({a for a, *_ in first}) == 4
    assert company.verify_audit()[1] is None


def test_runs_overlap_up_to_the_limit_and_an_agent_may_take_several_tasks_at_once(pool_store, tmp_path):
    pool_store.apply(parse_spec(POOL.replace("p1: {roles: [planner],", "p1: {max_concurrent_runs: 3, roles: [planner],")),
                     applied_by="alice")
    company = pool_store.company("acme")
    ids = _create(company, 6)
    runners, log, gauge = _pool(0.6, agents=("p1",))
    dispatcher = Dispatcher(company, workdir=tmp_path, runners=runners, max_runs=8)
    started = time.monotonic()
    first = dispatcher.cycle()
    second = dispatcher.cycle()
    elapsed = time.monotonic() - started
    dispatcher.close()
    assert [o.outcome for o in first + second] == ["succeeded"] * 6
    assert gauge["max"] == 3  # three runs of p1 at once: its max_concurrent_runs, not one after another
    assert sorted(t for _, t, *_ in log) == ids
    assert elapsed < 6 * 0.6  # overlapped (serial would take 3.6 s)
    leases = [e for e in company.audit_log(action="lease.claim")]
    assert len({e.data["run_id"] for e in leases}) == 6  # each run its own lease and fencing token


def test_a_task_reaches_an_idle_agent_on_arrival_not_at_the_next_poll(pool_store, tmp_path):
    company = pool_store.company("acme")
    runners, log, _ = _pool(0.0, agents=("p1",))
    dispatcher = Dispatcher(company, workdir=tmp_path, runners=runners)
    loop = threading.Thread(target=dispatcher.run_forever, kwargs={"poll_seconds": 30.0}, daemon=True)
    loop.start()
    try:
        time.sleep(0.5)  # the loop is idle now, waiting up to 30 s
        latencies = []
        for _ in range(5):
            created = time.monotonic()
            [task_id] = _create(company, 1)
            wait_for(lambda t=task_id: any(entry[1] == t for entry in log), 10, "the run to start")
            latencies.append(next(entry[3] for entry in log if entry[1] == task_id) - created)
    finally:
        dispatcher.stopping.set()
        dispatcher.wake.set()
        loop.join(timeout=10)
    assert not loop.is_alive()
    # Woken by the commit: well under the 30 s poll (the target, 50 ms, is measured in bench/fleet.py).
    assert sorted(latencies)[2] < 1.0, latencies


def test_a_slow_run_never_delays_another_agents_claim(pool_store, tmp_path):
    pool_store.apply(parse_spec(POOL.replace("plan: {from: found, to: planned, by: [planner]",
                                             "plan: {from: found, to: planned, by: [p1, p2]")), applied_by="alice")
    company = pool_store.company("acme")
    log: list = []
    gauge = {"lock": threading.Lock(), "now": 0, "max": 0}
    runners = {"p1": Timed("p1", 3.0, log, gauge), "p2": Timed("p2", 0.0, log, gauge)}
    dispatcher = Dispatcher(company, workdir=tmp_path, runners=runners)
    loop = threading.Thread(target=dispatcher.run_forever, kwargs={"poll_seconds": 30.0}, daemon=True)
    loop.start()
    try:
        [slow] = _create(company, 1)
        wait_for(lambda: gauge["now"] == 1, 10, "the slow run to start")
        [quick] = _create(company, 1)
        wait_for(lambda: any(entry[1] == quick for entry in log), 10, "the quick run to finish")
        assert not any(entry[1] == slow for entry in log)  # the slow run is still working
    finally:
        dispatcher.stopping.set()
        dispatcher.wake.set()
        loop.join(timeout=15)
    assert {(a, t) for a, t, *_ in log} == {("p1", slow), ("p2", quick)}
    assert company.get_task(slow).state == "planned"  # stopping let the run in flight finish


def test_the_selection_policy_is_a_hook_that_picks_the_agent_of_a_pool(pool_store, tmp_path):
    class Favourite(LeastLoaded):
        name = "favourite"

        def choose(self, task, agents, load, offered=()):  # noqa: ANN001, ANN201
            return "p3" if "p3" in agents else super().choose(task, agents, load, offered)

    pool_store.apply(parse_spec(POOL.replace("p3: {roles: [planner],", "p3: {max_concurrent_runs: 5, roles: [planner],")),
                     applied_by="alice")
    company = pool_store.company("acme")
    ids = _create(company, 5)
    runners, log, _ = _pool(0.0)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners=runners, selection=Favourite())
    dispatcher.cycle()
    dispatcher.close()
    assert sorted(t for _, t, *_ in log) == ids and {a for a, *_ in log} == {"p3"}


def test_a_claim_on_a_task_that_moved_on_is_a_lost_race_that_costs_nothing(pool_store, tmp_path):
    company = pool_store.company("acme")
    [task_id] = _create(company, 1)
    runners, log, _ = _pool(0.0)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners=runners)
    seen = company.candidates_many(["p1"])["p1"][0]
    company.transition(task_id, "plan", actor="p2", expected_version=seen.version, writes={"spec": GOOD_SPEC})
    events = len(company.audit_log())
    outcome = dispatcher.run_once("p1", seen, trigger="task arrival")
    dispatcher.close()
    assert outcome.outcome == "skipped" and outcome.run_id is None
    assert log == [] and company.list_runs() == [] and company.list_escalations(status=None) == []
    assert len(company.audit_log()) == events  # nothing written, nothing audited
    assert dispatcher.lost_races == 1


def test_a_run_of_a_dead_dispatcher_is_ended_as_crashed_counted_and_its_lease_given_back(pool_store, tmp_path):
    company = pool_store.company("acme")
    [task_id] = _create(company, 1)
    # A dispatcher on another host claimed the task and then stopped heartbeating (its machine died).
    company.register_dispatcher("deadbeef", host="elsewhere", pid=1, agents=None, max_runs=4, lease_seconds=0.5)
    seen = company.candidates_many(["p1"])["p1"][0]
    claimed = company.claim_run(seen, agent="p1", run_id="r-dead", trigger="task arrival", ttl=60,
                                dispatcher_id="deadbeef")
    assert claimed.attempt == 1 and company.get_task(task_id).lease_run == "r-dead"
    # The run had started an agent CLI with a token of its own, which outlives the dead dispatcher.
    from datetime import timedelta

    from roster.errors import Unauthenticated
    from roster.store.fleet import run_token_name

    issued = company.issue_token("p1", actor=None, name=run_token_name("r-dead"), lifetime=timedelta(hours=1))
    assert pool_store.session(issued.token).principal.handle == "p1"
    time.sleep(0.6)
    runners, log, _ = _pool(0.0)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners=runners, max_attempts=3)
    outcomes = dispatcher.cycle()
    dispatcher.close()
    runs = {r.id: r for r in company.list_runs()}
    dead = runs["r-dead"]
    assert (dead.outcome, dead.failure_category, dead.failure_code) == ("crashed", "transient", "crashed")
    [attempt] = company.attempts_of(task_id)
    assert (attempt.agent, attempt.failures, attempt.blocked_reason) == ("p1", 1, None)  # counted, backing off
    # The lease went back at once, so another agent of the pool took the task in the same cycle.
    assert [(o.agent, o.outcome) for o in outcomes] and all(o.agent != "p1" for o in outcomes if o.run_id)
    assert company.get_task(task_id).state == "planned"
    releases = [e.data.get("reason") for e in company.audit_log(action="lease.release")]
    assert releases[0] == "crashed"
    with pytest.raises(Unauthenticated):  # fenced: the orphaned agent CLI can no longer act through Roster
        pool_store.session(issued.token)
    assert [d.id for d in company.list_dispatchers(live=False) if d.stopped_at] == ["deadbeef", dispatcher.id]


def test_the_idempotency_key_is_the_same_for_every_run_of_a_step_and_new_for_the_next(pool_store, tmp_path):
    pool_store.apply(parse_spec(POOL.replace("states: [found, planned]", "states: [found, planned, built]").replace(
        "    transitions:\n", "    transitions:\n      build: {from: planned, to: built, by: [planner]}\n")),
        applied_by="alice")
    company = pool_store.company("acme")
    [task_id] = _create(company, 1)
    keys = []

    class Keyed:
        kind = "program"

        def __init__(self, *results) -> None:  # noqa: ANN002
            self.results = list(results)

        def run(self, brief):  # noqa: ANN001, ANN201
            keys.append(brief.data["idempotency_key"])
            return RunResult.parse(self.results.pop(0))

    flaky = {"artifacts": [{"kind": "notes", "content": "tried"}],
             "failure": {"category": "transient", "reason": "the API timed out"}}
    runner = Keyed(flaky, PLAN, {"transition": "build"})
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"p1": runner})
    assert dispatcher.run_once("p1", company.get_task(task_id), trigger="test").outcome == "failed"
    company.clear_attempts(task_id, "p1")  # past the backoff, as a retry would be
    assert dispatcher.run_once("p1", company.get_task(task_id), trigger="test").transition == "plan"
    assert dispatcher.run_once("p1", company.get_task(task_id), trigger="test").transition == "build"
    dispatcher.close()
    # The retry of the same step (after evidence moved the version) has the same key; the next step a new one.
    assert keys[0] == keys[1] and keys[2] != keys[1]
    assert keys[0].startswith(f"acme:task-{task_id}:step-") and company.get_task(task_id).version >= 4


def test_bad_fleet_settings_are_refused_with_what_to_do(cli):
    from conftest import ok

    from roster.errors import SpecError

    with pytest.raises(SpecError) as refused:
        parse_spec(POOL.replace("p1: {roles: [planner],", "p1: {max_concurrent_runs: 0, roles: [planner],"))
    assert "max_concurrent_runs" in str(refused.value)
    ok(cli("init"))
    unknown = cli("up", "--once", "--agents", "planner,nobody")
    assert unknown.exit_code == 2 and "nobody" in unknown.stderr and "role:<role>" in unknown.stderr
    zero = cli("up", "--once", "--max-runs", "0")
    assert zero.exit_code == 2 and "--max-runs" in zero.stderr


SCOUT = POOL.replace("humans:\n", """\
  scout:
    tier: coordinator
    rights: {read: ["*"], create: ["*"]}
    triggers:
      - every: 1h
humans:
""")


def test_two_dispatchers_on_one_company_fire_a_schedule_once_and_take_turns_leading(pool_store, tmp_path):
    pool_store.apply(parse_spec(SCOUT), applied_by="alice")
    url = pool_store.engine.url.render_as_string(hide_password=False)
    other = Store.open(url, artifact_root=tmp_path / "art")  # a second process's store: its own engine
    try:
        fired: list[str] = []

        class Scout:
            kind = "program"

            def __init__(self, name: str) -> None:
                self.name = name

            def run(self, brief):  # noqa: ANN001, ANN201
                fired.append(self.name)
                return RunResult()

        one = Dispatcher(pool_store.company("acme"), workdir=tmp_path, runners={"scout": Scout("one")})
        two = Dispatcher(other.company("acme"), workdir=tmp_path, runners={"scout": Scout("two")})
        for _ in range(3):
            one.cycle()
            two.cycle()
        assert fired == ["one"]  # the hourly schedule fired once between the two, by the lease holder
        leases = {name for name in ("leader", "agent:scout")}
        assert leases <= one._runtime_leases and not leases & two._runtime_leases
        one.close()  # a clean stop gives the runtime leases back: the other takes them at its next turn
        two._housekeeping_due = 0.0
        two.cycle()
        assert {"leader", "agent:scout"} <= two._runtime_leases
        two.close()
    finally:
        other.close()


def test_on_postgresql_a_commit_in_another_process_wakes_the_dispatcher_by_notify(tmp_path):
    need_pg()
    with pg_schema("roster_notify") as (_schema, url):
        mine, theirs = Store.open(url), Store.open(url)  # two engines: nothing in-process connects them
        try:
            mine.apply(parse_spec(POOL), applied_by="alice")
            runners, log, _ = _pool(0.0, agents=("p1",))
            dispatcher = Dispatcher(mine.company("acme"), workdir=tmp_path, runners=runners)
            loop = threading.Thread(target=dispatcher.run_forever, kwargs={"poll_seconds": 30.0}, daemon=True)
            loop.start()
            time.sleep(1.0)  # listening, and idle until the next poll in 30 s
            created = time.monotonic()
            [task_id] = _create(theirs.company("acme"), 1)
            wait_for(lambda: any(entry[1] == task_id for entry in log), 10, "the run to start")
            latency = next(entry[3] for entry in log if entry[1] == task_id) - created
            dispatcher.stopping.set()
            dispatcher.wake.set()
            loop.join(timeout=10)
            assert latency < 2.0, latency  # woken by NOTIFY, not by the 30 s poll
        finally:
            mine.close()
            theirs.close()
