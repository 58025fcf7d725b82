"""Triggers besides task arrival: ``every``, ``cron``, ``event`` and ``when`` (tasks or command), evaluated
each cycle without any model from state kept in the store; runs woken without a task, which may only
file tasks; the spec checks on triggers; and ``roster emit``.

Real SQLite files, real subprocesses for command conditions, a clock the test moves by hand; nothing is
mocked. The runners are real :class:`~roster.runtime.runners.Runner` objects that record every brief."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import FIX_LINT, Recorder, alive, js, ok, read_lines, wait_for

from roster.errors import PayloadTooLarge, SpecError
from roster.kernel.failures import FailureCategory
from roster.runtime.dispatcher import Dispatcher
from roster.specfile import parse_spec
from roster.store.triggers import MAX_EVENT_BYTES, TriggerState

PY = shlex.quote(sys.executable)
EVERY = "every:10m"
CRON = "cron:0 2 * * *"
EVENT = "event:new-commit"


# -- helpers ---------------------------------------------------------------------------------------


def spec_text(triggers: str, *, rights: str = '{read: ["*"], create: ["*"]}', tier: str = "coordinator") -> str:
    """FIX_LINT with an agent ``scout`` whose ``triggers:`` list is the YAML ``triggers`` (one item per
    ``- `` line, written at column 0)."""
    block = (f"  scout:\n    tier: {tier}\n    rights: {rights}\n    triggers:\n"
             + textwrap.indent(textwrap.dedent(triggers), "      "))
    assert FIX_LINT.count("\nhumans:\n") == 1
    return FIX_LINT.replace("\nhumans:\n", "\n" + block + "humans:\n")


def write_script(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


@pytest.fixture
def workdir(tmp_path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


# -- 1. the spec -----------------------------------------------------------------------------------


def line_of(text: str, needle: str) -> int:
    [line] = [i for i, content in enumerate(text.splitlines(), 1) if needle in content]
    return line


@pytest.mark.parametrize("triggers, needle, key, says", [
    ('- every: 10m\n- {every: 10m, cron: "0 2 * * *"}\n', "{every: 10m, cron", "agents.scout.triggers[1]",
     "exactly one of every, cron, event or when; got every, cron"),
    ("- {}\n", "- {}", "agents.scout.triggers[0]", "exactly one of every, cron, event or when; got none"),
    ('- cron: "61 2 * * *"\n', "61 2", "agents.scout.triggers[0].cron", "invalid cron expression '61 2 * * *'"),
    ('- cron: "0 2 * *"\n', "0 2 * *", "agents.scout.triggers[0].cron", "invalid cron expression '0 2 * *'"),
    ('- when: {tasks: {workflow: fix-lint}, command: "true"}\n', "command: \"true\"",
     "agents.scout.triggers[0].when", "a condition needs exactly one of tasks or command"),
    ("- when: {timeout: 5}\n", "timeout: 5", "agents.scout.triggers[0].when",
     "a condition needs exactly one of tasks or command"),
    ("- event: new-commit\n- when:\n    tasks:\n      workflow: fix-typos\n", "fix-typos",
     "agents.scout.triggers[1].when.tasks.workflow", "unknown workflow 'fix-typos'; expected one of fix-lint"),
    ("- when:\n    tasks:\n      workflow: fix-lint\n      states:\n        - found\n        - lost\n", "- lost",
     "agents.scout.triggers[0].when.tasks.states[1]", "unknown state 'lost'; expected one of"),
], ids=["two-keys", "no-key", "cron-out-of-range", "cron-four-fields", "when-both", "when-neither",
        "when-unknown-workflow", "when-unknown-state"])
def test_a_bad_trigger_is_a_spec_error_naming_file_line_and_key_path(triggers, needle, key, says):
    text = spec_text(triggers)
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "company.yaml")
    [issue] = caught.value.issues
    assert (issue.file, issue.key) == ("company.yaml", key), caught.value.message
    assert issue.line == line_of(text, needle), caught.value.message
    assert says in issue.message
    assert f"company.yaml:{issue.line}: {key}: " in caught.value.message


def test_good_triggers_of_each_kind_parse_with_stable_keys():
    spec = parse_spec(spec_text("""\
        - every: 10m
        - cron: "0 2 * * *"
        - event: new-commit
        - when: {tasks: {workflow: fix-lint, states: [found, planned], min: 3}}
        - when: {command: "make check", timeout: 2.5}
        """))
    triggers = spec.agents["scout"].triggers
    assert [t.key() for t in triggers[:3]] == [EVERY, CRON, EVENT]
    assert triggers[3].key().startswith("when:") and '"min":3' in triggers[3].key()
    assert triggers[4].key() == "when:make check" and triggers[4].when.timeout == 2.5


# -- 2. every --------------------------------------------------------------------------------------


def test_every_fires_on_the_first_cycle_then_only_when_the_interval_has_passed(opened, clock, workdir):
    company = opened(spec_text("- every: 10m\n"))
    scout = Recorder()
    dispatcher = Dispatcher(company, workdir=workdir, runners={"scout": scout})
    assert dispatcher.agents() == ["scout"]

    [first] = dispatcher.cycle()
    assert (first.agent, first.task_id, first.outcome, first.failure) == ("scout", None, "succeeded", None)
    assert len(scout.briefs) == 1
    assert scout.briefs[0]["triggers"] == [{"trigger": EVERY, "reason": "every 10m", "events": []}]
    assert company.trigger_states("scout")[EVERY] == TriggerState("2026-01-01T00:00:00.000000Z", 0, False)

    audit_before, runs_before = company.audit_log(), company.list_runs()
    for step in (0, 60, 539):  # up to 9 min 59 s after the firing
        clock.advance(step)
        assert dispatcher.cycle() == []
    assert len(scout.briefs) == 1  # never called when nothing fired
    assert company.audit_log() == audit_before and company.list_runs() == runs_before  # idle costs nothing

    clock.advance(1)  # exactly 10 minutes
    [second] = dispatcher.cycle()
    assert (second.agent, second.task_id, second.outcome) == ("scout", None, "succeeded")
    assert len(scout.briefs) == 2
    assert dispatcher.cycle() == []
    clock.advance(599)
    assert dispatcher.cycle() == []
    assert len(scout.briefs) == 2

    runs = company.list_runs()
    assert [(r.trigger, r.task_id, r.fencing_token, r.outcome) for r in runs] == [(EVERY, None, None, "succeeded")] * 2
    assert {first.run_id, second.run_id} == {r.id for r in runs}
    assert company.verify_audit()[1] is None


def test_every_state_survives_a_restart(opened, clock, workdir):
    company = opened(spec_text("- every: 10m\n"))
    scout = Recorder()
    assert len(Dispatcher(company, workdir=workdir, runners={"scout": scout}).cycle()) == 1
    company.store.close()

    clock.advance(300)
    restarted = opened()  # a new Store on the same file
    again = Recorder()
    dispatcher = Dispatcher(restarted, workdir=workdir, runners={"scout": again})
    assert dispatcher.cycle() == []
    clock.advance(299)
    assert dispatcher.cycle() == []
    assert again.briefs == [] and len(restarted.list_runs()) == 1
    clock.advance(1)
    [outcome] = dispatcher.cycle()
    assert outcome.outcome == "succeeded" and len(again.briefs) == 1
    assert len(restarted.list_runs()) == 2


# -- 3. cron ---------------------------------------------------------------------------------------


def test_cron_sets_a_baseline_fires_once_per_slot_and_not_again_after_a_restart(opened, clock, workdir):
    clock.now = datetime(2026, 1, 1, 5, 0, tzinfo=UTC)  # today's 02:00 slot is in the past
    company = opened(spec_text('- cron: "0 2 * * *"\n'))
    scout = Recorder()
    dispatcher = Dispatcher(company, workdir=workdir, runners={"scout": scout})

    assert dispatcher.cycle() == []  # the first evaluation only sets the baseline
    assert scout.briefs == [] and company.list_runs() == []
    assert company.trigger_states("scout")[CRON].last_fired_at == "2026-01-01T05:00:00.000000Z"

    clock.now = datetime(2026, 1, 2, 1, 59, 59, tzinfo=UTC)
    assert dispatcher.cycle() == [] and scout.briefs == []

    clock.now = datetime(2026, 1, 2, 2, 0, 30, tzinfo=UTC)
    [outcome] = dispatcher.cycle()
    assert (outcome.agent, outcome.task_id, outcome.outcome) == ("scout", None, "succeeded")
    [brief] = scout.briefs
    [fired] = brief["triggers"]
    assert fired["trigger"] == CRON and "slot 2026-01-02T02:00:00" in fired["reason"]
    assert dispatcher.cycle() == []
    clock.advance(3600)
    assert dispatcher.cycle() == [] and len(scout.briefs) == 1

    company.store.close()
    restarted = opened()
    again = Recorder()
    dispatcher = Dispatcher(restarted, workdir=workdir, runners={"scout": again})
    assert dispatcher.cycle() == []  # the 2026-01-02 slot is not fired a second time
    assert again.briefs == [] and len(restarted.list_runs()) == 1

    clock.now = datetime(2026, 1, 3, 2, 0, tzinfo=UTC)  # the next slot, to the second
    assert len(dispatcher.cycle()) == 1 and len(again.briefs) == 1

    clock.now = datetime(2026, 1, 7, 3, 0, tzinfo=UTC)  # four slots missed while down: one wake-up
    assert len(dispatcher.cycle()) == 1
    assert dispatcher.cycle() == []
    assert len(again.briefs) == 2 and len(restarted.list_runs()) == 3


# -- 4. events -------------------------------------------------------------------------------------


def test_events_after_the_first_look_make_one_run_with_all_their_payloads(opened, clock, workdir):
    company = opened(spec_text("- event: new-commit\n"))
    old = company.emit_event("new-commit", actor="alice", data={"sha": "old"})
    scout = Recorder()
    dispatcher = Dispatcher(company, workdir=workdir, runners={"scout": scout})

    assert dispatcher.cycle() == []  # first look: events from before do not wake the agent
    assert scout.briefs == [] and company.list_runs() == []
    assert company.trigger_states("scout")[EVENT].last_event_id == old.id
    audit_before = company.audit_log()
    assert dispatcher.cycle() == [] and company.audit_log() == audit_before  # idle costs nothing

    clock.advance(5)
    one = company.emit_event("new-commit", actor="alice", data={"sha": "a1", "branch": "main"})
    company.emit_event("deploy", actor="alice", data={"env": "prod"})  # another name: not for scout
    two = company.emit_event("new-commit", actor="planner", data={"sha": "b2"})

    [outcome] = dispatcher.cycle()
    assert (outcome.agent, outcome.task_id, outcome.outcome) == ("scout", None, "succeeded")
    [brief] = scout.briefs
    [fired] = brief["triggers"]
    assert fired["trigger"] == EVENT and fired["reason"] == "2 'new-commit' event(s)"
    assert [(e["id"], e["name"], e["data"], e["emitted_by"]) for e in fired["events"]] == [
        (one.id, "new-commit", {"sha": "a1", "branch": "main"}, "alice"),
        (two.id, "new-commit", {"sha": "b2"}, "planner")]
    assert all(e["at"] == "2026-01-01T00:00:05.000000Z" for e in fired["events"])
    [run] = company.list_runs()
    assert run.trigger == EVENT and run.task_id is None

    assert dispatcher.cycle() == [] and len(scout.briefs) == 1  # the same events do not wake it again
    three = company.emit_event("new-commit", actor="alice", data={"sha": "c3"})
    assert len(dispatcher.cycle()) == 1
    assert [e["id"] for e in scout.briefs[1]["triggers"][0]["events"]] == [three.id]
    assert dispatcher.cycle() == []


def test_no_event_is_lost_or_repeated_when_many_arrive_at_once(opened, workdir):
    company = opened(spec_text("- event: new-commit\n"))
    scout = Recorder()
    dispatcher = Dispatcher(company, workdir=workdir, runners={"scout": scout})
    assert dispatcher.cycle() == []
    emitted = [company.emit_event("new-commit", actor="alice", data={"n": n}).id for n in range(150)]
    for _ in range(5):
        dispatcher.cycle()
    seen = [e["id"] for b in scout.briefs for e in b["triggers"][0]["events"]]
    assert seen == emitted  # every event seen once, in order


def test_an_event_payload_over_16_kib_is_payload_too_large_and_audited(opened):
    company = opened(spec_text("- event: new-commit\n"))
    assert MAX_EVENT_BYTES == 16_384
    filler = MAX_EVENT_BYTES - len('{"x":""}')
    at_limit = company.emit_event("new-commit", actor="alice", data={"x": "a" * filler})
    with pytest.raises(PayloadTooLarge) as info:
        company.emit_event("new-commit", actor="alice", data={"x": "a" * (filler + 1)})
    assert (info.value.size, info.value.limit) == (MAX_EVENT_BYTES + 1, MAX_EVENT_BYTES)
    assert [e.id for e in company.events_after("new-commit", 0)] == [at_limit.id]
    [rejected] = company.audit_log(action="event.emit.rejected")
    assert rejected.principal == "alice" and rejected.subject == "event:new-commit"
    assert rejected.data["error"]["error"] == "payload-too-large"
    assert len(company.audit_log(action="event.emit")) == 1


# -- the CLI: roster emit --------------------------------------------------------------------------


WATCHER_PY = """
import json, sys
brief = json.load(sys.stdin)
with open("briefs.jsonl", "a", encoding="utf-8") as out:
    out.write(json.dumps(brief) + "\\n")
print("{}")
"""


def test_roster_emit_on_the_cli_is_audited_and_wakes_the_agent_once(cli, keep_signals):
    from roster.cli.context import operator_handle

    ok(cli("init"))
    spec_path = cli.workspace / "roster.yaml"
    text = spec_path.read_text(encoding="utf-8")
    assert text.count("\nhumans:\n") == 1
    watcher = ("  watcher:\n    tier: read-only\n    triggers: [{event: new-commit}]\n"
               f"    runner: {{kind: program, command: {json.dumps(f'{PY} watcher.py')}, timeout: 30}}\n")
    spec_path.write_text(text.replace("\nhumans:\n", "\n" + watcher + "humans:\n"), encoding="utf-8")
    ok(cli("apply"))
    write_script(cli.workspace / "watcher.py", WATCHER_PY)
    briefs = cli.workspace / "briefs.jsonl"

    assert "watcher on no task" not in ok(cli("up", "--once"))  # the first look
    assert not briefs.exists()

    first = js(cli("emit", "new-commit", "--data", '{"sha": "c0ffee", "files": 3}', "--json"))
    assert (first["name"], first["data"], first["emitted_by"]) == ("new-commit", {"sha": "c0ffee", "files": 3},
                                                                    operator_handle())
    out = ok(cli("emit", "new-commit", "--data", '{"sha": "beef"}'))
    assert f"'new-commit' emitted by {operator_handle()}" in out

    bad = cli("emit", "new-commit", "--data", "{not json")
    assert bad.exit_code == 2 and "--data must be JSON" in bad.stderr
    big = cli("emit", "new-commit", "--data", json.dumps({"x": "a" * MAX_EVENT_BYTES}))
    assert big.exit_code == 10, (big.stdout, big.stderr)

    audited = js(cli("audit", "log", "--json", "--action", "event.emit"))
    assert [(e["principal"], e["subject"], e["data"]["data"]) for e in audited] == [
        (operator_handle(), "event:new-commit", {"sha": "c0ffee", "files": 3}),
        (operator_handle(), "event:new-commit", {"sha": "beef"})]
    assert audited[0]["data"]["id"] == first["id"]

    assert "watcher on no task: succeeded" in ok(cli("up", "--once"))
    [brief] = read_lines(briefs)
    assert brief["task"] is None and brief["agent"]["handle"] == "watcher"
    assert [e["data"] for e in brief["triggers"][0]["events"]] == [{"sha": "c0ffee", "files": 3}, {"sha": "beef"}]
    assert "watcher on no task" not in ok(cli("up", "--once"))
    assert len(read_lines(briefs)) == 1
    assert cli("audit", "verify").exit_code == 0


# -- 5. condition watchers -------------------------------------------------------------------------


def test_a_tasks_condition_fires_when_it_starts_to_hold_and_again_only_after_letting_go(opened, workdir):
    company = opened(spec_text("- when: {tasks: {workflow: fix-lint, states: [found], min: 2}}\n"))
    key = company.spec().agents["scout"].triggers[0].key()
    scout = Recorder()
    dispatcher = Dispatcher(company, workdir=workdir, runners={"scout": scout})

    def found(title: str):
        return company.create_task(workflow="fix-lint", title=title, actor="alice", fields={"rule": "E501"})[0]

    assert dispatcher.cycle() == []
    a = found("a")
    assert dispatcher.cycle() == [] and scout.briefs == []  # 1 < min
    b = found("b")
    [outcome] = dispatcher.cycle()  # the count reached min: an edge
    assert outcome.outcome == "succeeded" and len(scout.briefs) == 1
    assert scout.briefs[0]["triggers"] == [{"trigger": key, "reason": "condition started to hold", "events": []}]
    assert company.trigger_states("scout")[key].holding is True

    assert dispatcher.cycle() == []  # still holds: no new wake-up
    c = found("c")
    assert dispatcher.cycle() == [] and len(scout.briefs) == 1  # holds more: still no new wake-up

    for task in (a, b):
        company.transition(task.id, "reject", actor="alice", expected_version=1)
    assert dispatcher.cycle() == []  # 1 in 'found': it let go, without a run
    assert company.trigger_states("scout")[key].holding is False
    assert len(scout.briefs) == 1 and len(company.list_runs()) == 1

    found("d")
    assert len(dispatcher.cycle()) == 1 and len(scout.briefs) == 2  # holds again: fires again
    assert dispatcher.cycle() == []
    assert company.get_task(c.id).state == "found"


COND_PY = """
import pathlib, sys
sys.exit(int(pathlib.Path("status").read_text()))
"""


def test_a_command_condition_holds_when_it_exits_0_in_its_workdir(opened, workdir):
    write_script(workdir / "cond.py", COND_PY)
    status = workdir / "status"
    company = opened(spec_text(f"- when: {{command: {json.dumps(f'{PY} cond.py')}, timeout: 10}}\n"))
    scout = Recorder()
    dispatcher = Dispatcher(company, workdir=workdir, runners={"scout": scout})

    status.write_text("1")
    assert dispatcher.cycle() == [] and scout.briefs == []  # exit 1: does not hold
    assert dispatcher.cycle() == [] and company.list_runs() == []
    status.write_text("0")
    [outcome] = dispatcher.cycle()
    assert outcome.outcome == "succeeded" and len(scout.briefs) == 1
    assert scout.briefs[0]["triggers"][0]["reason"] == "condition started to hold"
    assert dispatcher.cycle() == [] and len(scout.briefs) == 1  # holds on: no new wake-up
    status.write_text("1")
    assert dispatcher.cycle() == []
    status.write_text("0")
    assert len(dispatcher.cycle()) == 1 and len(scout.briefs) == 2


HANG_PY = """
import pathlib, subprocess, time
child = subprocess.Popen(["sleep", "60"])
pathlib.Path("grandchild.pid").write_text(str(child.pid))
time.sleep(60)
"""


def test_a_command_condition_past_its_timeout_does_not_hold_and_its_group_is_killed(opened, workdir):
    write_script(workdir / "hang.py", HANG_PY)
    company = opened(spec_text(f"- when: {{command: {json.dumps(f'{PY} hang.py')}, timeout: 1}}\n"))
    key = company.spec().agents["scout"].triggers[0].key()
    scout = Recorder()
    dispatcher = Dispatcher(company, workdir=workdir, runners={"scout": scout})
    pid_file = workdir / "grandchild.pid"
    grandchild = None
    try:
        started = time.monotonic()
        outcomes = dispatcher.cycle()
        took = time.monotonic() - started
        assert pid_file.exists(), "the command did not start its grandchild within its timeout"
        grandchild = int(pid_file.read_text())
        assert outcomes == [] and scout.briefs == [] and company.list_runs() == []
        assert 1.0 <= took < 5.0, took
        assert not company.trigger_states("scout").get(key, TriggerState(None, 0, False)).holding
        wait_for(lambda: not alive(grandchild), 3, f"the grandchild sleep {grandchild} to die")
    finally:
        if grandchild is not None and alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


# -- 6. runs woken without a task ------------------------------------------------------------------

FILED = [
    {"workflow": "fix-lint", "title": "E501 in a.py", "fields": {"rule": "E501"}, "key": "ruff:E501:a.py"},
    {"workflow": "fix-lint", "title": "W291 in b.py", "fields": {"rule": "W291"}, "key": "ruff:W291:b.py",
     "priority": 2},
]


def test_a_run_without_a_task_files_its_tasks_once_and_sees_triggers_and_workflows(opened, clock, workdir):
    company = opened(spec_text("- every: 10m\n", rights="{read: [default/default/fix-lint], create: [default]}"))
    scout = Recorder({"tasks": FILED})
    dispatcher = Dispatcher(company, workdir=workdir, runners={"scout": scout})
    seq = company.audit_log()[-1].seq

    [outcome] = dispatcher.cycle()

    assert (outcome.agent, outcome.task_id, outcome.outcome, outcome.failure) == ("scout", None, "succeeded", None)
    tasks = company.list_tasks()
    assert [(t.title, t.created_by, t.idempotency_key, t.state, t.priority, t.fields) for t in tasks] == [
        ("E501 in a.py", "scout", "ruff:E501:a.py", "found", 0, {"rule": "E501"}),
        ("W291 in b.py", "scout", "ruff:W291:b.py", "found", 2, {"rule": "W291"})]
    assert [e.action for e in company.audit_log(after_seq=seq)] == ["run.start", "task.create", "task.create",
                                                                    "run.finish"]
    [run] = company.list_runs()
    assert (run.id, run.agent, run.trigger, run.task_id, run.fencing_token, run.outcome) == (
        outcome.run_id, "scout", EVERY, None, None, "succeeded")

    [brief] = scout.briefs
    assert brief["task"] is None and brief["run_id"] == run.id and brief["company"] == "acme"
    assert brief["agent"]["handle"] == "scout"
    assert brief["transitions"] == [] and brief["fencing_token"] is None and brief["queue"] == []
    assert brief["triggers"] == [{"trigger": EVERY, "reason": "every 10m", "events": []}]
    workflow = brief["workflows"]["fix-lint"]
    assert workflow["states"] == ["found", "planned", "built", "verified", "merged", "rejected"]
    assert workflow["initial"] == "found" and set(workflow["fields"]) == {"rule", "spec", "branch", "count"}

    clock.advance(600)
    [again] = dispatcher.cycle()  # fires again and files the same findings: no duplicates
    assert again.outcome == "succeeded" and len(scout.briefs) == 2
    assert [t.id for t in company.list_tasks()] == [t.id for t in tasks]
    assert len(company.audit_log(action="task.create")) == 2
    assert company.verify_audit()[1] is None


@pytest.mark.parametrize("extra, code, category", [
    ({"transition": "plan"}, "malformed-output", FailureCategory.DETERMINISTIC),
    ({"artifacts": [{"kind": "patch", "content": "--- a\n+++ b\n"}]}, "malformed-output",
     FailureCategory.DETERMINISTIC),
    ({"checks": [{"name": "lint_clean", "passed": True}]}, "malformed-output", FailureCategory.DETERMINISTIC),
    ({"failure": {"category": "judgment", "reason": "cannot tell what to file"}}, "runner-reported",
     FailureCategory.JUDGMENT),
], ids=["transition", "artifact", "check", "reported-failure"])
def test_a_run_without_a_task_that_does_more_than_file_tasks_fails_and_files_nothing(opened, clock, workdir, extra,
                                                                                     code, category):
    company = opened(spec_text("- every: 10m\n"))
    scout = Recorder({"tasks": FILED, **extra})
    dispatcher = Dispatcher(company, workdir=workdir, runners={"scout": scout})
    seq = company.audit_log()[-1].seq

    [outcome] = dispatcher.cycle()

    assert (outcome.task_id, outcome.outcome, outcome.blocked) == (None, "failed", None)
    assert (outcome.failure.code, outcome.failure.category) == (code, category)
    assert company.list_tasks() == []
    [run] = company.list_runs()
    assert (run.outcome, run.failure_category, run.failure_code) == ("failed", category.value, code)
    assert [e.action for e in company.audit_log(after_seq=seq)] == ["run.start", "run.finish"]
    assert dispatcher.cycle() == [] and len(scout.briefs) == 1  # a failed firing is still a firing
    clock.advance(600)
    assert len(dispatcher.cycle()) == 1 and len(scout.briefs) == 2


@pytest.mark.parametrize("tier, rights", [
    ("coordinator", '{read: [], create: ["*"]}'),
    ("coordinator", '{read: ["*"], create: []}'),
    ("read-only", '{read: ["*"], create: ["*"]}'),
], ids=["no-read", "no-create", "read-only-tier"])
def test_filing_a_task_without_the_rights_is_a_governance_failure_on_the_run(opened, workdir, tier, rights):
    company = opened(spec_text("- every: 10m\n", rights=rights, tier=tier))
    scout = Recorder({"tasks": FILED[:1]})
    dispatcher = Dispatcher(company, workdir=workdir, runners={"scout": scout})

    [outcome] = dispatcher.cycle()

    assert (outcome.agent, outcome.task_id, outcome.outcome) == ("scout", None, "failed")
    assert outcome.failure.category is FailureCategory.GOVERNANCE and outcome.failure.code == "denied"
    assert company.list_tasks() == []
    [run] = company.list_runs()
    assert (run.outcome, run.failure_category, run.failure_code) == ("failed", "governance", "denied")
    [rejected] = company.audit_log(action="task.create.rejected")
    assert rejected.principal == "scout" and rejected.subject == "workflow:fix-lint"
    assert rejected.data["error"]["error"] == "denied"
    assert company.audit_log(action="task.create") == []


def test_triggers_that_fire_together_make_one_run(opened, clock, workdir):
    company = opened(spec_text("- every: 10m\n- event: new-commit\n"))
    scout = Recorder()
    dispatcher = Dispatcher(company, workdir=workdir, runners={"scout": scout})
    assert len(dispatcher.cycle()) == 1  # every fires; the event trigger takes its first look
    company.emit_event("new-commit", actor="alice", data={"sha": "a1"})
    clock.advance(600)

    [outcome] = dispatcher.cycle()

    assert outcome.outcome == "succeeded" and len(scout.briefs) == 2
    assert [t["trigger"] for t in scout.briefs[1]["triggers"]] == [EVERY, EVENT]
    assert company.list_runs()[0].trigger == f"{EVERY}, {EVENT}"
    assert dispatcher.cycle() == []


# -- 7. the kill switch ----------------------------------------------------------------------------


def test_a_paused_agent_is_not_woken_and_gets_the_events_it_missed_on_resume(opened, clock, workdir):
    company = opened(spec_text("- event: new-commit\n"))
    scout = Recorder()
    dispatcher = Dispatcher(company, workdir=workdir, runners={"scout": scout})
    assert dispatcher.cycle() == []  # first look
    company.set_status("scout", "paused", actor="alice")
    missed = company.emit_event("new-commit", actor="alice", data={"sha": "while-paused"})
    clock.advance(60)
    assert dispatcher.cycle() == [] and scout.briefs == [] and company.list_runs() == []

    company.set_status("scout", "active", actor="alice")
    [outcome] = dispatcher.cycle()
    assert outcome.outcome == "succeeded"
    assert [e["id"] for e in scout.briefs[0]["triggers"][0]["events"]] == [missed.id]


def test_pause_all_stops_agents_woken_by_triggers_too(opened, clock, workdir):
    """The kill switch ``roster pause --all`` stops every agent at once; task arrivals make no run while
    it is on, and neither should a schedule or an event: the runner (a model, for an LLM agent) must not
    be called, and the wake-up (here, the event's payload) must not be used up by a run that could not act."""
    company = opened(spec_text("- every: 10m\n- event: new-commit\n"))
    scout = Recorder({"tasks": FILED[:1]})
    dispatcher = Dispatcher(company, workdir=workdir, runners={"scout": scout})
    assert len(dispatcher.cycle()) == 1  # before the pause: every fires, the event trigger takes its first look
    assert len(company.list_tasks()) == 1

    company.pause("*", actor="alice")
    event = company.emit_event("new-commit", actor="alice", data={"sha": "while-paused"})
    clock.advance(600)
    outcomes = dispatcher.cycle()
    woken_while_paused = len(scout.briefs) - 1
    runs = [(r.outcome, r.failure_category, r.failure_code) for r in company.list_runs()][:len(outcomes)]
    assert (outcomes, woken_while_paused) == ([], 0), (
        f"with the company paused the runner was called {woken_while_paused} time(s); runs: {runs}")

    company.resume("*", actor="alice")
    [outcome] = dispatcher.cycle()
    assert outcome.outcome == "succeeded"
    assert [e["id"] for e in scout.briefs[-1]["triggers"][1]["events"]] == [event.id]
