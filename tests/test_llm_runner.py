"""The ``llm`` runner: structured decisions validated against the brief (and asked again when wrong), only
granted tools offered, each tool call authorised and audited by the real store, usage and cost, the
provider path over a real HTTP server speaking the OpenAI wire format, failure classification, and the
scripted offline model.

The only stand-in is the model: a pydantic-ai ``FunctionModel`` script, or a local HTTP server on
127.0.0.1 that this file starts. Nothing reaches the network: real model requests are refused
(``ALLOW_MODEL_REQUESTS = False``) except in the tests that talk to the local server."""

from __future__ import annotations

import json
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import FIX_LINT, GOOD_SPEC
from pydantic_ai import models
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RunUsage

from roster.errors import (
    Denied,
    MalformedOutput,
    RunnerCrashed,
    RunnerError,
    RunnerExit,
    RunnerTimeout,
    UsageError,
)
from roster.kernel.failures import FailureCategory, classify
from roster.kernel.spec import CompanySpec
from roster.runtime.llm import (
    OFFLINE_TAG,
    OUTPUT_TOOL,
    LLMRunner,
    compute_cost,
    default_script,
    offline_model,
)
from roster.runtime.runners import Brief, RunResult
from roster.specfile import parse_spec
from roster.store import CompanyStore

ECHO = json.dumps(f"{shlex.quote(sys.executable)} -c \"import json,sys; print('echo', json.load(sys.stdin))\"")
TOOLS_SPEC = FIX_LINT.replace(
    "  planner: {reports_to: alice, tier: bounded-mutator}",
    "  planner: {reports_to: alice, tier: bounded-mutator, mission: Turn lint findings into fix specs., "
    "tools: [lint, echo]}",
) + f"""\
tools:
  lint: {{description: Run the linter on a path and report findings}}
  echo: {{description: Echo the arguments back, command: {ECHO}}}
  deploy: {{description: Deploy to production}}
"""

PLAN = {"transition": "plan", "writes": {"spec": GOOD_SPEC}, "rationale": "the rule is clear"}


@pytest.fixture(autouse=True)
def no_model_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse real model requests unless a test allows them for its own 127.0.0.1 server."""
    monkeypatch.setattr(models, "ALLOW_MODEL_REQUESTS", False)


@pytest.fixture
def spec() -> CompanySpec:  # overrides conftest's: the planner is granted tools
    return parse_spec(TOOLS_SPEC)


@pytest.fixture
def task(company: CompanyStore):
    return company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"})[0]


def make_brief(company: CompanyStore, task, agent: str = "planner", *, tools: list[str] | None = None,
               previous_failure: dict | None = None) -> Brief:
    """The brief of a run, built from the real store the way the dispatcher builds it."""
    spec = company.spec()
    me = spec.agents[agent]
    workflow = spec.workflows[task.workflow]
    options = []
    for option in company.options(task.id, actor=agent):
        t = workflow.transitions[option.name]
        if task.state not in t.from_:
            continue
        options.append({"name": option.name, "to": option.to, "writes": list(t.writes),
                        "requires": t.requires.model_dump(), "produces": list(t.produces),
                        "approval": t.approval is not None,
                        "blocked": [{"clause": v.clause, "detail": v.detail} for v in option.blocked]})
    return Brief({
        "run_id": "run-1", "company": company.company,
        "agent": {"handle": agent, "role": me.role, "mission": me.mission},
        "task": {"id": task.id, "workflow": task.workflow, "state": task.state, "title": task.title,
                 "fields": task.fields, "version": task.version, "priority": task.priority, "owner": task.owner},
        "fields_schema": workflow.fields, "transitions": options,
        "tools": list(me.tools) if tools is None else tools,
        "fencing_token": 1, "attempt": 1, "previous_failure": previous_failure, "queue": [],
    })


class Script:
    """A FunctionModel function answering from a list, recording what each request showed the model."""

    def __init__(self, *answers: dict | Callable[[list[ModelMessage], AgentInfo], ModelResponse]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[list[ModelMessage], AgentInfo]] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.requests.append((list(messages), info))
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if callable(answer):
            return answer(messages, info)
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, answer)])

    def model(self) -> FunctionModel:
        return FunctionModel(self, model_name="scripted-test-model")


def runner_for(company: CompanyStore, script: Script | None = None, agent: str = "planner", **config) -> LLMRunner:
    return LLMRunner({"kind": "llm", "model": "offline", **config},
                     authorize_tool=lambda tool, arguments: company.record_tool_call(tool, actor=agent,
                                                                                     arguments=arguments),
                     tools=company.spec().tools, model=script.model() if script else None)


# -- structured output -----------------------------------------------------------------------------


def test_a_scripted_model_returns_the_transition_and_its_writes(company, task):
    script = Script(PLAN)
    runner = runner_for(company, script)
    result = runner.run(make_brief(company, task, previous_failure={"category": "transient",
                                                                     "message": "the model timed out"}))
    assert result == RunResult(transition="plan", writes={"spec": GOOD_SPEC}, rationale="the rule is clear")
    assert len(script.requests) == 1
    info = script.requests[0][1]
    assert [t.name for t in info.output_tools] == [OUTPUT_TOOL]
    assert not info.allow_text_output
    text = info.instructions
    for expected in ("'planner'", "Turn lint findings into fix specs.", "state 'found'", '"rule": "E501"',
                     "'plan' -> state 'planned'", "It may write: 'spec'", "It requires fields 'rule'",
                     "'reject'", "Blocked now by 'by'", "the model timed out", "'lint': Run the linter"):
        assert expected in text, expected
    schema = info.output_tools[0].parameters_json_schema
    assert schema["properties"]["transition"]["enum"] == ["plan", "reject", None]


@pytest.mark.parametrize("bad, complaint", [
    ({"transition": "merge", "writes": {}}, "transition 'merge' is not offered"),
    ({"transition": "plan", "writes": {"spec": GOOD_SPEC, "branch": "fix/e501"}}, "may write only 'spec'"),
    ({"transition": "plan", "writes": {"spec": "too short"}}, "field 'spec': 'too short' is too short"),
    ({"rationale": "no decision"}, "set 'transition' to one of 'plan', 'reject'"),
])
def test_an_invalid_answer_is_sent_back_and_the_second_answer_is_used(company, task, bad, complaint):
    script = Script(bad, PLAN)
    result = runner_for(company, script).run(make_brief(company, task))
    assert (result.transition, result.writes) == ("plan", {"spec": GOOD_SPEC})
    assert len(script.requests) == 2
    feedback = repr(script.requests[1][0][-1])
    assert complaint in feedback and "Your decision cannot be applied" in feedback


def test_two_invalid_answers_are_malformed_output(company, task):
    script = Script({"transition": "merge"}, {"transition": "plan", "writes": {"branch": "x"}})
    runner = runner_for(company, script)
    with pytest.raises(MalformedOutput) as caught:
        runner.run(make_brief(company, task))
    assert len(script.requests) == 2
    assert caught.value.category == "deterministic"
    assert classify(caught.value).category is FailureCategory.DETERMINISTIC
    assert runner.input_tokens > 0 and runner.output_tokens > 0  # usage is kept for a failed run too


def test_a_text_answer_instead_of_a_decision_is_asked_again(company, task):
    script = Script(lambda messages, info: ModelResponse(parts=[TextPart("I would plan it.")]), PLAN)
    assert runner_for(company, script).run(make_brief(company, task)).transition == "plan"
    assert len(script.requests) == 2


def test_a_reported_failure_becomes_the_result_failure(company, task):
    script = Script({"failure": {"category": "judgment", "reason": "the rule is ambiguous"},
                     "writes": {"spec": GOOD_SPEC}})
    result = runner_for(company, script).run(make_brief(company, task))
    assert result.transition is None and result.writes == {}
    assert (result.failure.category, result.failure.reason) == ("judgment", "the rule is ambiguous")


# -- tools -----------------------------------------------------------------------------------------


def test_only_the_granted_tools_are_registered(company, task):
    script = Script(PLAN)
    runner_for(company, script).run(make_brief(company, task, tools=["lint"]))
    info = script.requests[0][1]
    assert [t.name for t in info.function_tools] == ["lint"]
    assert info.function_tools[0].description == "Run the linter on a path and report findings"
    assert "deploy" not in {t.name for t in info.function_tools} | {t.name for t in info.output_tools}
    assert "deploy" not in info.instructions

    none = Script(PLAN)
    runner_for(company, none).run(make_brief(company, task, tools=[]))
    assert none.requests[0][1].function_tools == []


def test_a_tool_call_is_authorised_and_audited_through_the_store(company, task):
    call = ModelResponse(parts=[ToolCallPart("lint", {"path": "src/app.py"}, tool_call_id="call-1")])
    script = Script(lambda messages, info: call, PLAN)
    result = runner_for(company, script).run(make_brief(company, task))
    assert result.transition == "plan"
    events = company.audit_log(action="tool.call")
    assert [(e.principal, e.subject, e.data) for e in events] == [
        ("planner", "tool:lint", {"arguments": {"path": "src/app.py"}})]
    returned = repr(script.requests[1][0][-1])
    assert "authorised and recorded in the audit log" in returned and "no command" in returned


def test_a_tool_with_a_command_runs_it_after_the_check(company, task, tmp_path):
    call = ModelResponse(parts=[ToolCallPart("echo", {"word": "hello"}, tool_call_id="call-1")])
    script = Script(lambda messages, info: call, PLAN)
    runner = LLMRunner({"kind": "llm", "model": "offline"}, model=script.model(), workdir=tmp_path,
                       tools=company.spec().tools,
                       authorize_tool=lambda t, a: company.record_tool_call(t, actor="planner", arguments=a))
    assert runner.run(make_brief(company, task)).transition == "plan"
    returned = repr(script.requests[1][0][-1])
    assert "exited 0" in returned and "echo {'word': 'hello'}" in returned
    assert [e.subject for e in company.audit_log(action="tool.call")] == ["tool:echo"]


def test_a_denied_tool_call_stops_the_run_with_the_denial(company, task):
    call = ModelResponse(parts=[ToolCallPart("deploy", {"env": "prod"}, tool_call_id="call-1")])
    script = Script(lambda messages, info: call, PLAN)
    # The brief offers 'deploy' (as if the spec granted it), but the planner's rights do not allow it.
    with pytest.raises(Denied) as caught:
        runner_for(company, script).run(make_brief(company, task, tools=["deploy"]))
    assert caught.value.action == "call_tool"
    assert classify(caught.value).category is FailureCategory.GOVERNANCE
    assert len(script.requests) == 1  # the model was not asked again
    assert company.audit_log(action="tool.call") == []
    assert [e.subject for e in company.audit_log(action="tool.call.rejected")] == ["tool:deploy"]


def test_a_model_that_keeps_calling_tools_runs_out_of_requests(company, task):
    call = ModelResponse(parts=[ToolCallPart("lint", {"path": "src"})])
    script = Script(lambda messages, info: call)
    with pytest.raises(MalformedOutput, match="request_limit"):
        runner_for(company, script, max_requests=3).run(make_brief(company, task))
    assert len(script.requests) == 3
    assert len(company.audit_log(action="tool.call")) == 3  # every call that ran is on the record


def test_a_tool_call_without_an_authorize_callback_is_refused(company, task):
    call = ModelResponse(parts=[ToolCallPart("lint", {}, tool_call_id="call-1")])
    script = Script(lambda messages, info: call, PLAN)
    runner = LLMRunner({"kind": "llm", "model": "offline"}, model=script.model(), tools=company.spec().tools)
    with pytest.raises(RunnerExit, match="no authorize_tool callback"):
        runner.run(make_brief(company, task))
    assert company.audit_log(action="tool.call") == []


# -- usage and cost --------------------------------------------------------------------------------


def test_usage_is_recorded_and_an_unpriced_model_costs_nothing_known(company, task):
    runner = runner_for(company, Script(PLAN))
    runner.run(make_brief(company, task))
    assert runner.model_name == "scripted-test-model"
    assert runner.input_tokens > 0 and runner.output_tokens > 0 and runner.requests == 1
    assert (runner.cost_usd, runner.cost_known) == (0.0, False)


def test_cost_of_a_priced_model_comes_from_the_bundled_price_data():
    usage = RunUsage(input_tokens=1_000_000, output_tokens=1_000_000)
    cost, known = compute_cost(usage, "gpt-4o-mini")
    assert known and cost == pytest.approx(0.15 + 0.60)  # $0.15 / $0.60 per million tokens
    assert compute_cost(usage, "openai:gpt-4o-mini") == (cost, True)
    assert compute_cost(usage, "gpt-4o-mini", provider="openai") == (cost, True)
    assert compute_cost(usage, "no-such-model-anywhere") == (0.0, False)
    assert compute_cost(usage, "some-model", provider_api_url="http://127.0.0.1:1/v1") == (0.0, False)


# -- the offline model -----------------------------------------------------------------------------


def test_the_offline_model_is_scripted_and_says_so(company, task):
    runner = runner_for(company)
    result = runner.run(make_brief(company, task))
    assert result.transition == "plan"  # the first offered transition that is not blocked ('reject' is by human)
    assert "scripted" in result.rationale and OFFLINE_TAG in result.rationale
    assert result.writes["spec"].startswith("[offline scripted model]")
    assert len(result.writes["spec"]) >= 20  # long enough for the field's schema
    assert (runner.model_name, runner.cost_usd, runner.cost_known) == ("offline", 0.0, False)
    assert runner.input_tokens > 0


def test_the_offline_model_attaches_placeholder_artifacts_a_transition_produces(company, task):
    company.transition(task.id, "plan", actor="planner", expected_version=task.version, writes={"spec": GOOD_SPEC})
    planned = company.get_task(task.id)
    result = runner_for(company, agent="builder").run(make_brief(company, planned, agent="builder"))
    assert result.transition == "build"  # blocked only by its own 'produces', which the script satisfies
    assert [a.kind for a in result.artifacts] == ["patch"]
    assert result.artifacts[0].content.startswith("[offline scripted model]")


def test_the_offline_model_reports_a_scripted_failure_when_nothing_is_open(company, task):
    result = runner_for(company, agent="qa").run(make_brief(company, task, agent="qa"))
    assert result.transition is None
    assert result.failure.category == "judgment" and OFFLINE_TAG in result.failure.reason


def test_the_offline_model_takes_a_custom_script(company, task):
    runner = LLMRunner({"kind": "llm", "model": "offline"},
                       model=offline_model(lambda brief: {**PLAN, "rationale": f"task {brief['task']['id']}"}))
    assert runner.run(make_brief(company, task)).rationale == f"task {task.id}"
    assert default_script(make_brief(company, task).data)["transition"] == "plan"


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("config, complaint", [
    ({"kind": "llm"}, "model: Field required"),
    ({"kind": "llm", "model": "gpt-4o-mini"}, "expected 'provider:model'"),
    ({"kind": "llm", "model": "offline", "base_url": "http://127.0.0.1:1/v1"}, "offline model takes no"),
    ({"kind": "llm", "model": "openai:x", "timeout": 0}, "timeout"),
    ({"kind": "llm", "model": "openai:x", "temperature": 2}, "temperature: Extra inputs are not permitted"),
])
def test_a_bad_configuration_is_a_usage_error(config, complaint):
    with pytest.raises(UsageError, match=complaint):
        LLMRunner(config)


def test_a_missing_api_key_is_a_configuration_error_and_never_falls_back(company, task, monkeypatch):
    monkeypatch.delenv("ROSTER_TEST_NO_KEY", raising=False)
    runner = LLMRunner({"kind": "llm", "model": "openai:gpt-4o-mini", "api_key_env": "ROSTER_TEST_NO_KEY"})
    with pytest.raises(RunnerExit, match="configuration problem: the environment variable ROSTER_TEST_NO_KEY"):
        runner.run(make_brief(company, task))
    assert runner.input_tokens == 0


# -- the provider path, over a local OpenAI-compatible server ----------------------------------------


class FakeOpenAI:
    """An HTTP server on 127.0.0.1 that speaks the OpenAI Chat Completions wire format. ``respond(n, body)``
    returns ``(status, payload)`` for the n-th request (1-based), or sleeps; every request is logged."""

    def __init__(self, respond: Callable[[int, dict], tuple[int, dict]]) -> None:
        self.respond = respond
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "authorization": self.headers.get("Authorization"),
                                      "body": body})
                status, payload = fake.respond(len(fake.requests), body)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("retry-after-ms", "10")  # keep the SDK's retries quick
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (the timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def sleep(self, seconds: float) -> None:
        self.release.wait(seconds)


@contextmanager
def fake_openai(respond: Callable[[int, dict], tuple[int, dict]]) -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(respond)
    fake.thread.start()
    try:
        with models.override_allow_model_requests(True):
            yield fake
    finally:
        fake.release.set()
        fake.server.shutdown()
        fake.server.server_close()


def completion(n: int, *, tool: str, arguments: dict) -> dict:
    return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 1_700_000_000, "model": "some-model",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None,
                "tool_calls": [{"id": f"call-{n}", "type": "function",
                                "function": {"name": tool, "arguments": json.dumps(arguments)}}]}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}}


def error(status: int, code: str) -> tuple[int, dict]:
    return status, {"error": {"message": f"simulated {status}", "type": code, "code": code, "param": None}}


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ROSTER_TEST_LLM_KEY", "sk-roster-test")
    return "ROSTER_TEST_LLM_KEY"


def server_runner(company: CompanyStore, fake: FakeOpenAI, api_key: str, **config) -> LLMRunner:
    return LLMRunner({"kind": "llm", "model": "openai:some-model", "base_url": fake.base_url,
                      "api_key_env": api_key, **config},
                     authorize_tool=lambda t, a: company.record_tool_call(t, actor="planner", arguments=a),
                     tools=company.spec().tools)


def test_the_openai_wire_path_calls_a_granted_tool_then_decides(company, task, api_key):
    def respond(n: int, body: dict) -> tuple[int, dict]:
        if n == 1:
            return 200, completion(n, tool="lint", arguments={"path": "src"})
        return 200, completion(n, tool=OUTPUT_TOOL, arguments=PLAN)

    with fake_openai(respond) as fake:
        runner = server_runner(company, fake, api_key)
        result = runner.run(make_brief(company, task))
    assert result == RunResult(transition="plan", writes={"spec": GOOD_SPEC}, rationale="the rule is clear")
    assert [(e.principal, e.subject, e.data) for e in company.audit_log(action="tool.call")] == [
        ("planner", "tool:lint", {"arguments": {"path": "src"}})]
    assert len(fake.requests) == 2
    first = fake.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["authorization"] == "Bearer sk-roster-test"
    assert first["body"]["model"] == "some-model"
    offered = {t["function"]["name"] for t in first["body"]["tools"]}
    assert offered == {"lint", "echo", OUTPUT_TOOL} and "deploy" not in offered
    assert first["body"]["messages"][0]["role"] == "system"
    assert "Turn lint findings into fix specs." in first["body"]["messages"][0]["content"]
    tool_reply = fake.requests[1]["body"]["messages"][-1]
    assert tool_reply["role"] == "tool" and "authorised and recorded" in tool_reply["content"]
    assert (runner.model_name, runner.input_tokens, runner.output_tokens, runner.requests) == (
        "openai:some-model", 240, 60, 2)
    assert (runner.cost_usd, runner.cost_known) == (0.0, False)  # a local server's model has no known price


def test_rate_limits_and_server_errors_are_retried_then_transient(company, task, api_key):
    with fake_openai(lambda n, body: error(429, "rate_limit_exceeded") if n % 2 else error(500, "server_error")) \
            as fake:
        runner = server_runner(company, fake, api_key, max_retries=2)
        with pytest.raises(RunnerError) as caught:
            runner.run(make_brief(company, task))
    assert len(fake.requests) == 3  # one attempt and the SDK's two retries
    assert isinstance(caught.value, RunnerCrashed)
    assert "HTTP 429" in caught.value.message  # the third answer was a 429
    assert classify(caught.value).category is FailureCategory.TRANSIENT


def test_a_server_error_alone_is_transient_too(company, task, api_key):
    with fake_openai(lambda n, body: error(503, "unavailable")) as fake, \
            pytest.raises(RunnerCrashed, match="HTTP 503"):
        server_runner(company, fake, api_key, max_retries=1).run(make_brief(company, task))
    assert len(fake.requests) == 2


def test_a_bad_key_is_a_deterministic_configuration_error_without_fallback(company, task, api_key):
    with fake_openai(lambda n, body: error(401, "invalid_api_key")) as fake:
        runner = server_runner(company, fake, api_key)
        with pytest.raises(RunnerExit) as caught:
            runner.run(make_brief(company, task))
    assert len(fake.requests) == 1  # a 401 is not retried, and nothing else answered instead
    assert "configuration problem" in caught.value.message and "HTTP 401" in caught.value.message
    assert classify(caught.value).category is FailureCategory.DETERMINISTIC
    assert runner.model_name == "openai:some-model" and runner.input_tokens == 0


def test_an_unknown_model_is_a_configuration_error(company, task, api_key):
    with fake_openai(lambda n, body: error(404, "model_not_found")) as fake, \
            pytest.raises(RunnerExit, match="configuration problem.*HTTP 404"):
        server_runner(company, fake, api_key).run(make_brief(company, task))
    assert len(fake.requests) == 1


def test_a_server_that_never_answers_is_a_transient_timeout(company, task, api_key):
    def respond(n: int, body: dict) -> tuple[int, dict]:
        fake.sleep(10)
        return 200, completion(n, tool=OUTPUT_TOOL, arguments=PLAN)

    with fake_openai(respond) as fake:
        runner = server_runner(company, fake, api_key, timeout=1, max_retries=1)
        started = time.monotonic()
        with pytest.raises(RunnerTimeout) as caught:
            runner.run(make_brief(company, task))
        elapsed = time.monotonic() - started
    assert len(fake.requests) == 2  # one attempt and one retry, each cut at 1 s
    assert 2 <= elapsed < 8
    assert classify(caught.value).category is FailureCategory.TRANSIENT


def test_the_anthropic_path_uses_its_base_url_and_key(company, task, api_key):
    with fake_openai(lambda n, body: error(404, "not_found_error")) as fake:
        runner = LLMRunner({"kind": "llm", "model": "anthropic:claude-haiku-4-5", "api_key_env": api_key,
                            "base_url": fake.base_url.removesuffix("/v1")})
        with pytest.raises(RunnerExit, match="configuration problem.*HTTP 404"):
            runner.run(make_brief(company, task))
    assert [(r["path"], r["authorization"]) for r in fake.requests] == [("/v1/messages", "Bearer sk-roster-test")]
    assert fake.requests[0]["body"]["model"] == "claude-haiku-4-5"
    assert {t["name"] for t in fake.requests[0]["body"]["tools"]} == {"lint", "echo", OUTPUT_TOOL}


def test_exhausted_quota_is_a_configuration_error_even_as_a_429(company, task, api_key):
    # OpenAI sends an exhausted quota as HTTP 429 'insufficient_quota'; pydantic-ai reads it as
    # ModelQuotaExceededError: waiting does not help, so it is not transient.
    with fake_openai(lambda n, body: error(429, "insufficient_quota")) as fake, \
            pytest.raises(RunnerExit, match="configuration problem: the account behind model"):
        server_runner(company, fake, api_key, max_retries=0).run(make_brief(company, task))


def test_a_refused_connection_is_transient(company, task, api_key):
    fake = FakeOpenAI(lambda n, body: (200, {}))
    base_url = fake.base_url
    fake.server.server_close()  # nothing listens on the port any more
    runner = LLMRunner({"kind": "llm", "model": "openai:some-model", "base_url": base_url, "api_key_env": api_key,
                        "max_retries": 0})
    with models.override_allow_model_requests(True), pytest.raises(RunnerCrashed, match="unreachable"):
        runner.run(make_brief(company, task))


def test_real_model_requests_are_refused_unless_allowed(company, task, api_key):
    fake = FakeOpenAI(lambda n, body: (200, completion(n, tool=OUTPUT_TOOL, arguments=PLAN)))
    fake.thread.start()
    try:
        with pytest.raises(RunnerExit, match="ALLOW_MODEL_REQUESTS is False"):
            server_runner(company, fake, api_key).run(make_brief(company, task))
    finally:
        fake.server.shutdown()
        fake.server.server_close()
    assert fake.requests == []
