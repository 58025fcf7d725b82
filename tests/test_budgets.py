"""Cost and budgets: runs record what they cost; a soft threshold warns once; a full budget is a hard
stop that pauses the agent (or its portfolio, or every agent) with the reason and releases its leases."""

from __future__ import annotations

import pytest
from conftest import FIX_LINT, GOOD_SPEC

from roster.errors import SpecError
from roster.runtime.dispatcher import Dispatcher
from roster.runtime.runners import RunResult, Usage
from roster.specfile import parse_spec


class Priced:
    """A runner that reports a model's usage and cost, like the llm runner does."""

    kind = "llm"

    def __init__(self, cost: float) -> None:
        self.cost = cost
        self.calls = 0
        self.last_usage: Usage | None = None

    def run(self, brief) -> RunResult:  # noqa: ANN001
        self.calls += 1
        self.last_usage = Usage("openai:gpt-4o-mini", 1200, 300, self.cost)
        state = brief.data["task"]["state"]
        return RunResult.parse({"transition": "plan", "writes": {"spec": GOOD_SPEC}} if state == "found" else {})


def company_with(store, budgets: str):
    store.apply(parse_spec(FIX_LINT + budgets), applied_by="alice")
    return store.company("acme")


def test_runs_record_usage_and_costs_report_cost_per_success(store, tmp_path):
    company = company_with(store, "")
    for _ in range(2):
        company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})
    runner = Priced(0.25)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner})
    dispatcher.cycle()
    dispatcher.cycle()
    [run, _] = company.list_runs()
    assert (run.model, run.input_tokens, run.output_tokens, run.cost_usd) == ("openai:gpt-4o-mini", 1200, 300, 0.25)
    report = company.costs()
    [planner] = report["agents"]
    assert (planner["runs"], planner["successes"], planner["cost_usd"], planner["cost_per_success_usd"]) == (
        2, 2, 0.5, 0.25)
    assert report["portfolios"][0]["name"] == "default/default"


def test_a_soft_threshold_warns_once_per_period(store, tmp_path):
    company = company_with(store, "budgets:\n  - {scope: 'agent:planner', usd: 1.0, period: day, warn_at: 0.5}\n")
    for _ in range(3):
        company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": Priced(0.3)})
    for _ in range(3):
        dispatcher.cycle()
    warnings = company.audit_log(action="budget.warn")
    assert len(warnings) == 1 and warnings[0].data["scope"] == "agent:planner"
    assert company.get_principal("planner").status == "active"  # 0.9 of 1.0: warned, not stopped


def test_an_exhausted_agent_budget_mid_run_pauses_the_agent_and_releases_its_leases(store, tmp_path):
    company = company_with(store, "budgets:\n  - {scope: 'agent:planner', usd: 0.5, period: month}\n")
    first, _ = company.create_task(workflow="fix-lint", title="t1", actor="alice", fields={"rule": "E1"})
    company.create_task(workflow="fix-lint", title="t2", actor="alice", fields={"rule": "E2"})
    other, _ = company.create_task(workflow="fix-lint", title="t3", actor="alice", fields={"rule": "E3"})
    held = company.claim(other.id, actor="planner", run_id="elsewhere", ttl=600)
    runner = Priced(0.6)  # one run costs more than the whole budget
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner})
    dispatcher.run_once("planner", company.get_task(first.id), trigger="test")
    principal = company.get_principal("planner")
    assert principal.status == "paused"
    pause = company.audit_log(action="principal.pause")[-1]
    assert "hard stop" in pause.data["reason"] and pause.principal == "system"
    assert company.audit_log(action="budget.exhausted")[-1].data["scope"] == "agent:planner"
    assert all(lease.task_id != held.task_id for lease in company.leases())
    assert dispatcher.cycle() == [] and runner.calls == 1  # no further model call


def test_an_exhausted_company_budget_stops_every_agent_but_not_humans(store, tmp_path):
    company = company_with(store, "budgets:\n  - {scope: company, usd: 0.1, period: week}\n")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": Priced(0.2)})
    dispatcher.cycle()
    assert company.paused() == ["*"]
    assert dispatcher.cycle() == []
    assert company.transition(task.id, "reject", actor="alice", expected_version=2).state == "rejected"


@pytest.mark.parametrize("scope", ["agent:nobody", "portfolio:nowhere/x", "team"])
def test_a_budget_for_an_unknown_scope_is_a_spec_error(scope):
    with pytest.raises(SpecError, match="unknown budget scope"):
        parse_spec(FIX_LINT + f"budgets:\n  - {{scope: '{scope}', usd: 1}}\n")


def test_the_stop_rule_ends_retries_on_a_task_that_cost_too_much(store, tmp_path):
    company = company_with(store, "")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})

    class CostlyFlake(Priced):
        def run(self, brief):  # noqa: ANN001, ANN202
            super().run(brief)
            raise RuntimeError("the model lost its way")

    runner = CostlyFlake(0.4)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner}, max_attempts=10,
                            max_task_cost_usd=0.5)
    dispatcher.run_once("planner", company.get_task(task.id), trigger="test")
    dispatcher.run_once("planner", company.get_task(task.id), trigger="test")  # 0.8 USD spent now
    stopped = dispatcher.run_once("planner", company.get_task(task.id), trigger="test")
    assert stopped.outcome == "stopped" and stopped.failure.code == "cost-limit"
    assert runner.calls == 2  # the third attempt never reached the model
    [attempt] = company.attempts_of(task.id)
    assert "cost-limit" in attempt.blocked_reason
    assert company.list_escalations()[-1].category == "deterministic"


def test_a_portfolio_budget_at_100_percent_pauses_its_portfolio_only(store, tmp_path):
    company = company_with(store, "budgets:\n  - {scope: 'portfolio:default/default', usd: 0.1, period: day}\n")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})
    company.create_task(workflow="fix-lint", title="t2", actor="alice", fields={"rule": "E2"})
    runner = Priced(0.2)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner})
    dispatcher.cycle()
    assert company.paused() == ["default/default"]  # the portfolio, not the company nor the agent
    assert company.get_principal("planner").status == "active"
    assert "hard stop" in company.audit_log(action="budget.exhausted")[-1].data["reason"]
    assert dispatcher.cycle() == [] and runner.calls == 1  # no further model call in that portfolio


def test_a_warned_budget_shows_in_roster_status(cli, tmp_path):
    from conftest import js, ok

    from roster.store import Store

    ok(cli("init"))
    spec_path = cli.workspace / "roster.yaml"
    spec_path.write_text(spec_path.read_text(encoding="utf-8")
                         + "budgets:\n  - {scope: 'agent:planner', usd: 1.0, period: day, warn_at: 0.5}\n",
                         encoding="utf-8")
    ok(cli("apply"))
    store = Store.open(f"sqlite:///{cli.workspace / '.roster' / 'roster.db'}")
    try:
        company = store.company("example")
        company.create_task(workflow="fix-lint", title="t", actor="root", fields={"rule": "E1"})
        Dispatcher(company, workdir=cli.workspace, runners={"planner": Priced(0.6)}).cycle()
    finally:
        store.close()
    assert js(cli("status", "--json"))["budget_warnings"] == ["agent:planner per day: 0.6000 of 1.00 USD (warn)"]
    assert "budget: agent:planner per day: 0.6000 of 1.00 USD (warn)" in " ".join(ok(cli("status")).split())
    [budget] = js(cli("costs", "--json"))["budgets"]
    assert (budget["scope"], budget["level"], budget["spent_usd"]) == ("agent:planner", "warn", 0.6)
