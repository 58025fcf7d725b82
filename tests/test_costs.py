"""Honest costs (issue 14, item 4): a run that cannot be priced is recorded as cost unknown (never 0) in
the runs table, ``roster costs`` and budget status, and a USD budget over it warns once that it cannot be
enforced; a ``models:`` price in the spec prices it; a token budget trips and pauses the agent.

The model is the one stand-in: a local HTTP server on 127.0.0.1 speaking the OpenAI Chat Completions wire
format, answering with a decision and a fixed usage (120 tokens in, 30 out per request). The store is a
real SQLite file or a fresh schema on the real PostgreSQL; the CLI is the real one over that store."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import FIX_LINT, GOOD_SPEC, js, ok

from roster.runtime.dispatcher import Dispatcher
from roster.runtime.llm import OUTPUT_TOOL
from roster.runtime.runners import make_runner
from roster.specfile import parse_spec
from roster.store import Store

MODEL = "openai:acme-finetune-7b"  # a model genai-prices has no price for, behind a local server
IN, OUT = 120, 30
"""Tokens the server reports per request."""


class ChatCompletions(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)  # type: ignore[attr-defined]
        arguments = {"transition": "plan", "writes": {"spec": GOOD_SPEC}, "rationale": "clear"}
        reply = json.dumps({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None, "tool_calls": [{
                    "id": "call-1", "type": "function",
                    "function": {"name": OUTPUT_TOOL, "arguments": json.dumps(arguments)}}]}}],
            "usage": {"prompt_tokens": IN, "completion_tokens": OUT, "total_tokens": IN + OUT}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def chat_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatCompletions)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    with chat_server() as running:
        yield running


def spec_text(server: ThreadingHTTPServer, extra: str = "") -> str:
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    runner = f"runner: {{kind: llm, model: '{MODEL}', base_url: '{url}'}}"
    return FIX_LINT.replace("  planner: {reports_to: alice, tier: bounded-mutator}",
                            f"  planner: {{reports_to: alice, tier: bounded-mutator, {runner}}}") + extra


@pytest.fixture
def workspace(cli, db_url: str, monkeypatch: pytest.MonkeyPatch):
    """``setup(spec_text)``: the CLI's workspace on ``db_url`` with the spec applied; returns the store
    (opened by the test, closed at the end) and its company."""
    monkeypatch.setenv("ROSTER_DB", db_url)
    stores: list[Store] = []

    def setup(text: str):
        (cli.workspace / "roster.yaml").write_text(text, encoding="utf-8")
        ok(cli("apply"))
        store = Store.open(db_url, artifact_root=cli.workspace / ".roster" / "artifacts")
        stores.append(store)
        return store.company("acme")

    yield setup
    for store in stores:
        store.close()


def plan_tasks(company, count: int) -> None:  # noqa: ANN001
    for i in range(count):
        company.create_task(workflow="fix-lint", title=f"t{i}", actor="alice", fields={"rule": f"E{i}"})


def test_an_unpriced_model_is_cost_unknown_in_runs_costs_and_budgets_and_warns_once(cli, workspace, server,
                                                                                   tmp_path):
    company = workspace(spec_text(server, "budgets:\n  - {scope: 'agent:planner', usd: 1.0, period: day}\n"))
    plan_tasks(company, 2)
    logged: list[str] = []
    dispatcher = Dispatcher(company, workdir=tmp_path, log=logged.append)  # the runner is the spec's own
    dispatcher.cycle()
    dispatcher.cycle()
    assert len(server.requests) == 2 and server.requests[0]["model"] == "acme-finetune-7b"
    runs = company.list_runs()
    assert [(r.outcome, r.model, r.input_tokens, r.output_tokens, r.cost_usd) for r in runs] == [
        ("succeeded", MODEL, IN, OUT, None)] * 2  # unknown, not 0.0

    report = js(cli("costs", "--json"))
    [planner] = report["agents"]
    assert (planner["runs"], planner["cost_usd"], planner["unpriced_runs"], planner["cost_per_success_usd"],
            planner["input_tokens"]) == (2, None, 2, None, 2 * IN)
    [budget] = report["budgets"]
    assert (budget["spent_usd"], budget["unpriced_runs"], budget["level"]) == (None, 2, "unknown")
    text = " ".join(ok(cli("costs")).split())
    assert "planner 2 2 240 60 unknown unknown" in text
    assert "cost unknown: 2 run(s) could not be priced" in text
    assert "cost unknown of 1.00 USD" in text and "0.0000" not in text  # the table wraps the rest

    [warned] = company.audit_log(action="budget.unpriced")  # once, though two runs counted toward it
    assert (warned.principal, warned.data["scope"], warned.data["unpriced_runs"]) == ("system", "agent:planner", 1)
    assert "cannot be enforced" in warned.data["reason"] and "models:" in warned.data["reason"]
    assert sum("cannot be enforced" in line for line in logged) == 1
    assert company.get_principal("planner").status == "active"


def test_a_models_price_in_the_spec_prices_the_run(cli, workspace, server, tmp_path):
    prices = f"models:\n  '{MODEL}': {{input_mtok: 2.0, output_mtok: 10.0}}\n"
    company = workspace(spec_text(server, prices + "budgets:\n  - {scope: company, usd: 5.0, period: month}\n"))
    plan_tasks(company, 1)
    agent = company.spec().agents["planner"]
    runner = make_runner(agent.runner.model_dump(), workdir=tmp_path, prices=lambda: company.spec().models)
    Dispatcher(company, workdir=tmp_path, runners={"planner": runner}).cycle()
    expected = round((IN * 2.0 + OUT * 10.0) / 1_000_000, 6)
    [run] = company.list_runs()
    assert run.cost_usd == pytest.approx(expected)
    report = js(cli("costs", "--json"))
    assert (report["agents"][0]["cost_usd"], report["agents"][0]["unpriced_runs"]) == (pytest.approx(expected), 0)
    [budget] = report["budgets"]
    assert (budget["spent_usd"], budget["level"]) == (pytest.approx(expected), "ok")
    assert company.audit_log(action="budget.unpriced") == []


def test_a_models_price_overrides_genai_prices(server, tmp_path):
    from pydantic_ai.usage import RunUsage

    from roster.kernel.spec import ModelPrice
    from roster.runtime.llm import LLMRunner, compute_cost

    usage = RunUsage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert compute_cost(usage, "openai:gpt-4o-mini")[1]  # genai-prices knows it
    runner = LLMRunner({"kind": "llm", "model": "openai:gpt-4o-mini"})
    runner.prices = {"openai:gpt-4o-mini": ModelPrice(input_mtok=1.0, output_mtok=3.0)}
    runner._record_usage(usage)  # noqa: SLF001 - what a run records, without a paid request
    assert (runner.cost_usd, runner.cost_known, runner.last_usage.cost_usd) == (4.0, True, 4.0)


def test_roster_up_prices_runs_from_the_spec_models(workspace, server, tmp_path):
    company = workspace(spec_text(server, f"models:\n  '{MODEL}': {{input_mtok: 2.0, output_mtok: 10.0}}\n"))
    plan_tasks(company, 1)
    Dispatcher(company, workdir=tmp_path).cycle()  # the runner the dispatcher builds from the spec
    [run] = company.list_runs()
    assert run.cost_usd == pytest.approx((IN * 2.0 + OUT * 10.0) / 1_000_000)


def test_a_token_budget_trips_and_pauses_the_agent(cli, workspace, server, tmp_path):
    limit = 2 * (IN + OUT) + 10  # two runs fit under it, the third crosses it
    company = workspace(spec_text(server, f"budgets:\n  - {{scope: 'agent:planner', tokens: {limit}, "
                                          "period: day, warn_at: 0.5}\n"))
    plan_tasks(company, 5)
    dispatcher = Dispatcher(company, workdir=tmp_path)
    for _ in range(5):
        dispatcher.cycle()
    assert len(company.list_runs()) == 3 and len(server.requests) == 3  # then no further model call
    assert company.get_principal("planner").status == "paused"
    [stop] = company.audit_log(action="budget.exhausted")
    assert f"{3 * (IN + OUT)} of {limit} tokens" in stop.data["reason"]
    [warned] = company.audit_log(action="budget.warn")
    assert warned.data["unit"] == "tokens"
    assert company.audit_log(action="budget.unpriced") == []  # a token budget is enforceable, priced or not
    [budget] = js(cli("costs", "--json"))["budgets"]
    assert (budget["unit"], budget["spent_tokens"], budget["limit_tokens"], budget["level"]) == (
        "tokens", 3 * (IN + OUT), limit, "exhausted")


def test_a_budget_takes_exactly_one_of_usd_or_tokens():
    from roster.errors import SpecError

    for budget in ("{scope: company}", "{scope: company, usd: 1, tokens: 1000}"):
        with pytest.raises(SpecError, match="exactly one of 'usd'.*or 'tokens'"):
            parse_spec(FIX_LINT + f"budgets:\n  - {budget}\n")
    spec = parse_spec(FIX_LINT + "budgets:\n  - {scope: company, usd: 1}\n  - {scope: company, tokens: 1000}\n")
    assert [(b.unit, b.limit) for b in spec.budgets] == [("usd", 1.0), ("tokens", 1000.0)]


def test_the_demo_report_says_cost_unknown_not_zero(workspace, server, tmp_path):
    from roster.agency.demo import report

    company = workspace(spec_text(server))
    plan_tasks(company, 1)
    Dispatcher(company, workdir=tmp_path).cycle()
    lines = " ".join(report(company))
    assert "runs of planner: 1 (1 succeeded)" in lines
    assert "cost unknown (1 run(s) could not be priced)" in lines and "0.0000 USD" not in lines
