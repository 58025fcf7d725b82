"""The escalation ladder: self (retries), then a peer whose role fits, then a human; governance
failures go straight to a human, and the step says so."""

from __future__ import annotations

import pytest
from conftest import FIX_LINT

from roster.errors import Denied, UsageError
from roster.runtime.dispatcher import Dispatcher
from roster.runtime.runners import RunResult
from roster.specfile import parse_spec

TWO_PLANNERS = FIX_LINT.replace(
    "  builder:", "  planner2: {reports_to: alice, tier: bounded-mutator}\n  builder:").replace(
    "by: [planner]", "by: [planner, planner2]")


class Scripted:
    kind = "program"

    def __init__(self, result: dict) -> None:
        self.result = result
        self.calls = 0

    def run(self, brief) -> RunResult:  # noqa: ANN001
        self.calls += 1
        return RunResult.parse(self.result)


BAD_PLAN = {"transition": "plan", "writes": {"spec": "too short"}}
GOOD_PLAN = {"transition": "plan", "writes": {"spec": "Split the imports into one per line, as ruff says."}}


@pytest.fixture
def two(store, tmp_path):
    store.apply(parse_spec(TWO_PLANNERS), applied_by="alice")
    company = store.company("acme")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})
    return company, task


def test_a_deterministic_failure_goes_to_a_peer_whose_role_fits_then_to_a_human(two, tmp_path):
    company, task = two
    bad = Scripted(BAD_PLAN)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": bad, "planner2": Scripted(BAD_PLAN)})
    dispatcher.run_once("planner", task, trigger="test")
    [first] = company.list_escalations()
    assert (first.step, first.to, first.category) == ("peer", "planner2", "deterministic")
    assert "fields" in first.reason
    assert company.audit_log(action="escalation.peer")[-1].data["to"] == "planner2"
    # the peer sees the task now; the failed agent does not
    assert [t.id for t in company.pending_work("planner2")] == [task.id]
    assert company.pending_work("planner") == []
    dispatcher.cycle()
    human = company.list_escalations()[-1]
    assert (human.step, human.to, human.from_agent) == ("human", "human", "planner2")
    assert human.reason.startswith("no peer can take it")


def test_a_governance_failure_goes_straight_to_a_human(two, tmp_path):
    company, task = two
    # qa is named nowhere for plan: its result is a transition it has no right to take
    spec = TWO_PLANNERS.replace("reject: {from: [found, planned, built], to: rejected, by: [human]}",
                                "reject: {from: [found, planned, built], to: rejected, by: [human, planner]}")
    company.store.apply(parse_spec(spec.replace("planner: {reports_to: alice, tier: bounded-mutator}",
                                                "planner: {reports_to: alice, tier: bounded-mutator, "
                                                "rights: {transitions: [fix-lint.plan]}}")), applied_by="alice")
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": Scripted({"transition": "reject"})})
    outcome = dispatcher.run_once("planner", task, trigger="test")
    assert outcome.failure.category.value == "governance"
    [step] = company.list_escalations()
    assert (step.step, step.to) == ("human", "human")
    assert step.reason.startswith("governance failure, straight to a human")


def test_resolving_an_escalation_lets_the_agents_try_again(two, tmp_path):
    company, task = two
    runner = Scripted(BAD_PLAN)
    Dispatcher(company, workdir=tmp_path, runners={"planner": runner}).run_once("planner", task, trigger="test")
    [escalation] = company.list_escalations()
    with pytest.raises(Denied, match="oversee"):
        company.resolve_escalation(escalation.id, actor="planner", note="done")
    [refusal] = company.audit_log(action="escalation.resolve.rejected")
    assert refusal.principal == "planner" and refusal.data["error"]["error"] == "denied"
    with pytest.raises(UsageError):
        company.resolve_escalation(escalation.id, actor="alice", note=" ")
    company.resolve_escalation(escalation.id, actor="alice", note="fixed the worker's prompt")
    assert company.list_escalations() == []
    assert [t.id for t in company.pending_work("planner")] == [task.id]
    runner.result = GOOD_PLAN
    Dispatcher(company, workdir=tmp_path, runners={"planner": runner}).cycle()
    assert company.get_task(task.id).state == "planned"
    assert company.audit_log(action="escalation.resolve")[-1].principal == "alice"


def test_transient_failures_stay_with_the_agent_until_retries_run_out(two, tmp_path):
    company, task = two

    class Crashing:
        kind = "program"

        def run(self, brief):  # noqa: ANN001, ANN202
            raise RuntimeError("flaky")

    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": Crashing()}, max_attempts=2)
    dispatcher.run_once("planner", task, trigger="test")
    assert company.list_escalations() == []  # self first: a retry is scheduled
    dispatcher.run_once("planner", company.get_task(task.id), trigger="test")
    [step] = company.list_escalations()
    assert (step.step, step.to, step.category) == ("peer", "planner2", "transient")


def test_a_retrys_brief_says_what_failed_with_which_parameters_and_what_partly_succeeded(store, tmp_path):
    store.apply(parse_spec(FIX_LINT), applied_by="alice")
    company = store.company("acme")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})
    company.transition(task.id, "plan", actor="planner", expected_version=1,
                       writes={"spec": "Split the imports into one per line, as ruff says."})
    briefs = []

    class Builder:
        kind = "program"

        def run(self, brief):  # noqa: ANN001, ANN202
            briefs.append(brief.data)
            if len(briefs) == 1:  # saves its patch, then asks for a write outside the contract
                return RunResult.parse({"artifacts": [{"kind": "patch", "name": "fix.diff", "content": "x"}],
                                        "transition": "build", "writes": {"branch": "fix/e1", "spec": "mine"}})
            return RunResult.parse({"transition": "build", "writes": {"branch": "fix/e1"}})

    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"builder": Builder()})
    dispatcher.run_once("builder", company.get_task(task.id), trigger="test")
    [attempt] = company.attempts_of(task.id)
    assert attempt.last_attempt == {"code": "contract-violation", "transition": "build",
                                    "writes": {"branch": "fix/e1", "spec": "mine"},
                                    "saved": ["artifact patch 'fix.diff'"]}
    company.resolve_escalation(company.list_escalations()[0].id, actor="alice", note="try again")
    # resolving clears the blocker; the record of what was tried goes with it, so record one more failure
    dispatcher.run_once("builder", company.get_task(task.id), trigger="test")
    assert company.get_task(task.id).state == "built"
    assert briefs[1]["previous_failure"] is None


def test_the_next_brief_carries_the_previous_attempt(store, tmp_path):
    store.apply(parse_spec(FIX_LINT), applied_by="alice")
    company = store.company("acme")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})
    briefs = []

    class Flaky:
        kind = "program"

        def run(self, brief):  # noqa: ANN001, ANN202
            briefs.append(brief.data)
            if len(briefs) == 1:
                raise RuntimeError("lost the connection")
            return RunResult.parse(GOOD_PLAN)

    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": Flaky()})
    dispatcher.run_once("planner", company.get_task(task.id), trigger="test")
    dispatcher.run_once("planner", company.get_task(task.id), trigger="test")
    previous = briefs[1]["previous_failure"]
    assert (previous["category"], previous["code"]) == ("transient", "RuntimeError")
    assert "lost the connection" in previous["message"]
    assert previous["tried"] == {"transition": None, "writes": None} and previous["partly_succeeded"] == []
    assert company.get_task(task.id).state == "planned"
