"""Fitness drives work (issue 17, item 2), on SQLite and PostgreSQL: in a pool of two builders sharing
``build``, one deliberately worse (QA sends every one of its builds back), the spec's
``selection: fitness-weighted`` shifts the pool's tasks to the better one once the evidence has settled,
keeps an exploration share for an agent without evidence, and the escalation ladder routes to the
fittest eligible peer, saying why. Same runs under least-loaded selection split the pool evenly."""

from __future__ import annotations

from collections import Counter

import pytest
from test_fitness import LANE, Scripted, build, drain

from roster.runtime.dispatcher import Dispatcher
from roster.runtime.selection import LeastLoaded

ROUTED = LANE.replace("fitness: {settle: 1h, min_outcomes: 3}",
                      "fitness: {settle: 1m, min_outcomes: 5, selection: fitness-weighted, exploration: 0.2}")
WITH_B3 = ROUTED.replace("  qa: {roles: [qa]", "  b3: {roles: [builder], tier: bounded-mutator}\n  qa: {roles: [qa]")


def qa_strict(task: dict) -> dict:
    """QA sends every bad branch back; verifies the rest."""
    return {"transition": "rework" if task["fields"].get("branch", "").startswith("bad") else "verify"}


def gather_evidence(company, clock, tmp_path, tasks: int = 16) -> None:  # noqa: ANN001
    """The pool works ``tasks`` tasks with QA behind it until each is verified; then the settle window
    passes."""
    for i in range(tasks):
        company.create_task(workflow="fix", title=f"evidence {i}", actor="alice")
    runners = {"b1": Scripted(build("good")), "b2": Scripted(build("bad")), "qa": Scripted(qa_strict)}
    dispatcher = Dispatcher(company, workdir=tmp_path, runners=runners, agents=["b1", "b2", "qa"])
    drain(dispatcher, cycles=200)
    dispatcher.close()
    clock.advance(600)


def traffic(company, tmp_path, tasks: int, agents=("b1", "b2"), selection=None) -> Counter:  # noqa: ANN001
    """Who builds each of ``tasks`` new tasks (no QA behind: each build is one task handed out)."""
    for i in range(tasks):
        company.create_task(workflow="fix", title=f"measured {i}", actor="alice")
    runners = {a: Scripted(build("good" if a != "b2" else "bad")) for a in agents}
    dispatcher = Dispatcher(company, workdir=tmp_path, runners=runners, agents=list(agents), selection=selection)
    drain(dispatcher, cycles=200)
    dispatcher.close()
    return Counter({a: len(r.seen) for a, r in runners.items()})


def test_traffic_shifts_to_the_fitter_builder(opened, clock, tmp_path):
    company = opened(ROUTED)
    gather_evidence(company, clock, tmp_path)
    report = {a["agent"]: a for a in company.fitness()["agents"]}
    assert report["b1"]["enough"] and report["b1"]["success_rate"] == 1.0
    assert report["b2"]["enough"] and report["b2"]["success_rate"] == 0.0
    assert report["b2"]["burden"]["rework"] == report["b2"]["evidence"]

    split = traffic(company, tmp_path, 40)
    assert sum(split.values()) == 40
    assert split["b1"] >= 34, split  # about 95% by reputation; b2 keeps a trickle of evidence
    assert 1 <= split["b2"] <= 6, split


def test_least_loaded_splits_the_same_pool_evenly(opened, clock, tmp_path):
    company = opened(ROUTED)
    gather_evidence(company, clock, tmp_path)
    split = traffic(company, tmp_path, 40, selection=LeastLoaded())
    assert abs(split["b1"] - split["b2"]) <= 2, split


def test_an_agent_without_evidence_gets_the_exploration_share(opened, clock, tmp_path):
    company = opened(WITH_B3)
    gather_evidence(company, clock, tmp_path)
    split = traffic(company, tmp_path, 50, agents=("b1", "b2", "b3"))
    assert sum(split.values()) == 50
    assert 7 <= split["b3"] <= 13, split  # exploration: 0.2 of the pool's tasks
    assert split["b1"] > 3 * split["b2"], split


def test_the_ladder_routes_to_the_fittest_peer_and_says_why(opened, clock, tmp_path):
    company = opened(WITH_B3)
    gather_evidence(company, clock, tmp_path)
    task = company.create_task(workflow="fix", title="stuck", actor="alice")[0]
    escalation = company.escalate(task.id, from_agent="b3", category="judgment", reason="cannot reproduce")
    assert escalation.step == "peer" and escalation.to == "b1"
    assert "the fittest of 2 eligible peers on fix" in escalation.reason
    assert "reputation" in escalation.reason and escalation.reason.startswith("cannot reproduce")


@pytest.mark.parametrize("selection", ["least-loaded", "fitness-weighted"])
def test_the_spec_names_the_policy_a_running_dispatcher_uses(opened, tmp_path, selection):
    company = opened(ROUTED.replace("selection: fitness-weighted", f"selection: {selection}"))
    company.create_task(workflow="fix", title="one", actor="alice")
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"b1": Scripted(build("good"))}, agents=["b1"])
    dispatcher.cycle()
    dispatcher.close()
    assert dispatcher.selection.name == selection


def test_the_brief_shows_peers_fittest_first_and_the_model_reads_them(opened, clock, tmp_path):
    """A task brief lists who else may act on the workflow with their reputation, and the LLM runner's
    actual request to the model carries that section."""
    from pydantic_ai.models.function import FunctionModel
    from test_llm_brief import Model, instructions_of

    from roster.runtime.llm import LLMRunner

    company = opened(WITH_B3)
    gather_evidence(company, clock, tmp_path)
    company.create_task(workflow="fix", title="for b3", actor="alice")
    model = Model(lambda instructions, messages, info: {"transition": "build", "writes": {"branch": "b3-x"}})
    runner = LLMRunner({"kind": "llm", "model": "offline"}, company=company,
                       authorize_tool=lambda t, a: company.record_tool_call(t, actor="b3", arguments=a),
                       model=FunctionModel(model, model_name="scripted-test-model"))
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"b3": runner}, agents=["b3"])
    dispatcher.cycle()
    dispatcher.close()
    assert model.requests
    shown = instructions_of(model.requests[0])
    assert "## Peers on this workflow" in shown
    section = shown.split("## Peers on this workflow")[1].split("## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("- ")]
    # every transition of QA stuck (16 verify and one rework per bad build); b1's builds all stuck; every
    # one of b2's was sent back
    import re

    assert [line.split(":")[0] for line in lines] == ["- qa", "- b1", "- b2", "- merger"]  # merger: no record
    assert re.search(r"\((\d+) of \1 settled outcome\(s\) stuck\); may take 'rework', 'verify'", lines[0])
    assert lines[1].startswith("- b1: reputation 0.") and "may take 'build'" in lines[1]
    assert re.match(r"- b2: reputation 0\.00 \(0 of [1-9]", lines[2])
