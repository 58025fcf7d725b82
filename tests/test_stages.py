"""Autonomy stages (issue 17, item 3), on SQLite and PostgreSQL: the spec's ``stage`` and a human's
``roster stage --set`` decide what an agent's transitions may do on a workflow. A shadow agent can
neither claim nor move a task (the store refuses, audited, and nothing is applied); an assist agent's
every transition waits for a human's approval and then runs; criteria naming unknown metrics or
workflows are refused with file and line."""

from __future__ import annotations

import pytest
from conftest import js, ok
from sqlalchemy import select
from test_fitness import LANE, Scripted, build, drain, rows

from roster.errors import ApprovalPending, Denied, UsageError
from roster.runtime.dispatcher import Dispatcher
from roster.store.schema import audit_events, runs

STAGED = LANE.replace("  b2: {roles: [builder], tier: bounded-mutator}",
                      "  b2: {roles: [builder], tier: bounded-mutator, stage: {fix: shadow}}")


def test_a_shadow_agent_may_neither_claim_nor_move_and_is_never_offered_a_task(opened, tmp_path):
    company = opened(STAGED)
    task = company.create_task(workflow="fix", title="one", actor="alice")[0]
    with pytest.raises(Denied, match="stage 'shadow'"):
        company.claim(task.id, actor="b2", run_id="r1")
    with pytest.raises(Denied, match="never applied"):
        company.transition(task.id, "build", actor="b2", expected_version=task.version, writes={"branch": "x"})
    assert company.get_task(task.id).state == "todo"
    actions = [r[0] for r in rows(company, select(audit_events.c.action).where(
        audit_events.c.company_id == "acme", audit_events.c.principal == "b2"))]
    assert actions == ["lease.claim.rejected", "task.transition.rejected"]
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"b2": Scripted(build("x"))}, agents=["b2"])
    assert dispatcher.cycle() == []
    dispatcher.close()
    assert rows(company, select(runs.c.id).where(runs.c.company_id == "acme")) == []
    assert company.stages(agent="b2") == [{"agent": "b2", "workflow": "fix", "stage": "shadow", "source": "spec",
                                           "set_by": None, "set_at": None, "reason": "", "evidence": {}}]


def test_an_assist_agent_waits_for_a_human_on_every_transition(opened, tmp_path):
    company = opened(LANE)
    shown = company.set_stage("b1", "assist", workflow="fix", reason="new model, watch it", actor="alice")
    assert (shown["stage"], shown["source"], shown["set_by"]) == ("assist", "human", "alice")
    task = company.create_task(workflow="fix", title="one", actor="alice")[0]
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"b1": Scripted(build("good"))}, agents=["b1"])
    [outcome] = dispatcher.cycle()
    dispatcher.close()
    assert outcome.outcome == "waiting" and company.get_task(task.id).state == "todo"
    [request] = company.inbox(actor="alice")
    assert request.evidence["stage"] == "assist" and request.transition == "build"
    company.approve_request(request.id, actor="alice")
    moved = company.get_task(task.id)
    assert moved.state == "built" and moved.fields["branch"] == f"good-{task.id}"
    [event] = company.audit_log(action="task.transition")
    assert event.principal == "b1" and event.data["approved_by"] == "alice"
    assert company.approval_stats() == []  # an assist agent's approvals are not review volume of a spec edge
    # back to bounded: the next move needs nobody
    company.set_stage("b1", "bounded", reason="it held up", actor="alice")
    other = company.create_task(workflow="fix", title="two", actor="alice")[0]
    company.transition(other.id, "build", actor="b1", expected_version=other.version, writes={"branch": "b"})
    assert company.get_task(other.id).state == "built"


def test_setting_a_stage_is_for_admins_is_audited_and_says_what_is_wrong(opened):
    company = opened(LANE)
    with pytest.raises(Denied):
        company.set_stage("b1", "autonomous", reason="I am great", actor="b1")
    with pytest.raises(UsageError, match="unknown stage 'trusted'; expected one of shadow, assist, bounded"):
        company.set_stage("b1", "trusted", reason="x", actor="alice")
    with pytest.raises(UsageError, match="needs a reason"):
        company.set_stage("b1", "assist", reason=" ", actor="alice")
    company.set_stage("b1", "shadow", reason="trial", actor="alice")  # every workflow
    [event] = company.audit_log(action="stage.set")
    assert (event.principal, event.subject, event.data["from"], event.data["to"], event.data["workflow"]) == (
        "alice", "principal:b1", "bounded", "shadow", "*")
    task = company.create_task(workflow="fix", title="one", actor="alice")[0]
    with pytest.raises(Denied):
        company.transition(task.id, "build", actor="b1", expected_version=task.version, writes={"branch": "x"})
    company.set_stage("b1", "bounded", workflow="fix", reason="fix is fine", actor="alice")  # per workflow wins
    company.transition(task.id, "build", actor="b1", expected_version=task.version, writes={"branch": "x"})
    rejected = company.audit_log(action="stage.set.rejected")
    assert [e.principal for e in rejected] == ["b1"]  # the denial; malformed input is refused before it


def test_roster_stage_shows_and_sets(cli, db_url, monkeypatch):
    (cli.workspace / "roster.yaml").write_text(STAGED)
    monkeypatch.setenv("ROSTER_DB", db_url)
    assert cli("apply").exit_code == 0
    listed = js(cli("stage", "--json"))
    assert {(s["agent"], s["workflow"], s["stage"]) for s in listed} >= {("b2", "fix", "shadow"), ("b1", "fix", "bounded")}
    assert "shadow" in ok(cli("stage", "b2"))
    moved = js(cli("stage", "b2", "fix", "--set", "assist", "--reason", "agreed 19 of 20", "--json"))
    assert (moved["stage"], moved["source"]) == ("assist", "human")
    bad = cli("stage", "b2", "fix", "--set", "boss", "--reason", "x")
    assert bad.exit_code == 2 and "unknown stage 'boss'" in bad.output
    missing = cli("stage", "b2", "fix", "--set", "bounded")
    assert missing.exit_code == 2 and "--reason" in missing.output


def test_criteria_with_an_unknown_metric_or_workflow_are_refused_with_file_and_line(cli):
    spec = cli.workspace / "roster.yaml"
    spec.write_text(LANE.replace("fitness: {settle: 1h, min_outcomes: 3}",
                                 "fitness:\n  promote:\n    - {metric: succes_rate, at_least: 0.9}\n"))
    result = cli("validate")
    assert result.exit_code == 3
    assert "roster.yaml:26: fitness.promote[0].metric" in result.output and "succes_rate" in result.output
    spec.write_text(LANE.replace("  b1: {roles: [builder], tier: bounded-mutator}",
                                 "  b1: {roles: [builder], tier: bounded-mutator, stage: {fixes: shadow}}"))
    result = cli("validate")
    assert result.exit_code == 3 and "roster.yaml:16: agents.b1.stage.fixes: unknown workflow 'fixes'" in result.output
    spec.write_text(LANE.replace("fitness: {settle: 1h, min_outcomes: 3}",
                                 "fitness:\n  demote: [{metric: success_rate, below: 0.7, above: 0.9}]\n"))
    result = cli("validate")
    assert result.exit_code == 3 and "give exactly one of at_least, below or above" in result.output


# -- shadow runs -------------------------------------------------------------------------------------


class Slow(Scripted):
    """A Scripted runner that takes ``seconds`` first."""

    def __init__(self, decide, seconds: float) -> None:  # noqa: ANN001
        super().__init__(decide)
        self.seconds = seconds

    def run(self, brief):  # noqa: ANN001, ANN201
        import time

        time.sleep(self.seconds)
        return super().run(brief)


def shadow_proposal(task: dict) -> dict:
    """What b2 (in shadow) would do: the owner's move on even tasks, a different branch on odd ones."""
    return {"transition": "build", "writes": {"branch": f"{'good' if task['id'] % 2 == 0 else 'other'}-{task['id']}"}}


@pytest.mark.parametrize("slow", ["owner", "shadow"])
def test_a_shadow_runs_beside_the_owner_is_compared_and_never_applied(opened, tmp_path, slow):
    """b2 is in shadow on fix: it runs on each task b1 takes, sees what b1's brief showed, and proposes a
    move the contract would take. Nothing of it is applied or audited as a transition; its proposals are
    compared with b1's actual moves (whichever of the two ends first) and its fitness is that agreement."""
    company = opened(STAGED)
    ids = [company.create_task(workflow="fix", title=f"fix {i}", actor="alice")[0].id for i in range(4)]
    owner = Slow(build("good"), 0.4) if slow == "owner" else Scripted(build("good"))
    shadow = Slow(shadow_proposal, 0.4) if slow == "shadow" else Scripted(shadow_proposal)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"b1": owner, "b2": shadow}, agents=["b1", "b2"])
    drain(dispatcher)
    dispatcher.close()
    assert sorted(owner.seen) == ids and sorted(shadow.seen) == ids
    for task_id in ids:
        task = company.get_task(task_id)
        assert task.state == "built" and task.fields["branch"] == f"good-{task_id}"  # b1's move, never b2's
    moved_by = {e.principal for e in company.audit_log(action="task.transition")}
    assert moved_by == {"b1"}
    assert not [e for e in company.audit_log(principal="b2") if e.action.startswith(("task.", "artifact.", "check."))]
    found = rows(company, select(runs.c.task_id, runs.c.trigger, runs.c.outcome, runs.c.proposal, runs.c.agreed)
                 .where(runs.c.company_id == "acme", runs.c.agent == "b2"))
    assert len(found) == 4 and {r.outcome for r in found} == {"shadow"}
    owner_runs = {r.task_id: r.id for r in rows(company, select(runs.c.task_id, runs.c.id).where(
        runs.c.company_id == "acme", runs.c.agent == "b1"))}
    for r in found:
        import json

        proposal = json.loads(r.proposal)
        assert r.trigger == f"shadow of run {owner_runs[r.task_id]}"
        assert proposal["valid"] is True and proposal["state"] == "todo"  # the contract would have taken it
        assert bool(r.agreed) == (r.task_id % 2 == 0), (slow, r)
    b2 = next(a for a in company.fitness()["agents"] if a["agent"] == "b2")
    assert (b2["evidence"], b2["successes"], b2["unsettled"]) == (4, 2, 0)
    assert company.verify_audit()[1] is None


def test_a_shadow_stage_set_while_running_starts_shadowing_and_a_human_promotes_it(opened, tmp_path):
    company = opened(LANE)
    company.set_stage("b2", "shadow", workflow="fix", reason="trial of a new model", actor="alice")
    company.create_task(workflow="fix", title="one", actor="alice")
    shadow = Scripted(build("good"))
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"b1": Scripted(build("good")), "b2": shadow},
                            agents=["b1", "b2"])
    drain(dispatcher)
    assert len(shadow.seen) == 1
    company.set_stage("b2", "assist", workflow="fix", reason="agreed on its trial", actor="alice")
    second = company.create_task(workflow="fix", title="two", actor="alice")[0]
    dispatcher.cycle()
    dispatcher.close()
    # no longer a shadow: b2 is offered work of its own again (an assist move waits for a human)
    touched = {r.agent for r in rows(company, select(runs.c.agent).where(runs.c.company_id == "acme",
                                                                         runs.c.task_id == second.id))}
    assert touched and "b2" not in {r.agent for r in rows(company, select(runs.c.agent).where(
        runs.c.company_id == "acme", runs.c.task_id == second.id, runs.c.outcome == "shadow"))}


# -- selection pressure: the criteria ----------------------------------------------------------------

PRESSURE = LANE.replace("fitness: {settle: 1h, min_outcomes: 3}", """fitness:
  settle: 1m
  min_outcomes: 5
  retire_after: 2
  promote: [{metric: outcomes, at_least: 5}, {metric: success_rate, at_least: 0.9}]
  demote: [{metric: success_rate, below: 0.7}]""")


def qa_strict(task: dict) -> dict:
    return {"transition": "rework" if task["fields"].get("branch", "").startswith("bad") else "verify"}


def work(company, clock, tmp_path, builders: dict, tasks: int = 8) -> None:  # noqa: ANN001
    """``tasks`` new tasks through the builders and a strict QA, then past the settle window."""
    for i in range(tasks):
        company.create_task(workflow="fix", title=f"work {i}", actor="alice")
    runners = {**builders, "qa": Scripted(qa_strict)}
    dispatcher = Dispatcher(company, workdir=tmp_path, runners=runners, agents=list(runners))
    drain(dispatcher, cycles=200)
    dispatcher.close()
    clock.advance(600)


def test_a_breach_demotes_a_human_reverses_it_and_only_new_evidence_demotes_again(opened, clock, tmp_path):
    company = opened(PRESSURE)
    work(company, clock, tmp_path, {"b1": Scripted(build("good")), "b2": Scripted(build("bad"))})
    done = {(d["agent"], d["move"]) for d in company.judge_stages()}
    assert ("b2", "demote") in done and ("b1", "promote") in done and ("qa", "promote") in done
    [stage] = company.stages(agent="b2")
    assert (stage["stage"], stage["source"]) == ("assist", "criteria")
    assert "breached success_rate < 0.7" in stage["reason"] and stage["evidence"]["metrics"]["success_rate"] == 0.0
    [demoted] = company.audit_log(action="stage.demote")
    assert (demoted.principal, demoted.data["from"], demoted.data["to"]) == ("system", "bounded", "assist")
    told = {(e.category, e.from_agent): e for e in company.list_escalations() if e.task_id is None}
    demotion = told[("demotion", "b2")]
    assert "roster stage b2 fix --set bounded" in demotion.reason and demotion.to == "human"
    assert "b1 meets the expansion criteria on fix for autonomous" in told[("promotion", "b1")].reason
    assert "days_without_rejection 0.01" in told[("promotion", "b1")].reason  # its record began 10 minutes ago
    assert company.judge_stages() == []  # nothing new: no second demotion, the promotion already proposed

    company.set_stage("b2", "bounded", workflow="fix", reason="the failures were the old spec's", actor="alice")
    assert company.judge_stages() == []  # the human's call sticks: no evidence since it
    assert company.stages(agent="b2")[0]["stage"] == "bounded"
    work(company, clock, tmp_path, {"b2": Scripted(build("bad"))}, tasks=6)  # new evidence, as bad as before
    assert ("b2", "demote") in {(d["agent"], d["move"]) for d in company.judge_stages()}
    assert company.stages(agent="b2")[0]["stage"] == "assist"


def test_an_agent_unfit_in_shadow_gets_a_retirement_proposal(opened, clock, tmp_path):
    company = opened(PRESSURE.replace("  b2: {roles: [builder], tier: bounded-mutator}",
                                      "  b2: {roles: [builder], tier: bounded-mutator, stage: shadow}"))
    differ = Scripted(lambda task: {"transition": "build", "writes": {"branch": f"elsewhere-{task['id']}"}})
    work(company, clock, tmp_path, {"b1": Scripted(build("good")), "b2": differ}, tasks=6)
    assert [d["move"] for d in company.judge_stages() if d["agent"] == "b2"] == ["breach"]
    work(company, clock, tmp_path, {"b1": Scripted(build("good")), "b2": differ}, tasks=6)
    assert [d["move"] for d in company.judge_stages() if d["agent"] == "b2"] == ["retire"]
    [retire] = [e for e in company.list_escalations() if e.category == "retirement"]
    assert retire.from_agent == "b2" and "2 breach(es) in shadow" in retire.reason
    assert "roster principal status b2 retired" in retire.reason
    assert company.stages(agent="b2")[0]["stage"] == "shadow"


def test_roster_up_judges_the_criteria_on_its_schedule(opened, clock, tmp_path):
    company = opened(PRESSURE)
    work(company, clock, tmp_path, {"b1": Scripted(build("good")), "b2": Scripted(build("bad"))})
    # the lane's dispatchers judged at their first cycle (no evidence yet): the next judgement is an hour on
    assert company.audit_log(action="stage.demote") == []
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"b1": Scripted(build("good"))}, agents=["b1"])
    dispatcher.cycle()
    assert company.audit_log(action="stage.demote") == []
    clock.advance(3600)
    dispatcher.cycle()  # the leader's periodic jobs: the criteria are due
    dispatcher.close()
    assert [e.data["to"] for e in company.audit_log(action="stage.demote")] == ["assist"]


# -- relaxable approval edges ------------------------------------------------------------------------

RELAXABLE = LANE.replace("merge:  {from: verified, to: merged, by: [merger], approval: {by: [human]}}",
                         "merge:  {from: verified, to: merged, by: [merger], approval: {by: [human], relaxable: true}}"
                         ).replace("fitness: {settle: 1h, min_outcomes: 3}",
                                   "fitness: {settle: 1h, min_outcomes: 3, review: {min_requests: 3}}")


def verified(company, n: int) -> list[int]:  # noqa: ANN001
    ids = []
    for i in range(n):
        task = company.create_task(workflow="fix", title=f"t{i}", actor="alice")[0]
        company.transition(task.id, "build", actor="b1", expected_version=task.version, writes={"branch": "x"})
        company.transition(task.id, "verify", actor="qa", expected_version=task.version + 1)
        ids.append(task.id)
    return ids


def merge(company, task_id: int) -> None:  # noqa: ANN001
    company.transition(task_id, "merge", actor="merger", expected_version=company.get_task(task_id).version)


def test_an_autonomous_agent_skips_a_relaxable_edge_only_while_it_is_over_reviewed(opened):
    company = opened(RELAXABLE)
    ids = verified(company, 6)
    company.set_stage("merger", "autonomous", workflow="fix", reason="trusted", actor="alice")
    for task_id in ids[:3]:  # not over-reviewed yet (too few decided): each merge asks a human
        with pytest.raises(ApprovalPending):
            merge(company, task_id)
    for request in company.inbox(actor="alice"):
        company.approve_request(request.id, actor="alice")
    assert company.approval_stats()[0]["verdict"] == "over-reviewed"
    merge(company, ids[3])  # 3 of 3 approved: the edge is skipped, and the move says why
    assert company.get_task(ids[3]).state == "merged"
    last = company.audit_log(action="task.transition")[-1]
    assert last.principal == "merger" and "approved_by" not in last.data
    assert last.data["relaxed"] == ("approval edge skipped: an autonomous agent, and 3 of 3 approved in 30 days: "
                                    "over-reviewed, is this edge needed?")
    company.set_stage("merger", "bounded", workflow="fix", reason="back to reviews", actor="alice")
    with pytest.raises(ApprovalPending):  # bounded: the edge holds, over-reviewed or not
        merge(company, ids[4])


def test_an_edge_that_is_not_relaxable_is_never_skipped(opened):
    company = opened(RELAXABLE.replace(", relaxable: true", ""))
    ids = verified(company, 4)
    company.set_stage("merger", "autonomous", workflow="fix", reason="trusted", actor="alice")
    for task_id in ids[:3]:
        with pytest.raises(ApprovalPending):
            merge(company, task_id)
    for request in company.inbox(actor="alice"):
        company.approve_request(request.id, actor="alice")
    with pytest.raises(ApprovalPending):
        merge(company, ids[3])
