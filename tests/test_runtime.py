"""The runtime: runners (callable and command), the failure taxonomy, the dispatcher (work discovery, one
run per agent per cycle, leases and fencing, retries and blockers, evidence), the CLI (``roster up``,
``roster run``, ``roster status``) and crash-only behaviour of a real ``roster up`` process.

Real SQLite files, real subprocesses, real commands; nothing is mocked."""

from __future__ import annotations

import importlib
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import FIX_LINT, GOOD_SPEC, alive, js, ok, read_lines, wait_for

from roster.errors import (
    ApprovalPending,
    ContractViolation,
    Denied,
    InvalidFields,
    LeaseHeld,
    MalformedOutput,
    RunnerCrashed,
    RunnerExit,
    RunnerTimeout,
    StaleFencingToken,
    StaleVersion,
    StoreBusy,
    Unauthenticated,
    UsageError,
)
from roster.kernel.failures import FailureCategory, backoff_seconds, classify
from roster.runtime.dispatcher import Dispatcher
from roster.runtime.runners import Brief, CallableRunner, CommandRunner, RunResult, make_runner
from roster.specfile import parse_spec

PY = shlex.quote(sys.executable)


# -- helpers ---------------------------------------------------------------------------------------


def with_runner(spec_text: str, agent: str, command: str) -> str:
    """``spec_text`` with ``runner: {kind: program, command: ...}`` added to ``agent``."""
    old = f"  {agent}: {{reports_to: alice, tier: bounded-mutator}}"
    assert old in spec_text
    return spec_text.replace(old, f"  {agent}: {{reports_to: alice, tier: bounded-mutator, "
                                  f"runner: {{kind: program, command: {json.dumps(command)}}}}}")


def with_callable(spec_text: str, agent: str, target: str) -> str:
    old = f"  {agent}: {{reports_to: alice, tier: bounded-mutator}}"
    assert old in spec_text
    return spec_text.replace(old, f"  {agent}: {{reports_to: alice, tier: bounded-mutator, "
                                  f"runner: {{kind: program, callable: {json.dumps(target)}}}}}")


def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """Write ``source`` as a module of a fresh name into ``tmp_path`` (on sys.path); returns the name."""
    name = f"rt_worker_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def write_script(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def brief_for(task_id: int = 1, **extra) -> Brief:
    return Brief({"agent": {"handle": "planner"}, "task": {"id": task_id, "fields": {"rule": "E501"}}, **extra})


def make_task(company, *, title: str = "fix E501", priority: int = 0, fields=None):
    return company.create_task(workflow="fix-lint", title=title, actor="alice", priority=priority,
                               fields={"rule": "E501"} if fields is None else fields)[0]


# Worker sources --------------------------------------------------------------------------------------

# A command planner: dumps each brief it gets to briefs.jsonl (in its cwd) and plans the task.
PLANNER_PY = f"""
import json, sys
brief = json.load(sys.stdin)
with open("briefs.jsonl", "a", encoding="utf-8") as out:
    out.write(json.dumps(brief) + "\\n")
print(json.dumps({{"transition": "plan", "writes": {{"spec": {GOOD_SPEC!r}}}, "rationale": "one import per line"}}))
"""

# A callable module: ``work`` logs each call (with its brief) to CALLS and returns RESULT (a dict, set by
# the test) or raises if RESULT is the string "raise".
CALLABLE_SRC = """
import json
CALLS = {calls!r}
RESULT = {{}}

def work(brief):
    with open(CALLS, "a", encoding="utf-8") as out:
        out.write(json.dumps(brief) + "\\n")
    if RESULT == "raise":
        raise RuntimeError("the model API fell over")
    return RESULT
"""


def callable_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, result) -> tuple[CallableRunner, Path, object]:
    """A :class:`CallableRunner` over a fresh module; returns (runner, calls file, module)."""
    calls = tmp_path / f"calls-{uuid.uuid4().hex[:6]}.jsonl"
    name = write_module(tmp_path, monkeypatch, CALLABLE_SRC.format(calls=str(calls)))
    module = importlib.import_module(name)
    module.RESULT = result
    return CallableRunner(f"{name}:work"), calls, module


# -- 1. runners ------------------------------------------------------------------------------------


def test_callable_runner_calls_the_function_with_the_brief_and_returns_a_run_result(tmp_path, monkeypatch):
    name = write_module(tmp_path, monkeypatch, """
        def plan(brief):
            return {"transition": "plan", "writes": {"spec": "for " + brief["task"]["fields"]["rule"]},
                    "rationale": "seen " + brief["agent"]["handle"],
                    "checks": [{"name": "lint_clean", "passed": True}]}
        """)
    result = CallableRunner(f"{name}:plan").run(brief_for())
    assert isinstance(result, RunResult)
    assert (result.transition, result.writes, result.rationale) == ("plan", {"spec": "for E501"}, "seen planner")
    assert result.checks[0].name == "lint_clean" and result.checks[0].passed is True
    assert result.failure is None and result.artifacts == []


def test_a_callable_that_raises_is_a_transient_runner_crash(tmp_path, monkeypatch):
    name = write_module(tmp_path, monkeypatch, """
        def boom(brief):
            raise ValueError("no tokens left")
        """)
    with pytest.raises(RunnerCrashed) as info:
        CallableRunner(f"{name}:boom").run(brief_for())
    assert "ValueError" in info.value.message and "no tokens left" in info.value.message
    failure = classify(info.value)
    assert failure.category is FailureCategory.TRANSIENT and failure.retryable and failure.code == "runner-crashed"


def test_command_runner_gets_the_brief_on_stdin_in_its_workdir_and_prints_a_result(tmp_path):
    write_script(tmp_path / "worker.py", """
        import json, os, sys
        brief = json.load(sys.stdin)
        print(json.dumps({"transition": "plan", "writes": {"spec": brief["task"]["fields"]["rule"] * 5},
                          "rationale": json.dumps([os.getcwd(), os.getpgrp() == os.getpid()])}))
        """)
    result = CommandRunner(f"{PY} worker.py", workdir=tmp_path, timeout=10).run(brief_for())
    assert result.transition == "plan" and result.writes == {"spec": "E501" * 5}
    cwd, own_group = json.loads(result.rationale)
    assert Path(cwd).resolve() == tmp_path.resolve()
    assert own_group is True  # the command leads a process group of its own


def test_a_hanging_command_times_out_and_its_whole_process_group_is_killed(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    write_script(tmp_path / "hang.py", f"""
        import subprocess, sys, time
        child = subprocess.Popen(["sleep", "60"])
        with open({str(pid_file)!r}, "w") as out:
            out.write(str(child.pid))
        sys.stdin.read()
        time.sleep(60)
        """)
    runner = CommandRunner(f"{PY} hang.py", workdir=tmp_path, timeout=1)
    started = time.monotonic()
    with pytest.raises(RunnerTimeout) as info:
        runner.run(brief_for())
    took = time.monotonic() - started
    assert 1.0 <= took < 5.0, took
    assert "timeout" in info.value.message
    assert classify(info.value).category is FailureCategory.TRANSIENT
    grandchild = int(pid_file.read_text())
    try:
        wait_for(lambda: not alive(grandchild), 3, f"the grandchild sleep {grandchild} to die")
    finally:
        if alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def test_a_command_exiting_3_is_a_deterministic_runner_exit_with_its_stderr_tail(tmp_path):
    write_script(tmp_path / "fail.py", """
        import sys
        sys.stderr.write("x" * 2000 + "\\nTraceback: config key 'model' is missing\\n")
        sys.exit(3)
        """)
    with pytest.raises(RunnerExit) as info:
        CommandRunner(f"{PY} fail.py", workdir=tmp_path, timeout=10).run(brief_for())
    assert "exited 3" in info.value.message
    assert "config key 'model' is missing" in info.value.message
    assert len(info.value.message) < 700  # a tail, not the whole stderr
    failure = classify(info.value)
    assert failure.category is FailureCategory.DETERMINISTIC and not failure.retryable


@pytest.mark.parametrize("printed, says", [
    ("this is not json", "did not print one JSON result"),
    (json.dumps({"transition": 5}), "transition"),
    (json.dumps({"transition": "plan", "confidence": 0.9}), "confidence"),
    (json.dumps(["plan"]), "malformed"),
    (json.dumps({"artifacts": [{"kind": "patch"}]}), "content"),
], ids=["not-json", "wrong-type", "unknown-key", "not-an-object", "artifact-without-content"])
def test_malformed_output_is_a_deterministic_failure(tmp_path, printed, says):
    write_script(tmp_path / "bad.py", f"""
        import sys
        sys.stdin.read()
        sys.stdout.write({printed!r})
        """)
    with pytest.raises(MalformedOutput) as info:
        CommandRunner(f"{PY} bad.py", workdir=tmp_path, timeout=10).run(brief_for())
    assert says in info.value.message
    assert classify(info.value).category is FailureCategory.DETERMINISTIC


def test_a_command_killed_by_a_signal_is_a_runner_crash(tmp_path):
    write_script(tmp_path / "die.py", """
        import os, signal, sys
        sys.stdin.read()
        os.kill(os.getpid(), signal.SIGKILL)
        """)
    with pytest.raises(RunnerCrashed) as info:
        CommandRunner(f"{PY} die.py", workdir=tmp_path, timeout=10).run(brief_for())
    assert f"signal {int(signal.SIGKILL)}" in info.value.message
    assert classify(info.value).category is FailureCategory.TRANSIENT


def test_make_runner_builds_the_configured_runner(tmp_path, monkeypatch):
    assert make_runner(None, workdir=tmp_path) is None
    command = make_runner({"kind": "program", "command": "python3 w.py", "timeout": 7}, workdir=tmp_path)
    assert isinstance(command, CommandRunner) and command.timeout == 7.0 and command.workdir == tmp_path
    name = write_module(tmp_path, monkeypatch, "def f(brief):\n    return {}\n")
    assert isinstance(make_runner({"kind": "program", "callable": f"{name}:f"}, workdir=tmp_path), CallableRunner)


@pytest.mark.parametrize("config, says", [
    ({"kind": "llm", "model": "x"}, "expected 'provider:model'"),
    ({"kind": "telepathy"}, "unknown runner kind"),
    ({"kind": "program"}, "needs"),
    ({"kind": "program", "callable": "no_colon_here"}, "module:function"),
    ({"kind": "program", "callable": "rt_no_such_module_zz:f"}, "cannot be loaded"),
    ({"kind": "program", "callable": "json:no_such_function"}, "cannot be loaded"),
    ({"kind": "program", "command": "   "}, "empty"),
])
def test_make_runner_refuses_configurations_that_cannot_work(tmp_path, config, says):
    with pytest.raises(UsageError) as info:
        make_runner(config, workdir=tmp_path)
    assert says in info.value.message


# -- 2. failure taxonomy ---------------------------------------------------------------------------


@pytest.mark.parametrize("error, category", [
    (ContractViolation(workflow="w", transition="t", clause="writes", detail="d"), "deterministic"),
    (InvalidFields("w", ["rule: not a string"]), "deterministic"),
    (Denied("planner", "transition", "w", "no policy permits it"), "governance"),
    (ApprovalPending(3, ["human"], True), "governance"),
    (Unauthenticated("bad token"), "governance"),
    (StoreBusy("locked"), "transient"),
    (StaleFencingToken(1, 2, 3), "transient"),
    (StaleVersion(1, 2, 3), "transient"),
    (LeaseHeld(1, "builder", "2026"), "transient"),
    (RunnerExit("exited 3"), "deterministic"),
    (MalformedOutput("not json"), "deterministic"),
    (RunnerTimeout("slow"), "transient"),
    (RunnerCrashed("boom"), "transient"),
    (KeyError("surprise"), "transient"),
], ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value)
def test_classify_puts_each_error_in_its_category(error, category):
    failure = classify(error)
    assert failure.category.value == category
    assert failure.retryable is (category == "transient")
    if hasattr(error, "code"):
        assert failure.code == error.code


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    rng = random.Random(42)
    for attempt in range(1, 12):
        ceiling = min(300.0, 2.0 * 2 ** (attempt - 1))
        draws = [backoff_seconds(attempt, rng=rng) for _ in range(50)]
        assert all(0.5 * ceiling <= d <= ceiling for d in draws), (attempt, draws)
        assert max(draws) - min(draws) > 0  # jittered, not fixed
    assert backoff_seconds(3, base=1.0, cap=100.0, rng=random.Random(1)) <= 4.0
    assert backoff_seconds(20, base=1.0, cap=10.0, rng=random.Random(1)) <= 10.0
    assert backoff_seconds(1, rng=random.Random(7)) == backoff_seconds(1, rng=random.Random(7))
    growing = [backoff_seconds(n, rng=random.Random(n)) for n in (1, 2, 3, 4, 5)]
    assert growing == sorted(growing)  # each ceiling doubles, and each floor is the previous ceiling


# -- 3. the dispatcher -----------------------------------------------------------------------------


def test_an_agent_with_no_work_makes_no_run_and_never_calls_its_runner(store, tmp_path, monkeypatch):
    runner, calls, _ = callable_runner(tmp_path, monkeypatch, {"transition": "plan",
                                                                "writes": {"spec": GOOD_SPEC}})
    store.apply(parse_spec(with_callable(FIX_LINT, "planner", runner.target)), applied_by="alice")
    company = store.company("acme")
    dispatcher = Dispatcher(company, workdir=tmp_path)
    assert dispatcher.agents() == ["planner"]  # the only agent with a runner
    before = company.audit_log()
    for _ in range(3):
        assert dispatcher.cycle() == []
    assert not calls.exists()
    assert company.list_runs() == []
    assert company.audit_log() == before  # idle costs nothing, not even an audit event
    # a task the planner cannot act on (it is past 'found') is still no work for it
    task = make_task(company)
    company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    assert dispatcher.cycle() == [] and not calls.exists() and company.list_runs() == []


def test_pending_work_is_ordered_by_priority_then_id_and_excludes_what_the_agent_cannot_take(still, clock):
    company = still
    low = make_task(company, title="low")
    high = make_task(company, title="high", priority=5)
    mid1 = make_task(company, title="mid1", priority=2)
    mid2 = make_task(company, title="mid2", priority=2)
    leased = make_task(company, title="leased", priority=9)
    rejected = make_task(company, title="rejected", priority=9)
    planned = make_task(company, title="planned", priority=9)
    company.transition(rejected.id, "reject", actor="alice", expected_version=1)
    company.transition(planned.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    company.claim(leased.id, actor="planner", run_id="another-run", ttl=30)

    assert [t.id for t in company.pending_work("planner")] == [high.id, mid1.id, mid2.id, low.id]
    assert [t.id for t in company.pending_work("builder")] == [planned.id]
    assert company.pending_work("qa") == [] and company.pending_work("merger") == []
    assert company.pending_work("nobody") == []
    assert [t.id for t in company.pending_work("planner", limit=2)] == [high.id, mid1.id]
    clock.advance(31)  # the other run's lease ran out: its task is work again
    assert [t.id for t in company.pending_work("planner")] == [leased.id, high.id, mid1.id, mid2.id, low.id]
    company.set_status("planner", "paused", actor="alice")
    assert company.pending_work("planner") == []


def test_a_cycle_makes_one_run_that_claims_transitions_with_the_token_and_releases(store, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    write_script(work / "planner.py", PLANNER_PY)
    store.apply(parse_spec(with_runner(FIX_LINT, "planner", f"{PY} planner.py")), applied_by="alice")
    company = store.company("acme")
    first = make_task(company, title="first")
    urgent = make_task(company, title="urgent", priority=3)
    last = make_task(company, title="last")
    seq = company.audit_log()[-1].seq

    outcomes = Dispatcher(company, workdir=work).cycle()

    assert len(outcomes) == 1  # one run per agent per cycle, however much work there is
    outcome = outcomes[0]
    assert (outcome.agent, outcome.task_id, outcome.outcome, outcome.transition) == ("planner", urgent.id,
                                                                                     "succeeded", "plan")
    assert outcome.failure is None and outcome.blocked is None
    task = company.get_task(urgent.id)
    assert (task.state, task.fields["spec"], task.version) == ("planned", GOOD_SPEC, 2)
    assert company.get_task(first.id).state == "found" and company.get_task(last.id).state == "found"

    events = company.audit_log(after_seq=seq)
    actions = [e.action for e in events]
    assert actions == ["lease.claim", "run.start", "task.transition", "lease.release", "run.finish"]
    claim = events[0]
    token = claim.data["fencing_token"]
    assert claim.principal == "planner" and claim.subject == f"task:{urgent.id}" and token == 1
    assert events[1].data["fencing_token"] == token and events[1].data["task_id"] == urgent.id
    assert events[3].data["fencing_token"] == token
    assert events[4].data["outcome"] == "succeeded" and events[4].data["transition"] == "plan"
    assert company.leases() == []
    assert company.get_task(urgent.id).fencing_token == token

    [run] = company.list_runs()
    assert (run.agent, run.task_id, run.outcome, run.transition, run.fencing_token, run.attempt) == (
        "planner", urgent.id, "succeeded", "plan", token, 1)
    assert run.trigger == "task arrival" and run.ended_at is not None and run.failure_category is None
    assert run.wall_seconds is not None and run.wall_seconds > 0
    assert events[1].subject == events[4].subject == f"run:{run.id}"

    [brief] = read_lines(work / "briefs.jsonl")
    assert brief["run_id"] == run.id and brief["company"] == "acme"
    assert brief["agent"]["handle"] == "planner"
    assert brief["task"]["id"] == urgent.id and brief["task"]["fields"] == {"rule": "E501"}
    assert brief["task"]["state"] == "found" and brief["task"]["title"] == "urgent"
    assert brief["fencing_token"] == token and brief["attempt"] == 1 and brief["previous_failure"] is None
    assert brief["queue"] == [first.id, last.id]
    options = {t["name"]: t for t in brief["transitions"]}
    assert set(options) == {"plan", "reject"}  # the transitions out of 'found'
    assert options["plan"]["blocked"] == [] and options["plan"]["writes"] == ["spec"]
    assert options["plan"]["to"] == "planned" and options["plan"]["requires"]["fields"] == ["rule"]
    assert [b["clause"] for b in options["reject"]["blocked"]] == ["by"]
    assert "spec" in brief["fields_schema"]
    assert company.verify_audit()[1] is None


def test_many_arrivals_make_one_run_that_sees_them_all_and_the_brief_shows_blocked_clauses(
        company, new_task, tmp_path, monkeypatch):
    runner, calls, _ = callable_runner(tmp_path, monkeypatch, {})  # looks, changes nothing
    bare = new_task(fields={}, priority=1)  # no 'rule': plan is blocked by requires.fields
    others = [new_task(title=f"t{i}") for i in range(5)]
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner})
    seq = company.audit_log()[-1].seq

    outcomes = dispatcher.cycle()

    assert [(o.agent, o.task_id, o.outcome, o.transition) for o in outcomes] == [
        ("planner", bare.id, "succeeded", None)]
    [brief] = read_lines(calls)
    assert brief["queue"] == [t.id for t in others]
    plan = next(t for t in brief["transitions"] if t["name"] == "plan")
    assert [b["clause"] for b in plan["blocked"]] == ["requires.fields"]
    assert "rule" in plan["blocked"][0]["detail"]
    # a result that changes nothing is a success with no state change
    task = company.get_task(bare.id)
    assert (task.state, task.version, task.fields) == ("found", 1, {})
    assert [e.action for e in company.audit_log(after_seq=seq)] == [
        "lease.claim", "run.start", "lease.release", "run.finish"]
    assert company.list_runs()[0].outcome == "succeeded" and company.list_runs()[0].transition is None
    assert company.attempts_of(bare.id) == []
    assert company.leases() == []


# -- 4. retries and blockers -----------------------------------------------------------------------


def test_a_transient_failure_backs_off_then_blocks_after_max_attempts(still, clock, tmp_path, monkeypatch):
    company = still
    runner, calls, _ = callable_runner(tmp_path, monkeypatch, "raise")
    task = make_task(company)
    dispatcher = Dispatcher(company, workdir=tmp_path, max_attempts=3, runners={"planner": runner})

    [first] = dispatcher.cycle()
    assert first.outcome == "failed" and first.blocked is None
    assert first.failure.category is FailureCategory.TRANSIENT and first.failure.code == "runner-crashed"
    [attempt] = company.attempts_of(task.id)
    assert (attempt.agent, attempt.failures, attempt.last_category, attempt.blocked_reason) == (
        "planner", 1, "transient", None)
    assert attempt.next_at > company.store.now()
    assert "the model API fell over" in attempt.last_message
    assert company.pending_work("planner") == []  # waiting out its backoff
    assert dispatcher.cycle() == []
    assert len(read_lines(calls)) == 1
    assert company.leases() == [] and company.get_task(task.id).state == "found"

    clock.advance(2.01)  # the first backoff is at most base * 2**0 = 2 s
    assert [t.id for t in company.pending_work("planner")] == [task.id]
    [second] = dispatcher.cycle()
    assert second.outcome == "failed" and second.blocked is None
    retry_brief = read_lines(calls)[1]
    assert retry_brief["attempt"] == 2
    assert retry_brief["previous_failure"]["category"] == "transient"
    assert "the model API fell over" in retry_brief["previous_failure"]["message"]
    assert company.attempts_of(task.id)[0].failures == 2
    assert dispatcher.cycle() == []

    clock.advance(4.01)
    [third] = dispatcher.cycle()
    assert third.outcome == "failed" and third.blocked is not None
    [attempt] = company.attempts_of(task.id)
    assert attempt.failures == 3 and "3 attempts" in attempt.blocked_reason
    blocked = company.audit_log(action="run.blocked")
    assert len(blocked) == 1 and blocked[0].subject == f"task:{task.id}" and blocked[0].principal == "planner"
    assert "3 attempts" in blocked[0].data["reason"] and blocked[0].data["failures"] == 3

    clock.advance(3600)  # a persisted blocker does not time out
    assert company.pending_work("planner") == []
    assert dispatcher.cycle() == []
    assert len(read_lines(calls)) == 3
    runs = sorted(company.list_runs(task_id=task.id), key=lambda r: r.attempt)
    assert [(r.attempt, r.outcome, r.failure_category) for r in runs] == [
        (1, "failed", "transient"), (2, "failed", "transient"), (3, "failed", "transient")]
    assert company.get_task(task.id).state == "found" and company.leases() == []


@pytest.mark.parametrize("result, code, says", [
    ({"transition": "plan", "writes": {"spec": "too short"}}, "contract-violation", "'fields'"),
    ({"transition": "plan", "writes": {"branch": "fix/e501", "spec": GOOD_SPEC}}, "contract-violation",
     "'writes'"),
    ({"transition": 5}, "malformed-output", "malformed"),
    ({"transition": "plan", "writes": {"spec": GOOD_SPEC}, "mood": "confident"}, "malformed-output", "mood"),
], ids=["spec-too-short", "writes-outside-contract", "malformed-type", "malformed-unknown-key"])
def test_a_deterministic_failure_blocks_at_once_without_retry(still, clock, tmp_path, monkeypatch, result, code,
                                                              says):
    company = still
    runner, calls, _ = callable_runner(tmp_path, monkeypatch, result)
    task = make_task(company)
    dispatcher = Dispatcher(company, workdir=tmp_path, max_attempts=5, runners={"planner": runner})

    [outcome] = dispatcher.cycle()

    assert outcome.outcome == "failed"
    assert outcome.failure.category is FailureCategory.DETERMINISTIC and outcome.failure.code == code
    [attempt] = company.attempts_of(task.id)
    assert attempt.failures == 1 and attempt.blocked_reason is not None
    assert says in attempt.blocked_reason and code in attempt.blocked_reason
    assert outcome.blocked == attempt.blocked_reason
    assert company.audit_log(action="run.blocked")[-1].data["reason"] == attempt.blocked_reason
    clock.advance(3600)
    assert company.pending_work("planner") == [] and dispatcher.cycle() == []
    assert len(read_lines(calls)) == 1  # never retried unchanged
    task = company.get_task(task.id)
    assert (task.state, task.version, "spec" in task.fields) == ("found", 1, False)
    [run] = company.list_runs()
    assert (run.outcome, run.failure_category, run.failure_code) == ("failed", "deterministic", code)
    assert company.leases() == []


def test_a_runner_reporting_a_judgment_failure_is_recorded_and_blocks(still, clock, tmp_path, monkeypatch):
    company = still
    runner, calls, _ = callable_runner(tmp_path, monkeypatch, {"failure": {
        "category": "judgment", "reason": "cannot tell which of two fixes is right"}})
    task = make_task(company)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner})

    [outcome] = dispatcher.cycle()

    assert outcome.outcome == "failed" and outcome.failure.category is FailureCategory.JUDGMENT
    assert "cannot tell which of two fixes" in outcome.failure.message
    [attempt] = company.attempts_of(task.id)
    assert attempt.last_category == "judgment" and attempt.blocked_reason is not None
    assert "cannot tell which of two fixes" in attempt.blocked_reason
    [run] = company.list_runs()
    assert (run.outcome, run.failure_category) == ("failed", "judgment")
    clock.advance(3600)
    assert dispatcher.cycle() == [] and len(read_lines(calls)) == 1
    assert company.get_task(task.id).state == "found"


def test_a_command_runner_exit_through_the_dispatcher_blocks_with_its_stderr(still, tmp_path):
    company = still
    write_script(tmp_path / "bad.py", """
        import sys
        sys.stdin.read()
        sys.stderr.write("the prompt template is missing\\n")
        sys.exit(3)
        """)
    task = make_task(company)
    dispatcher = Dispatcher(company, workdir=tmp_path,
                            runners={"planner": CommandRunner(f"{PY} bad.py", workdir=tmp_path, timeout=10)})
    [outcome] = dispatcher.cycle()
    assert outcome.failure.code == "runner-exit" and outcome.failure.category is FailureCategory.DETERMINISTIC
    assert "the prompt template is missing" in company.attempts_of(task.id)[0].blocked_reason


# -- 5. evidence through the runner ----------------------------------------------------------------

PATCH = "--- a/app.py\n+++ b/app.py\n@@ -1 +1,2 @@\n-import os, sys\n+import os\n+import sys\n"


def test_a_builder_run_saves_its_artifact_with_the_token_and_the_produces_clause_passes(company, new_task, tmp_path,
                                                                                        monkeypatch):
    runner, calls, _ = callable_runner(tmp_path, monkeypatch, {
        "artifacts": [{"kind": "patch", "name": "fix.diff", "content": PATCH, "reason": "split imports"}],
        "checks": [{"name": "lint_clean", "passed": True, "detail": "ruff: 0 findings"}],
        "transition": "build", "writes": {"branch": "fix/e501"}, "rationale": "patch saved"})
    task = new_task()
    company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    seq = company.audit_log()[-1].seq

    [outcome] = Dispatcher(company, workdir=tmp_path, runners={"builder": runner}).cycle()

    assert (outcome.agent, outcome.outcome, outcome.transition) == ("builder", "succeeded", "build")
    done = company.get_task(task.id)
    assert done.state == "built" and done.fields["branch"] == "fix/e501"
    [artifact] = company.list_artifacts(task.id)
    assert (artifact.kind, artifact.name, artifact.created_by, artifact.size) == ("patch", "fix.diff", "builder",
                                                                                  len(PATCH))
    assert [e.action for e in company.audit_log(after_seq=seq)] == [
        "lease.claim", "run.start", "artifact.record", "check.record", "task.transition", "lease.release",
        "run.finish"]
    brief = read_lines(calls)[0]
    build = next(t for t in brief["transitions"] if t["name"] == "build")
    assert build["produces"] == ["patch"]
    assert [b["clause"] for b in build["blocked"]] == ["produces"]  # before the run: no patch yet
    assert company.leases() == []


def test_a_build_without_its_patch_fails_the_produces_clause(company, new_task, tmp_path, monkeypatch):
    runner, _, _ = callable_runner(tmp_path, monkeypatch, {"transition": "build", "writes": {"branch": "fix/e501"}})
    task = new_task()
    company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    [outcome] = Dispatcher(company, workdir=tmp_path, runners={"builder": runner}).cycle()
    assert outcome.outcome == "failed" and outcome.failure.category is FailureCategory.DETERMINISTIC
    assert "'produces'" in outcome.blocked
    assert company.get_task(task.id).state == "planned"


def test_an_artifact_of_a_run_that_lost_its_lease_is_refused(company, new_task, tmp_path, monkeypatch):
    """The dispatcher writes evidence with the run's fencing token: once the run's lease is gone, the
    write is refused (a write without a token would have gone through on an unleased task)."""
    name = write_module(tmp_path, monkeypatch, f"""
        COMPANY = None

        def work(brief):
            COMPANY.release(brief["task"]["id"], actor="builder", fencing_token=brief["fencing_token"])
            return {{"artifacts": [{{"kind": "patch", "content": {PATCH!r}}}],
                     "transition": "build", "writes": {{"branch": "fix/e501"}}}}
        """)
    importlib.import_module(name).COMPANY = company
    task = new_task()
    company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})

    [outcome] = Dispatcher(company, workdir=tmp_path, runners={"builder": CallableRunner(f"{name}:work")}).cycle()

    assert outcome.outcome == "failed" and outcome.failure.code == "stale-fencing-token"
    assert outcome.failure.category is FailureCategory.TRANSIENT
    assert company.list_artifacts(task.id) == []
    assert company.get_task(task.id).state == "planned"
    assert company.audit_log(action="artifact.record.rejected")[-1].principal == "builder"
    assert company.list_runs()[0].outcome == "failed"


# -- 6. lease loss mid-run -------------------------------------------------------------------------

KILL_SWITCH_SRC = f"""
COMPANY = None
HOW = None

def work(brief):
    if HOW == "principal":
        COMPANY.set_status("planner", "paused", actor="alice")
    else:
        COMPANY.pause("*", actor="alice")
    return {{"transition": "plan", "writes": {{"spec": {GOOD_SPEC!r}}}}}
"""


@pytest.mark.parametrize("how", ["principal", "company"])
def test_a_run_whose_lease_is_taken_by_the_kill_switch_cannot_write(company, new_task, tmp_path, monkeypatch, how):
    name = write_module(tmp_path, monkeypatch, KILL_SWITCH_SRC)
    module = importlib.import_module(name)
    module.COMPANY, module.HOW = company, how
    task = new_task()
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": CallableRunner(f"{name}:work")})

    outcomes = dispatcher.cycle()

    [outcome] = outcomes
    # The kill switch stopped the run: a governance refusal, recorded, but no blocker on the task,
    # so the work resumes when the agent or the company does.
    assert outcome.outcome == "stopped" and outcome.blocked is None
    assert outcome.failure.category is FailureCategory.GOVERNANCE and outcome.failure.code == "denied"
    assert company.attempts_of(task.id) == []
    after = company.get_task(task.id)
    assert (after.state, after.version, "spec" in after.fields) == ("found", 1, False)
    [run] = company.list_runs()
    assert run.outcome == "stopped" and run.ended_at is not None
    assert company.leases() == []
    assert company.audit_log(action="task.transition.rejected")[-1].principal == "planner"
    assert company.audit_log(action="task.transition") == []
    assert company.verify_audit()[1] is None


# -- 7. the CLI ------------------------------------------------------------------------------------


def token_for(cli, handle: str) -> str:
    return js(cli("token", "issue", handle, "--json"))["token"]


PLANNER_MISSION = "    mission: Turn each finding into a concrete, checkable spec.\n"


@pytest.fixture
def rws(cli, keep_signals):
    """A workspace from ``roster init`` whose planner runs ``python planner.py`` (PLANNER_PY)."""
    ok(cli("init"))
    spec_path = cli.workspace / "roster.yaml"
    text = spec_path.read_text(encoding="utf-8")
    assert PLANNER_MISSION in text
    runner = f"    runner: {{kind: program, command: {json.dumps(f'{PY} planner.py')}, timeout: 60}}\n"
    spec_path.write_text(text.replace(PLANNER_MISSION, PLANNER_MISSION + runner), encoding="utf-8")
    ok(cli("apply"))
    write_script(cli.workspace / "planner.py", PLANNER_PY)
    return cli


def create(cli, title: str, *extra: str) -> int:
    return js(cli("task", "create", "fix-lint", "--title", title, "--set", "rule=E501", "--json", *extra))["id"]


def transitions_of(cli, task_id: int) -> list[dict]:
    return js(cli("audit", "log", "--json", "--action", "task.transition", "--task", str(task_id)))


def test_roster_up_once_run_and_status_drive_the_planner(rws):
    one = create(rws, "first")
    two = create(rws, "second")

    out = ok(rws("up", "--once"))
    assert "1 agent(s) with a runner: planner" in out
    assert f"planner on task {one}: succeeded -> plan" in out
    assert "roster up: stopped" in out
    assert js(rws("task", "show", str(one), "--json"))["task"]["state"] == "planned"
    assert js(rws("task", "show", str(two), "--json"))["task"]["state"] == "found"  # one run per cycle

    status = js(rws("status", "--json"))
    agents = {a["agent"]: a for a in status["agents"]}
    assert agents["planner"]["runner"] == "program" and agents["planner"]["pending"] == [two]
    assert agents["builder"]["runner"] is None and agents["builder"]["pending"] == [one]
    assert status["leases"] == [] and status["paused"] == []
    [run] = status["runs"]
    assert (run["agent"], run["task_id"], run["outcome"], run["transition"]) == ("planner", one, "succeeded", "plan")

    manual = js(rws("run", "planner", "--json"))
    assert (manual["agent"], manual["task_id"], manual["outcome"], manual["transition"]) == (
        "planner", two, "succeeded", "plan")
    assert manual["failure"] is None and manual["run_id"]
    runs = js(rws("status", "--json"))["runs"]
    assert {r["trigger"] for r in runs} == {"task arrival", "manual (roster run)"}
    briefs = read_lines(rws.workspace / "briefs.jsonl")
    assert [b["task"]["id"] for b in briefs] == [one, two]
    assert briefs[0]["queue"] == [two] and briefs[0]["company"] == "example"

    nothing = rws("run", "planner", "--json")
    assert nothing.exit_code == 4
    assert json.loads(nothing.stderr)["error"] == "not-found"
    assert ok(rws("up", "--once")).count("succeeded") == 0
    assert len(js(rws("status", "--json"))["runs"]) == 2
    assert ok(rws("audit", "verify"))


def test_an_agent_token_may_not_run_the_agents(rws):
    task = create(rws, "first")
    token = token_for(rws, "planner")
    for args in (("up", "--once"), ("run", "planner")):
        result = rws("--token", token, *args)
        assert result.exit_code == 11, (args, result.stdout, result.stderr)
    assert js(rws("task", "show", str(task), "--json"))["task"]["state"] == "found"
    assert js(rws("status", "--json"))["runs"] == []
    assert not (rws.workspace / "briefs.jsonl").exists()


# -- 8. crash-only ---------------------------------------------------------------------------------

SLOW_PLANNER_PY = f"""
import json, os, sys, time
brief = json.load(sys.stdin)
with open("worker.pid", "w") as out:
    out.write(str(os.getpid()))
with open("marker", "w") as out:
    out.write(str(brief["task"]["id"]))
time.sleep(float(os.environ.get("SLOW_SECONDS", "30")))
print(json.dumps({{"transition": "plan", "writes": {{"spec": {GOOD_SPEC!r}}}}}))
"""


def start_up(workspace: Path, env_extra: dict[str, str] | None = None,
             port: int = 0) -> tuple[subprocess.Popen, Path, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTER_")}
    env.update(env_extra or {})
    out, err = workspace / "up.out", workspace / "up.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "roster", "up", "--lease-seconds", "2", "--poll", "0.2",
                                 "--port", str(port)],
                                cwd=workspace, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
    return proc, out, err


def test_sigkill_of_roster_up_mid_run_loses_and_duplicates_nothing(rws):
    ws = rws.workspace
    one = create(rws, "first")
    two = create(rws, "second")
    write_script(ws / "planner.py", SLOW_PLANNER_PY)
    proc, _, err = start_up(ws)
    worker = None
    try:
        wait_for(lambda: (ws / "marker").exists() or proc.poll() is not None, 20, "the worker to start")
        assert proc.poll() is None, err.read_text()
        assert (ws / "marker").read_text() == str(one)
        worker = int((ws / "worker.pid").read_text())
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if worker is not None and alive(worker):
            os.kill(worker, signal.SIGKILL)  # the worker leads a process group of its own
    assert proc.returncode == -signal.SIGKILL
    wait_for(lambda: not alive(worker), 5, "the worker to die")

    killed = js(rws("status", "--json"))
    [running] = killed["runs"]
    assert (running["task_id"], running["outcome"]) == (one, "running")
    assert js(rws("task", "show", str(one), "--json"))["task"]["state"] == "found"

    write_script(ws / "planner.py", PLANNER_PY)
    # The next roster up (same host: the dead process's pid is gone) ends the dead run as crashed at once,
    # gives its lease back and counts it as an attempt: task one waits out its backoff, task two goes first.
    assert f"planner on task {two}: succeeded -> plan" in ok(rws("up", "--once"))
    crashed = [r for r in js(rws("status", "--json"))["runs"] if r["task_id"] == one]
    assert [(r["outcome"], r["failure_category"], r["failure_code"]) for r in crashed] == [
        ("crashed", "transient", "crashed")]
    time.sleep(2.1)  # the first attempt's backoff (2 s at most); nobody cleans anything up by hand
    assert f"planner on task {one}: succeeded -> plan" in ok(rws("up", "--once"))

    tasks = js(rws("task", "list", "--json"))
    tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
    assert sorted(t["id"] for t in tasks) == [one, two]  # none lost, none duplicated
    assert all(t["state"] == "planned" for t in tasks)
    assert len(transitions_of(rws, one)) == 1 and len(transitions_of(rws, two)) == 1
    runs = js(rws("status", "--json"))["runs"]
    assert sorted((r["task_id"], r["outcome"], r["attempt"]) for r in runs) == [
        (one, "crashed", 1), (one, "succeeded", 2), (two, "succeeded", 1)]
    claims = js(rws("audit", "log", "--json", "--action", "lease.claim", "--task", str(one)))
    assert [c["data"]["fencing_token"] for c in claims] == [1, 2]
    releases = js(rws("audit", "log", "--json", "--action", "lease.release", "--task", str(one)))
    assert [r["data"]["reason"] for r in releases] == ["crashed", "done"]
    assert js(rws("status", "--json"))["leases"] == []
    assert rws("audit", "verify").exit_code == 0


def test_sigkill_of_roster_up_while_its_transition_waits_for_the_store_loses_and_duplicates_nothing(rws):
    from test_locking import lock_held

    ws = rws.workspace
    write_script(ws / "planner.py", SLOW_PLANNER_PY)
    proc, _, err = start_up(ws, {"SLOW_SECONDS": "0.5", "ROSTER_LOCK_TIMEOUT": "30"})
    try:
        wait_for(lambda: (ws / ".roster" / "roster.db").exists() and proc.poll() is None, 20, "roster up to start")
        one = create(rws, "first")
        wait_for(lambda: (ws / "marker").exists() or proc.poll() is not None, 20, "the worker to start")
        with lock_held(ws / ".roster" / "roster.db"):
            # The worker answers; roster up now waits for the write lock to apply its transition: kill it there.
            time.sleep(1.5)
            assert proc.poll() is None, err.read_text()
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert js(rws("task", "show", str(one), "--json"))["task"]["state"] == "found"  # the transition never landed
    assert transitions_of(rws, one) == []
    write_script(ws / "planner.py", PLANNER_PY)
    ok(rws("up", "--once"))  # ends the dead run as crashed (an attempt): the task waits out its backoff
    time.sleep(2.1)
    assert f"planner on task {one}: succeeded -> plan" in ok(rws("up", "--once"))
    assert len(transitions_of(rws, one)) == 1  # done once, not twice
    claims = js(rws("audit", "log", "--json", "--action", "lease.claim", "--task", str(one)))
    assert [c["data"]["fencing_token"] for c in claims] == [1, 2]
    assert rws("audit", "verify").exit_code == 0


def test_sigterm_of_roster_up_lets_the_run_in_flight_finish(rws):
    ws = rws.workspace
    one = create(rws, "first")
    two = create(rws, "second")
    write_script(ws / "planner.py", SLOW_PLANNER_PY)
    proc, out, err = start_up(ws, {"SLOW_SECONDS": "1.5"})
    try:
        wait_for(lambda: (ws / "marker").exists() or proc.poll() is not None, 20, "the worker to start")
        assert proc.poll() is None, err.read_text()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    stdout, stderr = out.read_text(), err.read_text()
    assert code == 0, (stdout, stderr)
    assert "SIGTERM, stopping after the runs in flight" in stderr
    assert f"planner on task {one}: succeeded -> plan" in stdout and "roster up: stopped" in stdout
    assert js(rws("task", "show", str(one), "--json"))["task"]["state"] == "planned"
    assert js(rws("task", "show", str(two), "--json"))["task"]["state"] == "found"  # no new run after the signal
    status = js(rws("status", "--json"))
    assert status["leases"] == []
    [run] = status["runs"]
    assert (run["task_id"], run["outcome"], run["transition"]) == (one, "succeeded", "plan")
    assert len(transitions_of(rws, one)) == 1
    assert rws("audit", "verify").exit_code == 0


def test_roster_up_waits_out_a_database_locked_past_the_timeout_and_goes_on(rws):
    from test_locking import lock_held

    ws = rws.workspace
    write_script(ws / "planner.py", SLOW_PLANNER_PY)
    proc, out, err = start_up(ws, {"SLOW_SECONDS": "1", "ROSTER_LOCK_TIMEOUT": "0.3"})
    try:
        wait_for(lambda: "with a runner" in out.read_text() or proc.poll() is not None, 20, "roster up to start")
        one = create(rws, "first")
        wait_for(lambda: (ws / "marker").exists() or proc.poll() is not None, 20, "the worker to start")
        # The run is claimed and working; another process takes the write lock before its result is written.
        # Held until the run's own end has met it (the cycle and the lease renewals meet it too, earlier).
        with lock_held(ws / ".roster" / "roster.db") as holder:
            wait_for(lambda: "goes on in" in err.read_text() or proc.poll() is not None, 20,
                     "the run's result to meet the lock")
            time.sleep(0.5)
            assert proc.poll() is None, err.read_text()  # waited out, not stopped
            holder.release()
        # The run's result waited for the store and is applied once it is free: one claim, one run, one move.
        wait_for(lambda: js(rws("task", "show", str(one), "--json"))["task"]["state"] == "planned", 30,
                 "the task to be planned after the lock")
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    stderr = " ".join(err.read_text().split())
    assert "is locked by another process" in stderr and "goes on in 0.5 s" in stderr
    assert len(transitions_of(rws, one)) == 1
    claims = js(rws("audit", "log", "--json", "--action", "lease.claim", "--task", str(one)))
    assert [c["data"]["fencing_token"] for c in claims] == [1]
    [run] = js(rws("status", "--json"))["runs"]
    assert (run["id"], run["outcome"], run["transition"]) == (claims[0]["data"]["run_id"], "succeeded", "plan")
    releases = js(rws("audit", "log", "--json", "--action", "lease.release", "--task", str(one)))
    assert [r["data"]["fencing_token"] for r in releases] == [1]
    assert rws("audit", "verify").exit_code == 0


def test_roster_up_serves_the_rest_api_and_mcp_alongside_and_stops_on_sigterm(rws):
    import httpx

    ws = rws.workspace
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = next(iter(json.loads((ws / ".roster" / "credentials.json").read_text()).values()))
    if isinstance(token, dict):
        token = next(iter(token.values()))
    proc, out, err = start_up(ws, port=port)
    try:
        wait_for(lambda: f"127.0.0.1:{port}" in out.read_text() or proc.poll() is not None, 20, "the API to be up")
        assert proc.poll() is None, err.read_text()
        me = httpx.get(f"http://127.0.0.1:{port}/api/v1/principals/self", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["kind"] == "human"
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/principals/self").status_code == 401
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert "roster up: stopped" in out.read_text()
    assert f"MCP at http://127.0.0.1:{port}/mcp/" in " ".join(out.read_text().split())
    assert ok(rws("up", "--no-serve", "--once"))
