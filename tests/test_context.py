"""Context assembly: the brief of one run is rebuilt from typed state at every wake-up, bounded by the
agent's ``context_budget`` (it does not grow with the task's history), deterministic, cut by priority,
and carries the previous failure, recalled memory, delegated children and the hand-off diff.

Real SQLite files and real dispatcher runs (a recording runner); nothing is mocked."""

from __future__ import annotations

import pytest
from conftest import FIX_LINT, Recorder, StepClock

from roster.errors import ContextOverBudget
from roster.kernel.failures import Failure, FailureCategory
from roster.runtime.context import RECENT_EVENTS, ContextAssembler, Wakeup, estimate_tokens
from roster.runtime.dispatcher import Dispatcher
from roster.specfile import parse_spec
from roster.store import Store

PLANNER_LINE = "  planner: {reports_to: alice, tier: bounded-mutator}"
MANDATORY = ("agent", "run_id", "company", "attempt", "fencing_token", "tools", "task", "idempotency_key", "fields_schema",
             "transitions")
OPTIONAL = ("rejections", "previous_failure", "handoff", "children", "messages", "memory", "events", "queue")
V1 = "import os, sys\nprint(os.name)\n"
V2 = "import os\nimport sys\nprint(os.name)\n"
CRASH = Failure(FailureCategory.TRANSIENT, "runner-crashed", "it fell over")
PACKET = {"subproblem": "wrap the long lines of b.py", "desired_output": "a patch for b.py",
          "success_condition": "ruff reports no E501 in b.py"}


# -- helpers ---------------------------------------------------------------------------------------


def planner_with(extra: str) -> str:
    """FIX_LINT with ``extra`` (YAML flow entries) added to the planner's mapping."""
    assert PLANNER_LINE in FIX_LINT
    return FIX_LINT.replace(PLANNER_LINE, PLANNER_LINE[:-1] + f", {extra}}}")


def reapply(store: Store, text: str):
    store.apply(parse_spec(text), applied_by="alice")
    return store.company("acme")


def brief_of(company, agent: str, task_id: int | None, **wakeup) -> dict:
    task = company.get_task(task_id) if task_id is not None else None
    return ContextAssembler(company).brief(agent, task, Wakeup("run-test", **wakeup)).data


# -- 1. bounded: the brief does not grow with history ----------------------------------------------


def test_the_brief_does_not_grow_with_the_tasks_history(company, new_task):
    short, long = new_task(title="fix E501 short"), new_task(title="fix E501 longg")
    for _ in range(10):
        company.record_check(short.id, "c", passed=True, actor="alice")
    # 10,000 audited checks: each is its own write transaction (about 4 s in all on SQLite).
    for _ in range(10_000):
        company.record_check(long.id, "c", passed=True, actor="alice")
    assert len(company.audit_log(task_id=long.id)) == 10_001  # the creation and every check

    small, big = brief_of(company, "planner", short.id), brief_of(company, "planner", long.id)

    for brief, task_id in ((small, short.id), (big, long.id)):
        report = brief["context"]
        assert report["tokens"] <= report["budget"] == 8000
        assert report["tokens"] == estimate_tokens(brief)  # the report tells the truth about the whole brief
        assert report["left_out"] == {}
        assert len(brief["events"]) == RECENT_EVENTS == 10
        newest = company.audit_log(task_id=task_id, limit=10, newest_first=True)
        assert [e["seq"] for e in brief["events"]] == [e.seq for e in newest]  # the latest, newest first
        assert brief["events"][0]["action"] == "check.record"
    assert big["task"]["version"] == 10_001  # it really is the task with the long history
    assert abs(big["context"]["tokens"] - small["context"]["tokens"]) < 0.1 * small["context"]["tokens"]


# -- 2. deterministic -------------------------------------------------------------------------------


def test_the_same_state_gives_the_same_brief_byte_for_byte(store, company, new_task, db_path, tmp_path):
    task = new_task()
    child = company.delegate(task.id, actor="alice", workflow="fix-lint", title="b.py", packet=PACKET,
                             fields={"rule": "E501"})
    for i in range(12):
        company.remember(f"E501 lesson number {i}: wrap long lines", actor="planner", kind="lesson",
                         confidence=0.5 + i / 40)
    company.remember("E501 lines may be 88 characters", actor="planner", kind="constraint", confidence=0.9)
    company.send_message("planner", "please look at E501 again", actor="alice", task_id=task.id)
    company.record_failure(task.id, "planner", CRASH, max_attempts=3,
                           tried={"transition": "plan", "saved": ["memory lesson"]})
    for _ in range(15):
        company.record_check(task.id, "lint_clean", passed=False, actor="alice")
    wakeup = {"fencing_token": 7, "attempt": 2, "queue": (child.id,)}

    first = ContextAssembler(company).brief("planner", company.get_task(task.id), Wakeup("run-1", **wakeup))
    second = ContextAssembler(company).brief("planner", company.get_task(task.id), Wakeup("run-1", **wakeup))
    assert first.to_json() == second.to_json()
    reopened = Store.open(f"sqlite:///{db_path}", clock=StepClock(), artifact_root=tmp_path / "artifacts")
    try:  # another process reading the same file assembles the same bytes
        again = reopened.company("acme")
        third = ContextAssembler(again).brief("planner", again.get_task(task.id), Wakeup("run-1", **wakeup))
    finally:
        reopened.close()
    assert third.to_json() == first.to_json()
    # and the state it was built from is rich: every optional part has something in it
    data = first.data
    assert data["previous_failure"] and data["children"] and data["messages"] and data["queue"] == [child.id]
    assert len(data["memory"]) == 8 and len(data["events"]) == 10


# -- 3. the budget cuts by priority -----------------------------------------------------------------


def test_a_small_budget_cuts_optional_parts_by_priority_and_keeps_the_mandatory_ones(store, company,
                                                                                      new_task):
    task = new_task()
    for i in range(8):
        company.remember(f"E501 note {i}: " + "wrap long lines at a sensible place " * 10, actor="planner",
                         kind="lesson")
    for _ in range(20):
        company.record_check(task.id, "lint_clean", passed=False, detail="still long", actor="alice")
    company.record_failure(task.id, "planner", CRASH, max_attempts=3, tried={"transition": "plan"})
    full = brief_of(company, "planner", task.id, fencing_token=3)
    assert full["context"]["left_out"] == {} and len(full["memory"]) == 8 and len(full["events"]) == 10

    small_company = reapply(store, planner_with("context_budget: 900"))
    small = brief_of(small_company, "planner", task.id, fencing_token=3)

    report = small["context"]
    assert report["budget"] == 900 and report["tokens"] <= 900
    assert report["tokens"] == estimate_tokens(small)
    for part in MANDATORY:  # never cut
        assert small[part] == full[part], part
    assert small["task"]["fields"] == {"rule": "E501"}
    assert {t["name"] for t in small["transitions"]} == {"plan", "reject"}
    assert small["previous_failure"] == full["previous_failure"] is not None  # first in priority: kept whole
    # memory (5th) is cut item by item, keeping the best first; events (6th) get what room is left
    assert "memory" in report["left_out"]
    for part in ("memory", "events"):
        kept = small[part]
        assert kept == full[part][:len(kept)], part
        assert report["left_out"].get(part, 0) == len(full[part]) - len(kept), part
    assert len(small["memory"]) < 8 and len(small["events"]) < 10
    assert set(report["left_out"]) <= set(OPTIONAL)
    assert set(report["parts"]) == set(MANDATORY) | set(OPTIONAL)


def test_mandatory_parts_over_the_budget_raise_context_over_budget_naming_the_task(store, company, new_task):
    huge = "Wrap the long line; " * 300  # about 6,000 characters in one field
    task = new_task(fields={"rule": "E501", "spec": huge})
    company = reapply(store, planner_with("context_budget: 500"))

    with pytest.raises(ContextOverBudget) as caught:
        brief_of(company, "planner", task.id)

    error = caught.value
    assert error.part == "task" and error.budget == 500
    assert error.tokens > 1500  # the task alone is about 1,500 tokens
    assert "'task'" in error.message and "500" in error.message and "context_budget" in error.message
    assert error.to_dict()["part"] == "task"
    # the same task fits the default budget, and an agent whose budget is larger is not affected
    assert brief_of(company, "builder", task.id)["task"]["fields"]["spec"] == huge


# -- 4. what the brief carries ----------------------------------------------------------------------


def test_after_a_failed_run_the_next_brief_says_what_was_tried_and_what_was_saved(company, new_task,
                                                                                  tmp_path):
    task = new_task()
    planner = Recorder({"transition": "plan", "writes": {"spec": "too short"},
                        "memories": [{"kind": "lesson", "text": "E501 specs need detail"}]})
    assert brief_of(company, "planner", task.id)["previous_failure"] is None

    [outcome] = Dispatcher(company, workdir=tmp_path, runners={"planner": planner}).cycle()
    assert outcome.outcome == "failed" and outcome.failure.code == "contract-violation"
    assert planner.briefs[0]["previous_failure"] is None

    failure = brief_of(company, "planner", task.id)["previous_failure"]
    assert failure["category"] == "deterministic" and failure["code"] == "contract-violation"
    assert "clause 'fields'" in failure["message"] and "'too short' is too short" in failure["message"]
    assert failure["tried"] == {"transition": "plan", "writes": {"spec": "too short"}}
    assert failure["partly_succeeded"] == ["memory lesson"]
    # another agent's failure is not yours
    assert brief_of(company, "builder", task.id)["previous_failure"] is None


def test_memory_is_recalled_by_the_tasks_words_from_the_agents_own_pad_only(company, new_task):
    task = new_task(title="fix E501 in parser.py")
    wanted = company.remember("E501 in parser.py: the long lines are SQL strings", actor="planner",
                              kind="lesson")
    also = company.remember("Wrap E501 lines at 88 characters", actor="planner", kind="constraint",
                            confidence=0.9)
    company.remember("Prefer tabs in Makefiles", actor="planner", kind="preference")
    company.remember("E501 in parser.py is the builder's secret", actor="builder", kind="belief")
    company.share_memory("builder", "planner", actor="builder")  # shared, yet not put in planner's brief

    memory = brief_of(company, "planner", task.id)["memory"]

    assert {m["id"] for m in memory} == {wanted.id, also.id}
    assert {m["pad"] for m in memory} == {"planner"}
    assert not any("Makefiles" in m["text"] or "secret" in m["text"] for m in memory)
    assert memory[0]["id"] == wanted.id  # more of the task's words: ranked first
    assert {"kind", "text", "confidence", "provenance"} <= set(memory[0])
    builder_memory = brief_of(company, "builder", task.id)["memory"]
    assert [m["text"] for m in builder_memory] == ["E501 in parser.py is the builder's secret"]


TEAM = """\
workspaces:
  default:
    portfolios:
      default:
        team_memory: {read: [agent], write: [coders]}
"""


@pytest.mark.parametrize("reader", ["builder", "qa"], ids=["by-role", "by-the-agent-keyword"])
def test_the_team_pad_is_recalled_for_every_agent_its_team_memory_grants(store, new_task, reader):
    text = FIX_LINT.replace("company: acme\n", "company: acme\n" + TEAM).replace(
        "builder: {reports_to: alice, tier: bounded-mutator}",
        "builder: {reports_to: alice, tier: bounded-mutator, roles: [coders]}")
    company = reapply(store, text)
    task = new_task()
    shared = company.remember("E501 in this repo: URLs may stay long", actor="builder",
                              pad="team:default/default", kind="constraint")
    company.remember("E501 is builder's own business", actor="builder", kind="belief")
    assert [e.id for e in company.recall("e501", actor=reader, pads=["team:default/default"])] == [shared.id]

    memory = brief_of(company, reader, task.id)["memory"]

    assert shared.id in {m["id"] for m in memory}
    [entry] = [m for m in memory if m["id"] == shared.id]
    assert entry["pad"] == "team:default/default" and entry["text"] == shared.text
    if reader == "qa":  # qa reads the team pad, never builder's own
        assert [m["id"] for m in memory] == [shared.id]


def test_the_brief_lists_children_open_and_finished_with_the_finished_ones_result(company, new_task):
    parent = new_task(title="fix E501 everywhere")
    open_child = company.delegate(parent.id, actor="alice", workflow="fix-lint", title="a.py", packet=PACKET,
                                  fields={"rule": "E501"})
    done = company.delegate(parent.id, actor="alice", workflow="fix-lint", title="b.py",
                            packet={**PACKET, "desired_output": "why b.py is fine"},
                            fields={"rule": "E501", "count": 3})
    company.record_artifact(done.id, "patch", V1.encode(), actor="alice", name="b.diff")
    company.transition(done.id, "reject", actor="alice", expected_version=company.get_task(done.id).version,
                       rationale="the lines are URLs")

    children = brief_of(company, "planner", parent.id)["children"]

    assert [c["id"] for c in children] == [open_child.id, done.id]
    first, second = children
    assert (first["open"], first["state"], first["desired_output"]) == (True, "found", "a patch for b.py")
    assert "result" not in first
    assert (second["open"], second["state"], second["title"]) == (False, "rejected", "b.py")
    assert second["result"]["fields"] == {"rule": "E501", "count": 3}
    [artifact] = second["result"]["artifacts"]
    assert (artifact["name"], artifact["kind"], artifact["version"]) == ("b.diff", "patch", 1)
    packet = brief_of(company, "planner", open_child.id)["task"]["packet"]
    assert packet["desired_output"] == "a patch for b.py" and packet["delegated_by"] == "alice"


def test_after_a_human_holds_edits_and_releases_the_agents_next_brief_has_the_handoff(company, new_task,
                                                                                     tmp_path):
    task = new_task()
    planner = Recorder({"artifacts": [{"kind": "patch", "name": "fix.diff", "content": V1}]}, {})
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": planner})
    [outcome] = dispatcher.cycle()  # the run ends: what the planner saw is kept
    assert outcome.outcome == "succeeded" and planner.briefs[0]["handoff"] is None
    assert brief_of(company, "planner", task.id)["handoff"] is None  # nothing changed since

    company.hold(task.id, actor="alice", note="taking a look")
    company.record_artifact(task.id, "patch", V2.encode(), actor="alice", name="fix.diff",
                            reason="one per line")
    company.edit_fields(task.id, {"rule": "E401"}, actor="alice", note="wrong rule")
    company.release_hold(task.id, actor="alice", note="it was E401, not E501")

    handoff = brief_of(company, "planner", task.id)["handoff"]
    assert handoff is not None and handoff["changed_by"] == ["alice"]
    assert handoff["fields"] == {"rule": {"before": "E501", "after": "E401"}}
    [artifact] = handoff["artifacts"]
    assert (artifact["name"], artifact["from_version"], artifact["to_version"], artifact["by"]) == (
        "fix.diff", 1, 2, "alice")
    lines = artifact["diff"].splitlines()
    assert "-import os, sys" in lines and "+import os" in lines and "+import sys" in lines
    notes = [(n["by"], n["note"]) for n in handoff["notes"]]
    assert ("alice", "it was E401, not E501") in notes and ("alice", "wrong rule") in notes
    assert brief_of(company, "builder", task.id)["handoff"] is None  # never looked: no hand-off

    [again] = dispatcher.cycle()  # the planner's next run is given the same hand-off, then has seen it
    assert again.task_id == task.id and planner.briefs[1]["handoff"]["fields"] == handoff["fields"]
    assert brief_of(company, "planner", task.id)["handoff"] is None


def test_a_brief_over_budget_or_a_corrupt_blob_is_never_retried_unchanged():
    from roster.errors import ContextOverBudget, CorruptArtifact
    from roster.kernel.failures import FailureCategory, classify

    for error in (ContextOverBudget("task", 900, 500, 200), CorruptArtifact("ab" * 32, "gone")):
        failure = classify(error)
        assert failure.category is FailureCategory.DETERMINISTIC and not failure.retryable
