"""Lines of issue 19 that the other fleet tests do not pin on their own: the global run limit, llm runs
that overlap (the model's actual requests), a claim that finds the task held back for its agent, each
kind of commit that must wake the dispatchers (and one that must not), and the runtime calling only the
store's public entry points."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from conftest import GOOD_SPEC
from pydantic_ai import models
from pydantic_ai.messages import ModelResponse, ToolCallPart
from pydantic_ai.models.function import FunctionModel
from test_fleet import POOL, _create, _pool

from roster.errors import ApprovalPending, LostRace
from roster.kernel.failures import Failure, FailureCategory
from roster.runtime.dispatcher import Dispatcher
from roster.runtime.llm import LLMRunner
from roster.specfile import parse_spec
from roster.store import Store

RUNTIME = Path(__file__).resolve().parent.parent / "src" / "roster" / "runtime"


@pytest.fixture
def pool(databases, tmp_path):
    store = Store.open(databases("lines"), artifact_root=tmp_path / "art")
    store.apply(parse_spec(POOL), applied_by="alice")
    yield store.company("acme")
    store.close()


def test_max_runs_bounds_the_runs_in_flight_across_all_agents(pool, tmp_path):
    ids = _create(pool, 8)
    runners, log, gauge = _pool(0.3)
    dispatcher = Dispatcher(pool, workdir=tmp_path, runners=runners, max_runs=2)
    while not all(pool.get_task(i).state == "planned" for i in ids):
        dispatcher.cycle()
    dispatcher.close()
    assert gauge["max"] == 2  # four agents with work, two runs at once: the dispatcher's limit
    assert sorted(t for _, t, *_ in log) == ids


def test_llm_runs_overlap_and_each_model_request_shows_its_own_task(pool, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "ALLOW_MODEL_REQUESTS", False)  # no real provider: the scripted model only
    ids = _create(pool, 2)
    seen: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def answer(messages, info):  # noqa: ANN001, ANN202 - the model: slow, and it records what it was asked
        start = time.monotonic()
        time.sleep(0.8)
        with lock:
            seen.append((str(messages[0]), start, time.monotonic()))
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name,
                                                 {"transition": "plan", "writes": {"spec": GOOD_SPEC},
                                                  "rationale": "clear"})])

    runners = {a: LLMRunner({"kind": "llm", "model": "offline"}, tools=pool.spec().tools,
                            model=FunctionModel(answer, model_name="scripted-test-model"))
               for a in ("p1", "p2")}
    dispatcher = Dispatcher(pool, workdir=tmp_path, runners=runners)
    outcomes = dispatcher.cycle()
    dispatcher.close()
    assert sorted(o.outcome for o in outcomes) == ["succeeded", "succeeded"]
    assert all(pool.get_task(i).state == "planned" for i in ids)
    (first, a0, a1), (second, b0, b1) = sorted(seen, key=lambda s: s[1])
    assert a0 < b1 and b0 < a1  # the two model calls were in flight at the same time
    assert {"fix 0" in first, "fix 1" in first} == {True, False}  # each request carried one task's brief
    assert ("fix 0" in first) != ("fix 0" in second)


def test_a_claim_of_a_task_held_back_for_its_agent_is_a_lost_race(pool):
    [task_id] = _create(pool, 1)
    seen = pool.candidates_many(["p1"])["p1"][0]
    pool.record_failure(task_id, "p1", Failure(FailureCategory.TRANSIENT, "timeout", "slow"), max_attempts=3)
    with pytest.raises(LostRace, match="held back"):
        pool.claim_run(seen, agent="p1", run_id="r1", trigger="test", ttl=60)
    assert pool.list_runs() == [] and pool.get_task(task_id).fencing_token == 0
    pool.claim_run(seen, agent="p2", run_id="r2", trigger="test", ttl=60)  # not held back for another agent


def _verified(company):  # noqa: ANN001, ANN202 - a task one approved merge away from done
    task = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})[0]
    task = company.transition(task.id, "plan", actor="planner", expected_version=task.version,
                              writes={"spec": GOOD_SPEC})
    company.record_artifact(task.id, "patch", b"--- a\n+++ b\n", actor="builder")
    task = company.get_task(task.id)
    task = company.transition(task.id, "build", actor="builder", expected_version=task.version,
                              writes={"branch": "b"})
    company.record_check(task.id, "lint_clean", passed=True, actor="qa")
    task = company.get_task(task.id)
    return company.transition(task.id, "verify", actor="qa", expected_version=task.version)


def _merge_request(company):  # noqa: ANN001, ANN202
    task = _verified(company)
    with pytest.raises(ApprovalPending) as pending:
        company.transition(task.id, "merge", actor="merger", expected_version=task.version)
    return pending.value.request_id


WAKERS = {
    "a task created": lambda c: c.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"}),
    "a task moved into a state": lambda c: _verified(c),
    "a hold handed back": lambda c: c.release_hold(c.hold(_verified(c).id, actor="alice").task_id, actor="alice"),
    "a message sent": lambda c: c.send_message("planner", "why?", actor="alice"),
    "an approval decided": lambda c: c.approve_request(_merge_request(c), actor="alice"),
}


@pytest.mark.parametrize("what", sorted(WAKERS))
def test_each_commit_that_makes_work_wakes_the_dispatchers_of_the_process(company, what):
    woken: list[str] = []
    company.store.on_work(woken.append)
    WAKERS[what](company)
    assert woken and set(woken) == {"acme"}


def test_a_commit_that_makes_no_work_wakes_nobody(company):
    task = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})[0]
    woken: list[str] = []
    company.store.on_work(woken.append)
    company.remember("URLs are exempt from E501", actor="planner", kind="constraint")
    company.record_check(task.id, "lint_clean", passed=False, actor="qa")
    assert woken == []


def test_the_runtime_calls_only_the_stores_public_entry_points():
    private = re.compile(r"\b(company|self\.company|caller\.company)\._[a-z]")
    offenders = [f"{path.name}:{n}: {line.strip()}" for path in sorted(RUNTIME.glob("*.py"))
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if private.search(line)]
    assert offenders == []


def test_a_dead_dispatcher_with_no_run_in_flight_gives_its_runtime_leases_back_at_the_next_sweep(company):
    """A process killed between runs held the leader's lease: the next sweep marks it stopped and frees its
    runtime leases at once, so another process takes over the leader's jobs (KPIs, consolidation) now, not
    a lease length later."""
    company.register_dispatcher("dead", host="h1", pid=101, agents=None, max_runs=4, lease_seconds=60)
    company.register_dispatcher("live", host="h1", pid=102, agents=None, max_runs=4, lease_seconds=60)
    assert company.acquire_runtime_leases("dead", ["leader"], ttl=60) == {"leader"}
    assert company.acquire_runtime_leases("live", ["leader"], ttl=60) == set()

    assert company.end_crashed_runs(max_attempts=3, me="live", host="h1", alive=lambda pid: pid != 101) == []

    assert [d.id for d in company.list_dispatchers()] == ["live"]
    assert company.acquire_runtime_leases("live", ["leader"], ttl=60) == {"leader"}


def test_a_dispatchers_background_thread_stops_once_its_store_is_closed(tmp_path):
    """An owner that closes the store but forgets the dispatcher: its heartbeat thread must not open
    connections again (on PostgreSQL each beat reconnected, for the life of the process)."""
    from roster.runtime.background import LeaseRenewals

    store = Store.open(f"sqlite:///{tmp_path / 'closed.db'}")
    store.apply(parse_spec(POOL), applied_by="alice")
    beats: list[float] = []
    renewals = LeaseRenewals(store.company("acme"), 0.3, tick=lambda: beats.append(time.monotonic()))
    before = set(threading.enumerate())
    renewals.start()
    [thread] = set(threading.enumerate()) - before
    time.sleep(0.35)
    assert beats  # it beats while the store is open
    store.close()
    closed_at = time.monotonic()
    time.sleep(0.5)
    assert not [b for b in beats if b > closed_at + 0.15]
    assert not thread.is_alive()
