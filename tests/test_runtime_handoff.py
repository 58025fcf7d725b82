"""The runtime's side of hand-off, messages, memory and delegation: the dispatcher wakes an agent for its
unread messages and sends its answers, keeps a run's memories with their provenance, turns a filed task
with a packet into a child of the run's task, consolidates memory on schedule, and records what each run
saw, so ``roster context`` shows a human's changes to the agent that worked the task before.

Real SQLite files, real dispatcher cycles, the real CLI and a real worker subprocess; nothing is mocked."""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import FIX_LINT, GOOD_SPEC, Recorder, js, ok, read_lines

from roster.cli.context import operator_handle
from roster.runtime.dispatcher import CONSOLIDATION, RUNTIME, Dispatcher
from roster.specfile import parse_spec
from roster.store import Store
from roster.store.store import format_ts

PY = shlex.quote(sys.executable)
PLANNER_LINE = "  planner: {reports_to: alice, tier: bounded-mutator}"
PACKET = {"subproblem": "wrap the long lines of a.py", "desired_output": "a patch for a.py",
          "success_condition": "ruff reports no E501 in a.py"}
V1 = "import os, sys\nprint(os.name)\n"
V2 = "import os\nimport sys\nprint(os.name)\n"


# -- helpers ---------------------------------------------------------------------------------------


def planner_with(extra: str, text: str = FIX_LINT) -> str:
    assert PLANNER_LINE in text
    return text.replace(PLANNER_LINE, PLANNER_LINE[:-1] + f", {extra}}}")


@pytest.fixture
def still(databases, tmp_path, clock):
    """``still(spec_text)``: the ``acme`` company in a store whose clock stands still until the test
    moves it (calling it again opens the same file anew and applies the spec given)."""
    stores: list[Store] = []

    def open_company(text: str = FIX_LINT):
        store = Store.open(databases("still"), clock=clock, artifact_root=tmp_path / "art")
        stores.append(store)
        store.apply(parse_spec(text), applied_by="alice")
        return store.company("acme")

    yield open_company
    for store in stores:
        store.close()


def memory_events(company, after_seq: int) -> list:
    return [e for e in company.audit_log(after_seq=after_seq) if e.action.startswith("memory.")]


# -- 1. messages wake their addressee ---------------------------------------------------------------


def test_a_message_wakes_its_agent_once_and_its_answer_lands_in_the_thread(company, tmp_path):
    question = company.send_message("planner", "why?", actor="alice")
    planner = Recorder({"messages": [{"to": "alice", "body": "because", "thread_id": question.id}]})
    builder = Recorder()
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": planner, "builder": builder})

    [outcome] = dispatcher.cycle()

    assert (outcome.agent, outcome.task_id, outcome.outcome, outcome.failure) == (
        "planner", None, "succeeded", None)
    assert builder.briefs == []  # only the addressee wakes
    [brief] = planner.briefs
    assert brief["task"] is None and brief["run_id"] == outcome.run_id
    assert brief["messages"] == [{"id": question.id, "thread_id": question.id, "from": "alice",
                                  "task_id": None, "body": "why?", "at": question.created_at}]
    thread = company.thread(question.id, actor="alice")
    assert [(m.sender, m.recipient, m.body, m.thread_id) for m in thread] == [
        ("alice", "planner", "why?", question.id), ("planner", "alice", "because", question.id)]
    [run] = company.list_runs()
    assert (run.id, run.agent, run.task_id, run.trigger, run.outcome) == (
        outcome.run_id, "planner", None, "1 unread message(s)", "succeeded")
    assert company.unread_messages(["planner"]) == {}  # read: it does not wake the agent again
    assert [m.body for m in company.message_inbox(actor="alice", unread_only=True)] == ["because"]

    assert dispatcher.cycle() == []
    assert len(planner.briefs) == 1 and len(company.list_runs()) == 1

    follow_up = company.send_message("planner", "and then?", actor="alice", thread_id=question.id)
    [again] = dispatcher.cycle()  # a new message wakes it again, with only the unread one
    assert again.agent == "planner" and again.outcome == "succeeded"
    assert [m["id"] for m in planner.briefs[1]["messages"]] == [follow_up.id]
    assert company.verify_audit()[1] is None


def test_a_run_woken_by_messages_that_fails_still_marks_them_read(company, tmp_path):
    company.send_message("planner", "plan task 1 now", actor="alice")
    planner = Recorder({"transition": "plan"})  # a run without a task may not take a transition
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": planner})

    [outcome] = dispatcher.cycle()

    assert outcome.outcome == "failed" and outcome.failure.code == "malformed-output"
    assert company.unread_messages(["planner"]) == {}
    assert dispatcher.cycle() == [] and len(planner.briefs) == 1  # no wake-up loop on the same message


def test_a_busy_agents_task_run_reads_all_its_mail_and_the_answer_is_tied_to_the_task(company, new_task,
                                                                                        tmp_path):
    task = new_task()
    other = new_task(title="another")
    about = company.send_message("planner", "mind the URLs", actor="alice", task_id=task.id)
    elsewhere = company.send_message("planner", "about the other one", actor="alice", task_id=other.id)
    planner = Recorder({"transition": "plan", "writes": {"spec": GOOD_SPEC},
                        "messages": [{"to": "alice", "body": "noted", "thread_id": about.id}]})
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": planner})

    [outcome] = dispatcher.cycle()

    assert (outcome.task_id, outcome.outcome, outcome.transition) == (task.id, "succeeded", "plan")
    # every unread message, oldest first: an agent that always has task work still reads its mail
    assert [(m["id"], m["task_id"]) for m in planner.briefs[0]["messages"]] == [(about.id, task.id),
                                                                               (elsewhere.id, other.id)]
    [question, answer] = company.thread(about.id, actor="alice")
    assert (answer.sender, answer.body, answer.task_id) == ("planner", "noted", task.id)
    assert company.unread_messages(["planner"]) == {}


# -- 2. memories and delegation from a run -----------------------------------------------------------


def test_a_runs_memories_and_delegated_tasks_are_kept_and_the_parent_brief_shows_the_child(store, tmp_path):
    store.apply(parse_spec(planner_with('rights: {create: ["*"]}')), applied_by="alice")
    company = store.company("acme")
    parent = company.create_task(workflow="fix-lint", title="fix E501 everywhere", actor="alice",
                                 fields={"rule": "E501"})[0]
    planner = Recorder({
        "memories": [{"kind": "lesson", "text": "E501 in a.py is all URLs", "confidence": 0.9,
                      "expires_in": 3600}],
        "tasks": [{"workflow": "fix-lint", "title": "a.py part", "fields": {"rule": "E501"}, "key": "a.py",
                   "packet": PACKET, "artifacts": [{"kind": "context", "name": "lines.txt", "content": "a.py:3"}]},
                  {"workflow": "fix-lint", "title": "W291 found on the way", "fields": {"rule": "W291"},
                   "key": "w291"}]}, {})
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": planner})

    [first] = dispatcher.cycle()

    assert (first.task_id, first.outcome) == (parent.id, "succeeded")
    [memory] = company.list_memory(actor="planner")
    assert (memory.pad, memory.kind, memory.text, memory.confidence, memory.created_by) == (
        "planner", "lesson", "E501 in a.py is all URLs", 0.9, "planner")
    assert memory.provenance == {"run": first.run_id, "task": parent.id}
    assert memory.expires_at is not None
    [child] = company.children(parent.id)
    assert (child.title, child.parent_id, child.created_by, child.idempotency_key) == (
        "a.py part", parent.id, "planner", "a.py")
    assert child.packet == {**PACKET, "context": "", "tried": [], "blocking_threshold": "",
                            "delegated_by": "planner"}
    [plain] = [t for t in company.list_tasks() if t.title == "W291 found on the way"]
    assert plain.parent_id is None and plain.packet is None  # no packet: a task of its own, not a child

    [second] = dispatcher.cycle()  # the parent, still the most urgent, with its child in the brief
    assert second.task_id == parent.id
    brief = planner.briefs[1]
    assert brief["children"] == [{"id": child.id, "title": "a.py part", "workflow": "fix-lint",
                                  "state": "found", "open": True, "desired_output": "a patch for a.py"}]
    assert child.id in brief["queue"]
    assert [m["text"] for m in brief["memory"]] == ["E501 in a.py is all URLs"]  # recalled by 'e501'
    assert len(company.children(parent.id)) == 1  # the second run filed nothing again
    assert [(a.name, a.version) for a in company.list_artifacts(child.id)] == [("lines.txt", 1)]  # saved once
    assert company.verify_audit()[1] is None


# -- 3. consolidation on schedule --------------------------------------------------------------------


def test_memory_is_consolidated_once_per_period_by_the_runtime(still, clock, tmp_path):
    company = still()
    low = company.remember("Use ruff for E501.", actor="planner", kind="lesson", confidence=0.6)
    high = company.remember("use RUFF for e501", actor="planner", kind="lesson", confidence=0.9)
    alone = company.remember("Specs name the file", actor="planner", kind="lesson")
    seq = company.audit_log()[-1].seq
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": Recorder()})

    assert dispatcher.cycle() == []  # no work: no run, but memory is tidied

    [merge] = memory_events(company, seq)
    assert (merge.action, merge.principal, merge.subject) == ("memory.merge", RUNTIME, "memory:planner")
    assert (merge.data["kept"], merge.data["dropped"]) == (high.id, [low.id])
    assert {e.id for e in company.list_memory(actor="planner")} == {high.id, alone.id}
    assert company.trigger_states(RUNTIME)[CONSOLIDATION].last_fired_at == format_ts(clock.now)
    assert company.list_runs() == []

    again = company.remember("Use ruff for E501", actor="planner", kind="lesson", confidence=0.5)
    stale = company.remember("The CI image is old", actor="planner", kind="belief", expires_in=3600)
    seq = company.audit_log()[-1].seq
    clock.advance(hours=23, minutes=59)
    assert dispatcher.cycle() == []
    assert company.audit_log(after_seq=seq) == []  # within the period: nothing consolidated, nothing recorded
    assert {e.id for e in company.list_memory(actor="planner")} == {high.id, alone.id, again.id}

    clock.advance(minutes=1)  # a whole day since the last consolidation
    assert dispatcher.cycle() == []
    events = memory_events(company, seq)
    assert {(e.action, e.principal) for e in events} == {("memory.merge", RUNTIME),
                                                          ("memory.expire", RUNTIME)}
    [merge] = [e for e in events if e.action == "memory.merge"]
    assert (merge.data["kept"], merge.data["dropped"]) == (high.id, [again.id])
    [expire] = [e for e in events if e.action == "memory.expire"]
    assert expire.data["id"] == stale.id
    assert {e.id for e in company.list_memory(actor="planner")} == {high.id, alone.id}
    assert company.trigger_states(RUNTIME)[CONSOLIDATION].last_fired_at == format_ts(clock.now)
    assert company.verify_audit()[1] is None


def test_the_consolidation_period_comes_from_the_spec_and_null_turns_it_off(still, clock, tmp_path):
    company = still(FIX_LINT + "memory: {consolidate_every: 2h}\n")
    company.remember("Use ruff for E501.", actor="planner", kind="lesson")
    company.remember("use ruff for E501", actor="planner", kind="lesson")
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": Recorder()})
    dispatcher.cycle()
    assert len(company.list_memory(actor="planner")) == 1
    company.remember("Use ruff for E501!", actor="planner", kind="lesson")
    clock.advance(hours=1, minutes=59)
    dispatcher.cycle()
    assert len(company.list_memory(actor="planner")) == 2
    clock.advance(minutes=1)
    dispatcher.cycle()
    assert len(company.list_memory(actor="planner")) == 1

    company = still(FIX_LINT + "memory: {consolidate_every: null}\n")  # the same file, the spec changed
    company.remember("use ruff for e501", actor="planner", kind="lesson")
    seq = company.audit_log()[-1].seq
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": Recorder()})
    for _ in range(3):
        clock.advance(timedelta(days=30).total_seconds())
        assert dispatcher.cycle() == []
    assert len(company.list_memory(actor="planner")) == 2 and memory_events(company, seq) == []


# -- 4. the CLI: a human's changes reach the agent that worked the task ------------------------------

PLANNER_MISSION = "    mission: Turn each finding into a concrete, checkable spec.\n"

WORKER_PY = f"""
import json, sys
brief = json.load(sys.stdin)
with open("briefs.jsonl", "a", encoding="utf-8") as out:
    out.write(json.dumps(brief) + "\\n")
print(json.dumps({{"artifacts": [{{"kind": "patch", "name": "fix.diff", "content": {V1!r},
                                  "reason": "first cut"}}]}}))
"""


def test_cli_a_humans_hold_edit_and_release_show_in_the_agents_context(cli):
    ok(cli("init"))
    spec_path = cli.workspace / "roster.yaml"
    text = spec_path.read_text(encoding="utf-8")
    assert PLANNER_MISSION in text
    runner = f"    runner: {{kind: program, command: {json.dumps(f'{PY} worker.py')}, timeout: 60}}\n"
    spec_path.write_text(text.replace(PLANNER_MISSION, PLANNER_MISSION + runner), encoding="utf-8")
    ok(cli("apply"))
    (cli.workspace / "worker.py").write_text(textwrap.dedent(WORKER_PY), encoding="utf-8")
    me = operator_handle()
    task = js(cli("task", "create", "fix-lint", "--title", "E501 in app.py", "--set", "rule=E501",
                  "--json"))["id"]

    run = js(cli("run", "planner", "--task", str(task), "--json"))  # a real worker process saves fix.diff v1
    assert (run["task_id"], run["outcome"], run["failure"]) == (task, "succeeded", None)
    [seen] = read_lines(cli.workspace / "briefs.jsonl")
    assert seen["task"]["id"] == task and seen["handoff"] is None
    assert js(cli("context", str(task), "--as", "planner", "--json"))["handoff"] is None  # nothing new since

    ok(cli("task", "hold", str(task), "--note", "taking a look"))
    held = js(cli("run", "planner", "--task", str(task), "--json"))
    assert held["outcome"] == "skipped"  # agents wait while a human holds the task
    Path(cli.workspace / "fix.diff").write_text(V2, encoding="utf-8")
    ok(cli("task", "attach", str(task), "patch", "fix.diff", "--reason", "one import per line"))
    ok(cli("task", "edit", str(task), "--set", "rule=E401", "--note", "wrong rule"))
    ok(cli("task", "release", str(task), "--note", "it was E401, not E501"))

    brief = js(cli("context", str(task), "--as", "planner", "--json"))

    handoff = brief["handoff"]
    assert handoff["changed_by"] == [me]
    assert handoff["fields"] == {"rule": {"before": "E501", "after": "E401"}}
    [artifact] = handoff["artifacts"]
    assert (artifact["name"], artifact["from_version"], artifact["to_version"], artifact["by"]) == (
        "fix.diff", 1, 2, me)
    diff_lines = artifact["diff"].splitlines()
    assert "-import os, sys" in diff_lines and "+import sys" in diff_lines
    assert {"by": me, "note": "it was E401, not E501"}.items() <= next(
        n for n in handoff["notes"] if n["note"] == "it was E401, not E501").items()
    assert brief["task"]["fields"] == {"rule": "E401"}
    assert brief["context"]["tokens"] <= brief["context"]["budget"] == 8000
    # the builder never worked the task: nothing to hand off to it
    assert js(cli("context", str(task), "--as", "builder", "--json"))["handoff"] is None
    text = ok(cli("context", str(task), "--as", "planner"))
    assert "it was E401, not E501" in text and "-token budget" in text

    diff = ok(cli("artifact", "diff", str(task), "fix.diff"))
    assert "--- fix.diff@v1" in diff and "+++ fix.diff@v2" in diff
    assert "-import os, sys\n" in diff and "+import os\n" in diff and "+import sys\n" in diff
    history = js(cli("artifact", "history", str(task), "fix.diff", "--json"))
    assert [(v["version"], v["created_by"], v["reason"]) for v in history] == [
        (1, "planner", "first cut"), (2, me, "one import per line")]
    assert history[0]["run_id"] == run["run_id"] and history[1]["run_id"] is None
    assert history[1]["parent_id"] == history[0]["id"]
    assert ok(cli("artifact", "show", str(task), "fix.diff", "--version", "1")) == V1

    # once the planner has run again, it has seen it all
    assert js(cli("run", "planner", "--task", str(task), "--json"))["outcome"] == "succeeded"
    assert read_lines(cli.workspace / "briefs.jsonl")[-1]["handoff"]["fields"] == handoff["fields"]
    assert js(cli("context", str(task), "--as", "planner", "--json"))["handoff"] is None


def test_a_packet_filed_by_a_run_without_a_task_is_refused_not_dropped(store, tmp_path):
    store.apply(parse_spec(planner_with('rights: {create: ["*"]}, triggers: [{every: 10m}]')), applied_by="alice")
    company = store.company("acme")
    planner = Recorder({"tasks": [{"workflow": "fix-lint", "title": "orphan", "fields": {"rule": "E1"},
                                   "packet": PACKET}]})
    [outcome] = Dispatcher(company, workdir=tmp_path, runners={"planner": planner}).cycle()
    assert outcome.outcome == "failed" and outcome.failure.code == "malformed-output"
    assert "delegation packet" in outcome.failure.message
    assert company.list_tasks() == []
