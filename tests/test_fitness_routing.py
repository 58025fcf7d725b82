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
