"""What an ``llm`` agent is shown and what it can do, asserted on the model's actual request.

The model is the one stand-in: a pydantic-ai ``FunctionModel`` that records the messages it receives (the
instructions are the rendered brief), or a local HTTP server speaking the OpenAI wire format. Everything
else is real: the store (a SQLite file, or a fresh schema on the real PostgreSQL), the dispatcher, the
context assembler, the audit log.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import GOOD_SPEC
from pydantic_ai import models
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from test_llm_runner import completion, fake_openai

from roster.runtime import brief_text
from roster.runtime.context import ContextAssembler, Wakeup
from roster.runtime.dispatcher import Dispatcher
from roster.runtime.llm import OUTPUT_TOOL, LLMRunner
from roster.runtime.llm_tools import READ_TOOLS
from roster.specfile import parse_spec
from roster.store import Store

SPEC = """\
company: acme
workflows:
  fix-lint:
    states: [found, planned, built, rejected]
    initial: found
    fields:
      rule: {type: string}
      spec: {type: string, minLength: 20}
      count: {type: integer, minimum: 0}
    transitions:
      plan:   {from: found,   to: planned,  by: [planner], writes: [spec], requires: {fields: [rule]}}
      rework: {from: planned, to: found,    by: [human]}
      build:  {from: planned, to: built,    by: [builder], produces: [patch]}
      reject: {from: [found, planned], to: rejected, by: [human]}
agents:
  planner: {reports_to: alice, tier: bounded-mutator, rights: {create: ["*"]},
            mission: Turn lint findings into precise fix specs.}
  builder: {reports_to: alice, tier: bounded-mutator}
humans:
  alice: {display_name: Alice}
"""
PACKET = {"subproblem": "check the header of a.py", "desired_output": "a note on the header",
          "success_condition": "the header is described"}
NOTE = "The spec misses the file: name a.py and keep its licence header."
QUESTION = "Did you look at a.py before planning?"
LESSON = "E501 in generated files: fix the generator, not the output."


@pytest.fixture
def company(db_url, tmp_path):
    """The ``acme`` company of :data:`SPEC` on each backend (conftest's ``db_url``)."""
    store = Store.open(db_url, artifact_root=tmp_path / "art")
    store.apply(parse_spec(SPEC), applied_by="alice")
    yield store.company("acme")
    store.close()


@pytest.fixture(autouse=True)
def no_model_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "ALLOW_MODEL_REQUESTS", False)


class Model:
    """A scripted model: ``decide(instructions, info)`` returns the decision dict, or a tool call
    ``(name, arguments)`` to make first. Records every request it receives."""

    def __init__(self, decide) -> None:  # noqa: ANN001
        self.decide = decide
        self.requests: list[list[ModelMessage]] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.requests.append(list(messages))
        answer = self.decide(instructions_of(messages), messages, info)
        if isinstance(answer, tuple):
            return ModelResponse(parts=[ToolCallPart(answer[0], answer[1])])
        return ModelResponse(parts=[ToolCallPart(OUTPUT_TOOL, answer)])

    def runner(self, company) -> LLMRunner:  # noqa: ANN001
        return LLMRunner({"kind": "llm", "model": "offline"}, company=company,
                         authorize_tool=lambda t, a: company.record_tool_call(t, actor="planner", arguments=a),
                         model=FunctionModel(self, model_name="scripted-test-model"))


def instructions_of(messages: list[ModelMessage]) -> str:
    """The instructions of the latest request: what the model was shown as its brief."""
    requests = [m for m in messages if isinstance(m, ModelRequest)]
    return requests[-1].instructions or ""


def tool_returns(messages: list[ModelMessage]) -> dict[str, str]:
    return {part.tool_name: str(part.content) for m in messages if isinstance(m, ModelRequest)
            for part in m.parts if isinstance(part, ToolReturnPart)}


# -- 1. a task run shows every part ----------------------------------------------------------------


def test_the_model_is_shown_the_hand_off_and_its_messages_and_answers_both(company, tmp_path):
    task = company.create_task(workflow="fix-lint", title="fix E501 in a.py", actor="alice",
                               fields={"rule": "E501"})[0]
    company.record_artifact(task.id, "context", b"line one\n", actor="alice", name="context.md")
    company.remember(LESSON, actor="planner", kind="lesson")

    def first(instructions: str, messages, info) -> dict:  # noqa: ANN001
        return {"transition": "plan", "writes": {"spec": GOOD_SPEC}, "rationale": "first try"}

    model = Model(first)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": model.runner(company)})
    assert [o.outcome for o in dispatcher.cycle()] == ["succeeded"]

    # A human reworks it with a note, changes the context artifact, asks a question, delegates a check.
    company.record_artifact(task.id, "context", b"line one\nline two: keep the licence header\n", actor="alice",
                            name="context.md", reason="the header matters")
    task = company.get_task(task.id)
    company.transition(task.id, "rework", actor="alice", expected_version=task.version, rationale=NOTE)
    question = company.send_message("planner", QUESTION, actor="alice", task_id=task.id)
    child = company.delegate(task.id, actor="alice", workflow="fix-lint", title="describe the header of a.py",
                             packet=PACKET, fields={"rule": "E501"})

    def second(instructions: str, messages, info) -> dict:  # noqa: ANN001
        if f"Task {task.id} " not in instructions:  # the delegated child, planned plainly
            return {"transition": "plan", "writes": {"spec": GOOD_SPEC}}
        assert NOTE in instructions  # acts on the hand-off note
        return {"transition": "plan", "rationale": "named the file, as asked",
                "writes": {"spec": "Split the imports of a.py one per line; keep its licence header."},
                "messages": [{"to": "alice", "body": "Yes: a.py, and the header stays.",
                              "thread_id": question.thread_id}]}

    model.decide = second
    while dispatcher.cycle():
        pass

    shown = next(instructions_of(r) for r in model.requests if f"Task {task.id} " in instructions_of(r)
                 and NOTE in instructions_of(r))
    assert NOTE in shown  # the hand-off note
    assert "+line two: keep the licence header" in shown  # the artifact's diff
    assert "the header matters" in shown
    assert QUESTION in shown and f"thread {question.thread_id}" in shown  # the unread message
    assert LESSON in shown  # recalled memory
    assert "describe the header of a.py" in shown and PACKET["desired_output"] in shown  # the child
    assert "task.transition" in shown  # recent events
    assert "Turn lint findings into precise fix specs." in shown  # the mission

    # What the model decided reached the outside: the transition, and the reply in the question's thread.
    done = company.get_task(task.id)
    assert (done.state, done.fields["spec"]) == ("planned", "Split the imports of a.py one per line; keep its "
                                                            "licence header.")
    thread = company.thread(question.thread_id, actor="alice")
    assert [(m.sender, m.body) for m in thread] == [("alice", QUESTION), ("planner", "Yes: a.py, and the header stays.")]
    assert company.message_inbox(actor="planner", unread_only=True) == []  # shown, so read
    assert company.get_task(child.id).state == "planned"


def test_every_part_the_assembler_kept_is_in_the_rendered_brief(company, tmp_path):
    """Generic: each string value of each part of a real brief appears in the instructions, so a part
    added to the brief but not to the layout fails here."""
    task = company.create_task(workflow="fix-lint", title="fix E501 in a.py", actor="alice",
                               fields={"rule": "E501"})[0]
    company.record_artifact(task.id, "context", b"one\n", actor="alice", name="context.md")
    company.remember(LESSON, actor="planner", kind="lesson")
    assembler = ContextAssembler(company)
    Dispatcher(company, workdir=tmp_path, runners={"planner": Model(
        lambda *_: {"transition": "plan", "writes": {"spec": GOOD_SPEC}}).runner(company)}).cycle()
    company.record_artifact(task.id, "context", b"one\ntwo\n", actor="alice", name="context.md")
    company.transition(task.id, "rework", actor="alice", expected_version=company.get_task(task.id).version,
                       rationale=NOTE)
    company.send_message("planner", QUESTION, actor="alice", task_id=task.id)
    company.delegate(task.id, actor="alice", workflow="fix-lint", title="child", packet=PACKET)
    task = company.get_task(task.id)
    brief = assembler.brief("planner", task, Wakeup("run-x", 7, 2, (99,))).data
    text = brief_text.render(brief, [("read_artifact", "Read it.")], output_tool=OUTPUT_TOOL)

    for part in ("handoff", "children", "messages", "memory", "events", "queue"):
        assert brief.get(part), f"the test's brief should hold '{part}'"
    skipped = {"run_id", "fencing_token", "context", "tools", "company", "attempt"}
    for part, value in brief.items():
        if part in skipped:
            continue
        for leaf in _strings(value):
            assert leaf in text or json.dumps(leaf, ensure_ascii=False)[1:-1] in text, (part, leaf)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [line for line in value.splitlines() if len(line.strip()) > 3]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_what_the_budget_left_out_is_named_in_the_brief(company, tmp_path):
    text = brief_text.render({"agent": {"handle": "planner"}, "task": {"id": 1}, "transitions": [],
                              "context": {"budget": 900, "left_out": {"memory": 3, "events": 2}}},
                             [], output_tool=OUTPUT_TOOL)
    assert "Your token budget (900) left out: 2 item(s) of 'events', 3 item(s) of 'memory'" in text


# -- 2. a run without a task -----------------------------------------------------------------------


def test_a_message_run_says_why_and_its_answer_files_replies_and_remembers(company, tmp_path):
    question = company.send_message("planner", QUESTION, actor="alice")
    seen: dict[str, Any] = {}

    def decide(instructions: str, messages, info) -> dict:  # noqa: ANN001
        seen["instructions"] = instructions
        seen["schema"] = info.output_tools[0].parameters_json_schema
        return {"rationale": "answered", "messages": [{"to": "alice", "body": "Not yet.",
                                                       "thread_id": question.thread_id}],
                "memories": [{"kind": "lesson", "text": "Alice wants a.py checked first."}],
                "tasks": [{"workflow": "fix-lint", "title": "check a.py", "fields": {"rule": "E501"}}]}

    model = Model(decide)
    [outcome] = Dispatcher(company, workdir=tmp_path, runners={"planner": model.runner(company)}).cycle()

    assert (outcome.task_id, outcome.outcome, outcome.failure) == (None, "succeeded", None)
    shown = seen["instructions"]
    assert "You were woken without a task: 1 unread message(s)." in shown
    assert "task None" not in shown and "workflow 'None'" not in shown
    assert QUESTION in shown
    assert "'fix-lint'" in shown or '"fix-lint"' in shown  # the workflows it may file into
    assert {"tasks", "messages", "memories"} <= set(seen["schema"]["properties"])
    assert "transition" not in seen["schema"]["properties"]
    assert [m.body for m in company.thread(question.thread_id, actor="alice")] == [QUESTION, "Not yet."]
    assert [e.text for e in company.list_memory(actor="planner")] == ["Alice wants a.py checked first."]
    assert [t.title for t in company.list_tasks(actor="alice")] == ["check a.py"]
    assert company.message_inbox(actor="planner", unread_only=True) == []


def test_a_message_stays_unread_when_the_model_was_never_reached(company, tmp_path):
    """The model's server refuses the connection: nothing was shown, so nothing is marked read."""
    company.send_message("planner", QUESTION, actor="alice")
    runner = LLMRunner({"kind": "llm", "model": "openai:some-model", "base_url": "http://127.0.0.1:9/v1",
                        "max_retries": 0, "timeout": 5}, company=company)
    with models.override_allow_model_requests(True):
        [outcome] = Dispatcher(company, workdir=tmp_path, runners={"planner": runner}).cycle()
    assert outcome.outcome == "failed" and outcome.failure.category.value == "transient"
    assert runner.delivered is False
    assert [m.body for m in company.message_inbox(actor="planner", unread_only=True)] == [QUESTION]


# -- 3. read tools ---------------------------------------------------------------------------------


def test_read_tools_show_an_artifact_its_diff_and_the_inbox_as_the_agent(company, tmp_path):
    task = company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"})[0]
    company.record_artifact(task.id, "context", b"alpha\n", actor="alice", name="context.md")
    company.record_artifact(task.id, "context", b"alpha\nbeta\n", actor="alice", name="context.md")
    company.send_message("planner", "ping", actor="alice")
    calls = [("read_artifact", {"name": "context.md", "version": 1}), ("artifact_diff", {"name": "context.md"}),
             ("artifact_versions", {"name": "context.md"}), ("inbox", {}),
             ("read_artifact", {"name": "no-such.md"})]

    def decide(instructions: str, messages, info) -> Any:  # noqa: ANN001
        assert {t.name for t in info.function_tools} >= set(READ_TOOLS)
        done = sum(isinstance(p, ToolReturnPart) for m in messages if isinstance(m, ModelRequest) for p in m.parts)
        if done < len(calls):
            return calls[done]
        return {"transition": "plan", "writes": {"spec": GOOD_SPEC}}

    model = Model(decide)
    Dispatcher(company, workdir=tmp_path, runners={"planner": model.runner(company)}).cycle()

    last = model.requests[-1]
    answers = [str(p.content) for m in last if isinstance(m, ModelRequest) for p in m.parts
               if isinstance(p, ToolReturnPart)]
    assert answers[0].endswith("alpha\n") and "v1" in answers[0]
    assert "+beta" in answers[1]
    assert [v["version"] for v in json.loads(answers[2])] == [1, 2]
    assert json.loads(answers[3])[0]["body"] == "ping"
    assert "found nothing" in answers[4] and "no artifact named 'no-such.md'" in answers[4]
    assert company.get_task(task.id).state == "planned"


# -- 4. over the wire, from the spec ---------------------------------------------------------------


def test_the_wire_request_carries_the_brief_and_the_read_tools(tmp_path, monkeypatch):
    """An agent configured in the spec (base_url: a local OpenAI-compatible server): the request that
    reached the server holds the message and offers the read tools."""
    monkeypatch.setenv("ROSTER_TEST_LLM_KEY", "sk-test")
    with fake_openai(lambda n, body: (200, completion(n, tool=OUTPUT_TOOL, arguments={
            "transition": "plan", "writes": {"spec": GOOD_SPEC}}))) as fake:
        text = SPEC.replace("mission: Turn lint findings into precise fix specs.}",
                            "mission: Turn lint findings into precise fix specs., runner: {kind: llm, "
                            f"model: 'openai:some-model', base_url: '{fake.base_url}', "
                            "api_key_env: ROSTER_TEST_LLM_KEY}}")
        store = Store.open(f"sqlite:///{tmp_path / 'wire.db'}", artifact_root=tmp_path / "art")
        try:
            store.apply(parse_spec(text), applied_by="alice")
            company = store.company("acme")
            company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"})
            company.send_message("planner", QUESTION, actor="alice")
            outcomes = Dispatcher(company, workdir=tmp_path).cycle()
        finally:
            store.close()
    assert [o.outcome for o in outcomes] == ["succeeded"]
    body = fake.requests[0]["body"]
    system = " ".join(m["content"] for m in body["messages"] if m["role"] in ("system", "developer"))
    assert QUESTION in system and "## Your unread messages" in system
    assert {t["function"]["name"] for t in body["tools"]} >= {*READ_TOOLS, OUTPUT_TOOL}


# -- 5. a rejected approval reaches the requester --------------------------------------------------


def test_a_rejection_note_reaches_the_requesters_next_brief(company, tmp_path):
    store = company.store
    gated = SPEC.replace("writes: [spec], requires: {fields: [rule]}}",
                         "writes: [spec], requires: {fields: [rule]}, approval: {by: [human]}}")
    gated = gated.replace("planner: {reports_to: alice, tier: bounded-mutator",
                          "planner: {reports_to: alice, tier: high-impact-executor")  # may ask for approvals
    store.apply(parse_spec(gated), applied_by="alice")
    company = store.company("acme")
    task = company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"})[0]
    shown: list[str] = []

    def decide(instructions: str, messages, info) -> dict:  # noqa: ANN001
        shown.append(instructions)
        if "Rejected approvals" in instructions:
            return {"failure": {"category": "judgment", "reason": "waiting for the file name"}}
        return {"transition": "plan", "writes": {"spec": GOOD_SPEC}}

    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": Model(decide).runner(company)})
    assert [o.outcome for o in dispatcher.cycle()] == ["waiting"]
    [request] = company.inbox(actor="alice")
    company.reject_request(request.id, actor="alice", note="Name the file in the spec first.")

    # Nothing changed since the rejection: asking again is blocked, and the planner is not woken for it.
    unchanged = ContextAssembler(company).brief("planner", company.get_task(task.id), Wakeup("preview")).data
    [plan] = [t for t in unchanged["transitions"] if t["name"] == "plan"]
    assert [b["clause"] for b in plan["blocked"]] == ["approval", "approval.rejected"]
    assert dispatcher.cycle() == [] and len(shown) == 1

    # A human changes the task: the planner is woken and shown the note.
    company.record_artifact(task.id, "context", b"a.py\n", actor="alice", name="context.md")
    while dispatcher.cycle():
        pass
    assert len(shown) == 2
    assert "Name the file in the spec first." in shown[1] and f"request {request.id}" in shown[1]


def test_a_goal_run_shows_the_model_its_goal_check_spend_and_earlier_runs(company, tmp_path):
    """The goal loop's brief, as the model receives it: every string of the ``goal`` part is in the
    instructions, with the objective labelled as data and the check's verdict in words."""
    from roster.kernel.goals import GoalBudget, GoalCheck

    goal = company.set_goal("planner", "Keep the fix specs under review below three", actor="alice",
                            check=GoalCheck(command="false"), budget=GoalBudget(runs=5, usd=1.0))
    company.record_goal_check(goal.id, passed=False, evidence={"kind": "command", "exit_code": 1,
                                                               "output": "4 specs waiting"})
    brief = ContextAssembler(company).brief("planner", None, Wakeup("run-y", goal_id=goal.id)).data  # as the run's
    seen: list[str] = []

    def decide(instructions: str, messages, info) -> dict:  # noqa: ANN001
        seen.append(instructions)
        return {"rationale": "filed one", "tasks": [{"workflow": "fix-lint", "title": "review spec 1",
                                                     "fields": {"rule": "E501"}}]}

    [outcome] = Dispatcher(company, workdir=tmp_path, runners={"planner": Model(decide).runner(company)}).cycle()
    assert outcome.outcome == "succeeded"
    [shown] = seen
    assert "You were woken for your goal 1." in shown
    assert "Keep the fix specs under review below three" in shown
    assert "Its check: `false` exits 0; last result: not met (checked " in shown and "4 specs waiting" in shown
    for leaf in _strings(brief["goal"]):
        assert leaf in shown or json.dumps(leaf, ensure_ascii=False)[1:-1] in shown, leaf
    assert company.get_goal(goal.id, actor="alice").spend.runs == 1
