"""Fitness from the record (issue 17, item 1), on SQLite and PostgreSQL: a transition counts as a success
only if it stuck through the settle window; rework, rejected approvals, human reverts under a hold and
failed checks each un-stick it and are counted apart, with escalations, contract rejections, crashes and
timeouts; cost per success counts every run's USD (unknown when one could not be priced); too few
outcomes answer "not enough evidence". Runs go through the real dispatcher and store; the runners are
small programs deciding from the brief they are given."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import js, ok
from sqlalchemy import select

from roster.runtime.dispatcher import Dispatcher
from roster.runtime.runners import RunResult, Usage
from roster.store.schema import corrections, runs

LANE = """\
company: acme
workflows:
  fix:
    states: [todo, built, verified, merged]
    initial: todo
    kpis: [defects]
    fields:
      branch: {type: string}
      reviewed: {type: boolean}
    transitions:
      build:  {from: todo, to: built, by: [builder], writes: [branch]}
      verify: {from: built, to: verified, by: [qa]}
      rework: {from: built, to: todo, by: [qa]}
      merge:  {from: verified, to: merged, by: [merger], approval: {by: [human]}}
agents:
  b1: {roles: [builder], tier: bounded-mutator}
  b2: {roles: [builder], tier: bounded-mutator}
  qa: {roles: [qa], tier: bounded-mutator}
  merger: {roles: [merger], tier: high-impact-executor}
humans:
  alice: {}
kpis:
  defects: {direction: down}
fitness: {settle: 1h, min_outcomes: 3}
"""


class Scripted:
    """A runner deciding from the brief: ``decide(task) -> result``; reports ``usage`` as its cost."""

    kind = "program"

    def __init__(self, decide: Callable[[dict], dict], usage: Usage | None = None) -> None:
        self.decide, self.last_usage, self.seen = decide, usage or Usage(), []

    def run(self, brief):  # noqa: ANN001, ANN201
        task = brief.data["task"]
        self.seen.append(task["id"])
        return RunResult.parse(self.decide(task))


def build(branch: str) -> Callable[[dict], dict]:
    return lambda task: {"transition": "build", "writes": {"branch": f"{branch}-{task['id']}"}}


def qa_once(task: dict) -> dict:
    """Rework a bad branch the first time it is seen; verify everything else."""
    bad = task["fields"].get("branch", "").startswith("bad")
    return {"transition": "rework" if bad and task["id"] not in qa_once.reworked else "verify"} | (
        qa_once.reworked.add(task["id"]) or {})


qa_once.reworked = set()  # type: ignore[attr-defined]


def rows(company, query) -> list:  # noqa: ANN001
    """What the database holds: ``query`` run on its own connection, closed after."""
    with company.store.engine.connect() as conn:
        return conn.execute(query).all()


def drain(dispatcher: Dispatcher, cycles: int = 20) -> None:
    for _ in range(cycles):
        if not dispatcher.cycle():
            return


@pytest.fixture
def lane(opened):
    qa_once.reworked = set()  # type: ignore[attr-defined]
    return opened(LANE)


def by_agent(report: dict, agent: str) -> dict:
    return next(a for a in report["agents"] if a["agent"] == agent)


def test_rework_unsticks_a_transition_and_only_settled_outcomes_count(lane, clock, tmp_path):
    """b1 builds well and b2 badly: QA sends b2's builds back once. Before the settle window passes nothing
    has settled but the reworked ones; after it, b1's builds are successes and b2's first builds are not."""
    for i in range(4):
        lane.create_task(workflow="fix", title=f"fix {i}", actor="alice")
    runners = {"b1": Scripted(build("good")), "b2": Scripted(build("bad")), "qa": Scripted(qa_once),
               "merger": Scripted(lambda task: {})}
    dispatcher = Dispatcher(lane, workdir=tmp_path, runners=runners, agents=["b1", "b2", "qa"])
    drain(dispatcher)
    dispatcher.close()

    found = rows(lane, select(corrections.c.agent, corrections.c.kind, corrections.c.by)
                 .where(corrections.c.company_id == "acme"))
    reworked = [r for r in found if r.kind == "rework"]
    assert reworked and {r.agent for r in reworked} == {"b2"} and {r.by for r in reworked} == {"qa"}

    fresh = lane.fitness()
    b2 = by_agent(fresh, "b2")
    assert b2["burden"]["rework"] == len(reworked)
    assert b2["unsettled"] >= 1 or b2["evidence"] == len(reworked)  # b2's rebuilt ones have not settled yet
    assert by_agent(fresh, "b1")["successes"] == 0  # nothing has stuck for an hour yet

    clock.advance(2 * 3600)
    report = lane.fitness()
    b1, b2 = by_agent(report, "b1"), by_agent(report, "b2")
    built_b1 = sum(1 for _ in runners["b1"].seen)
    assert b1["successes"] == built_b1 and b1["evidence"] == built_b1
    assert b2["evidence"] == len(runners["b2"].seen)
    assert b2["successes"] == b2["evidence"] - len(reworked)
    if b1["enough"]:
        assert b1["success_rate"] == 1.0
    qa = by_agent(report, "qa")
    assert qa["burden"]["rework"] == 0 and qa["successes"] == len(runners["qa"].seen)
    workflows = {w["workflow"]: w for w in b2["workflows"]}
    assert workflows["fix"]["transitions"][0]["transition"] == "build"


def test_too_few_outcomes_is_not_enough_evidence_never_a_rate(lane, clock, tmp_path):
    lane.create_task(workflow="fix", title="one", actor="alice")
    dispatcher = Dispatcher(lane, workdir=tmp_path, runners={"b1": Scripted(build("good"))}, agents=["b1"])
    drain(dispatcher)
    dispatcher.close()
    clock.advance(2 * 3600)
    b1 = by_agent(lane.fitness(), "b1")
    assert b1["evidence"] == 1 and b1["successes"] == 1
    assert b1["enough"] is False and b1["success_rate"] is None and b1["usd_per_success"] is None
    assert "not enough evidence: 1 settled outcome(s), 3 needed" in b1["reason"]


def test_rejected_approval_hold_revert_and_failed_check_are_corrections(lane, clock, tmp_path):
    """Each correction kind, made the way users make it: a human rejects the merge the merger asked for,
    edits under a hold a field the builder wrote, and QA records a failed check on a built task."""
    ids = [lane.create_task(workflow="fix", title=f"fix {i}", actor="alice")[0].id for i in range(3)]
    runners = {"b1": Scripted(build("good")), "qa": Scripted(lambda task: {"transition": "verify"}),
               "merger": Scripted(lambda task: {"transition": "merge"})}
    dispatcher = Dispatcher(lane, workdir=tmp_path, runners=runners, agents=["b1"])
    drain(dispatcher)  # all three built
    # a human takes over task 1 and rewrites the builder's branch: a revert
    lane.hold(ids[0], actor="alice")
    lane.edit_fields(ids[0], {"branch": "alice-fix"}, actor="alice", note="wrong base")
    lane.release_hold(ids[0], actor="alice")
    # another principal records a failed check on task 2, which sits where b1's build put it
    lane.record_check(ids[1], "tests", passed=False, actor="qa", detail="2 failures")
    dispatcher.close()
    qa_merger = Dispatcher(lane, workdir=tmp_path, runners=runners, agents=["qa", "merger"])
    drain(qa_merger)  # QA verifies all three; the merger asks for each merge
    qa_merger.close()
    waiting = [r[0] for r in rows(lane, select(runs.c.approval_id).where(
        runs.c.company_id == "acme", runs.c.agent == "merger", runs.c.outcome == "waiting"))]
    assert len(waiting) == 3 and all(waiting)
    lane.reject_request(waiting[0], actor="alice", note="not this week")
    lane.approve_request(waiting[1], actor="alice")

    clock.advance(2 * 3600)
    report = lane.fitness()
    b1, merger = by_agent(report, "b1"), by_agent(report, "merger")
    assert b1["burden"]["reverted"] == 1 and b1["burden"]["check_failed"] == 1
    assert b1["evidence"] == 3 and b1["successes"] == 1 and b1["success_rate"] == round(1 / 3, 4)
    assert merger["burden"]["rejected"] == 1
    # one merge approved (a success), one rejected (a miss), one still pending (unsettled)
    assert (merger["successes"], merger["evidence"], merger["unsettled"]) == (1, 2, 1)
    assert merger["enough"] is False
    kinds = rows(lane, select(corrections.c.kind, corrections.c.detail).where(corrections.c.company_id == "acme"))
    assert {k for k, _ in kinds} == {"reverted", "check_failed", "rejected"}
    assert any("not this week" in d for _, d in kinds)


def test_a_correction_after_the_settle_window_changes_nothing(lane, clock, tmp_path):
    task = lane.create_task(workflow="fix", title="late", actor="alice")[0]
    dispatcher = Dispatcher(lane, workdir=tmp_path, runners={"b1": Scripted(build("good"))}, agents=["b1"])
    drain(dispatcher)
    dispatcher.close()
    clock.advance(2 * 3600)  # settled
    moved = lane.get_task(task.id)
    lane.transition(task.id, "rework", actor="qa", expected_version=moved.version)
    assert by_agent(lane.fitness(), "b1")["successes"] == 1
    assert by_agent(lane.fitness(), "b1")["burden"]["rework"] == 0


def test_cost_per_success_counts_every_run_and_unknown_cost_stays_unknown(lane, clock, tmp_path):
    for i in range(4):
        lane.create_task(workflow="fix", title=f"fix {i}", actor="alice")
    cheap = Scripted(build("good"), Usage(model="acme:cheap", input_tokens=100, output_tokens=20, cost_usd=0.01))
    dispatcher = Dispatcher(lane, workdir=tmp_path, runners={"b1": cheap}, agents=["b1"])
    drain(dispatcher)
    dispatcher.close()
    clock.advance(2 * 3600)
    b1 = by_agent(lane.fitness(), "b1")
    assert b1["successes"] == 4 and b1["usd_per_success"] == pytest.approx(0.01)
    assert b1["tokens_per_success"] == 120
    models = {m["model"]: m for m in lane.fitness()["models"]}
    assert models["acme:cheap"]["successes"] == 4

    for i in range(3):
        lane.create_task(workflow="fix", title=f"more {i}", actor="alice")
    unpriced = Scripted(build("good"), Usage(model="acme:unknown", input_tokens=100, output_tokens=20, cost_usd=None))
    dispatcher = Dispatcher(lane, workdir=tmp_path, runners={"b1": unpriced}, agents=["b1"])
    drain(dispatcher)
    dispatcher.close()
    clock.advance(2 * 3600)
    b1 = by_agent(lane.fitness(), "b1")
    assert b1["successes"] == 7 and b1["unpriced_runs"] == 3
    assert b1["usd_per_success"] is None and b1["cost_usd"] is None and b1["priced_cost_usd"] == pytest.approx(0.04)


def test_failed_runs_count_as_misses_with_their_burden(lane, clock, tmp_path):
    """A result the contract refuses (a write the transition may not make) is a contract rejection, and
    a miss; the outcome is settled at once."""
    for i in range(3):
        lane.create_task(workflow="fix", title=f"fix {i}", actor="alice")
    bad = Scripted(lambda task: {"transition": "build", "writes": {"reviewed": True}})
    dispatcher = Dispatcher(lane, workdir=tmp_path, runners={"b2": bad}, agents=["b2"])
    drain(dispatcher, cycles=3)
    dispatcher.close()
    b2 = by_agent(lane.fitness(), "b2")
    assert b2["burden"]["contract_rejections"] == b2["runs"] >= 3
    assert b2["evidence"] == b2["failed"] == b2["runs"] and b2["successes"] == 0
    assert b2["success_rate"] == 0.0


def test_the_window_leaves_older_runs_out(lane, clock, tmp_path):
    for i in range(3):
        lane.create_task(workflow="fix", title=f"fix {i}", actor="alice")
    dispatcher = Dispatcher(lane, workdir=tmp_path, runners={"b1": Scripted(build("good"))}, agents=["b1"])
    drain(dispatcher)
    dispatcher.close()
    clock.advance(days=8)
    assert [a["agent"] for a in lane.fitness()["agents"]] == []
    assert by_agent(lane.fitness(window_seconds=30 * 86400), "b1")["successes"] == 3


def test_fitness_is_refused_to_an_agent_without_company_read(lane):
    from roster.errors import Denied

    with pytest.raises(Denied):
        lane.fitness(actor="b1")
    assert lane.fitness(actor="alice")["agents"] == []


# -- the command line ----------------------------------------------------------------------------------


def test_roster_fitness_reports_compares_and_refuses_a_bad_window(cli, db_url, monkeypatch, tmp_path):
    """Work done two hours ago (a store opened on a clock set back) has settled by the time the CLI reads
    it with the real clock."""
    from datetime import UTC, datetime, timedelta

    from conftest import ManualClock

    from roster.store import Store

    (cli.workspace / "roster.yaml").write_text(LANE)
    monkeypatch.setenv("ROSTER_DB", db_url)
    assert cli("apply").exit_code == 0
    store = Store.open(db_url, clock=ManualClock(datetime.now(UTC) - timedelta(hours=2)),
                       artifact_root=tmp_path / "art")
    company = store.company("acme")
    qa_once.reworked = set()  # type: ignore[attr-defined]
    for i in range(6):
        company.create_task(workflow="fix", title=f"fix {i}", actor="alice")
    runners = {"b1": Scripted(build("good"), Usage(model="acme:big", cost_usd=0.02)),
               "b2": Scripted(build("bad"), Usage(model="acme:small", cost_usd=0.005)), "qa": Scripted(qa_once)}
    dispatcher = Dispatcher(company, workdir=tmp_path, runners=runners, agents=["b1", "b2", "qa"])
    drain(dispatcher)
    dispatcher.close()
    store.close()

    report = js(cli("fitness", "--json"))
    agents = {a["agent"]: a for a in report["agents"]}
    assert set(agents) == {"b1", "b2", "qa"} and agents["b2"]["burden"]["rework"] >= 1
    assert agents["b1"]["success_rate"] == 1.0 and agents["b1"]["usd_per_success"] == pytest.approx(0.02)
    text = ok(cli("fitness", "b2"))
    assert "b2 on fix" in text and "build:" in text and "stuck" in text and "rework" in text
    side = js(cli("fitness", "--compare", "b1", "b2", "--json"))["compare"]
    assert [s["name"] for s in side] == ["b1", "b2"] and side[0]["success_rate"] > side[1]["success_rate"]
    models = js(cli("fitness", "--compare", "acme:big", "acme:small", "--json"))["compare"]
    assert [m["kind"] for m in models] == ["model", "model"]
    assert "USD/succ." in ok(cli("fitness", "--compare", "b1", "b2"))
    bad = cli("fitness", "--window", "a week")
    assert bad.exit_code == 2 and "is not a duration" in bad.output
    unknown = cli("fitness", "--compare", "b1", "nobody")
    assert unknown.exit_code == 2 and "has no runs in the window" in unknown.output
    missing = cli("fitness", "ghost")
    assert missing.exit_code != 0 and "ghost" in missing.output


def test_kpi_movement_after_successes_and_latency_are_reported(lane, clock, tmp_path):
    """Each success between two readings of the workflow's KPI counts the way the KPI moved (defects go
    down: toward the target); latency is the runs' wall time, p50 and p95."""
    import time

    lane.record_kpi("defects", 10, actor="alice")
    clock.advance(60)
    for i in range(3):
        lane.create_task(workflow="fix", title=f"fix {i}", actor="alice")

    def slow_build(task: dict) -> dict:
        time.sleep(0.05)
        return build("good")(task)

    dispatcher = Dispatcher(lane, workdir=tmp_path, runners={"b1": Scripted(slow_build)}, agents=["b1"])
    drain(dispatcher)
    dispatcher.close()
    clock.advance(60)
    lane.record_kpi("defects", 8, actor="alice")
    clock.advance(2 * 3600)
    b1 = by_agent(lane.fitness(), "b1")
    assert b1["kpis"] == {"defects": {"toward": 3, "away": 0, "unchanged": 0, "unmeasured": 0}}
    assert b1["workflows"][0]["kpis"] == b1["kpis"]
    assert b1["p95_seconds"] >= b1["p50_seconds"] >= 0.05
