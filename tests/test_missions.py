"""Missions with reflection (issue 16, deliverable 2): the versioned plan, its contract, who may write it,
a human's hold, edit and release, and reflection runs on their schedule and on demand.

Run on SQLite and PostgreSQL. The runtime is the real dispatcher; runners are real (a Recorder program,
the ``llm`` runner with pydantic-ai's FunctionModel as the one stand-in for a model).
"""

from __future__ import annotations

import json

import pytest
from conftest import Recorder
from pydantic_ai import models
from pydantic_ai.messages import ModelRequest, ModelResponse, ToolCallPart
from pydantic_ai.models.function import FunctionModel
from sqlalchemy import select

from roster.errors import Denied, NotFound, PlanHeld, PlanRefused, SpecError, UsageError
from roster.kernel.goals import GoalBudget, GoalCheck
from roster.kernel.plans import Plan, PlanGoal, plan_problems, reflection_cron
from roster.runtime.dispatcher import Dispatcher
from roster.runtime.llm import OUTPUT_TOOL, LLMRunner
from roster.specfile import parse_spec
from roster.store import Store
from roster.store.schema import plans, runs

SPEC = """
company: acme
humans:
  alice: {}
agents:
  lead: {mission: keep main clean, tier: coordinator, reports_to: alice}
  ann: {mission: fix lint, tier: high-impact-executor, reports_to: lead, kpis: [lint_findings]}
  bob: {mission: fix lint, tier: bounded-mutator, reflect: {cron: "0 */6 * * *"}}
  quiet: {tier: bounded-mutator}
  still: {mission: never reflects, tier: bounded-mutator, reflect: {cron: null}}
kpis:
  lint_findings: {direction: down, target: 0}
workflows:
  fix:
    states: [open, done]
    initial: open
    kpis: [lint_findings]
    transitions:
      finish: {from: open, to: done, by: [ann, bob], approval: {by: [human]}}
"""
GOOD = Plan(priorities=["fix the E501 findings first"],
            goals=[PlanGoal(objective="no lint left", kpi="lint_findings<=0")], stop_doing=["reformatting by hand"])
GOOD_OUT = {"priorities": ["fix the E501 findings first"], "goals": [{"objective": "no lint left",
                                                                     "kpi": "lint_findings<=0"}],
            "reason": "the findings are mostly E501"}


@pytest.fixture
def acme(databases, tmp_path, clock):
    store = Store.open(databases("missions"), clock=clock, artifact_root=tmp_path / "art")
    store.apply(parse_spec(SPEC), applied_by="alice")
    yield store.company("acme")
    store.close()


def reflection_runs(company):
    with company.store.read() as conn:
        return conn.execute(select(runs.c.id, runs.c.agent, runs.c.outcome, runs.c.failure_message).where(
            runs.c.company_id == company.company, runs.c.reflection.is_(True)).order_by(runs.c.started_at)).all()


# -- the plan contract (pure) -----------------------------------------------------------------------


def test_the_plan_contract_wants_a_priority_and_a_kpi_linked_goal_or_a_reason():
    assert plan_problems(GOOD, {"lint_findings"}) == []
    empty = plan_problems(Plan(), {"lint_findings"})
    assert [c for c, _ in empty] == ["priorities", "kpi-goal"]
    unlinked = Plan(priorities=["x"], goals=[PlanGoal(objective="be nice")])
    assert [c for c, _ in plan_problems(unlinked, {"lint_findings"})] == ["kpi-goal"]
    said_why = Plan(priorities=["x"], no_kpi_goal_because="my work has no KPI yet; asked alice for one")
    assert plan_problems(said_why, set()) == []
    unknown = Plan(priorities=["x"], goals=[PlanGoal(objective="up", kpi="uptime>=99")])
    [(clause, detail)] = [p for p in plan_problems(unknown, {"lint_findings"}) if p[0] == "kpi"]
    assert "'uptime'" in detail and "lint_findings" in detail
    malformed = Plan(priorities=["x"], goals=[PlanGoal(objective="up", kpi="lint_findings about 3")])
    assert "kpi" in [c for c, _ in plan_problems(malformed, {"lint_findings"})]


def test_the_reflection_schedule_is_nightly_with_a_mission_and_the_spec_can_change_or_stop_it():
    spec = parse_spec(SPEC)
    assert reflection_cron(spec.agents["ann"].mission, spec.agents["ann"].reflect) == "0 2 * * *"
    assert reflection_cron(spec.agents["bob"].mission, spec.agents["bob"].reflect) == "0 */6 * * *"
    assert reflection_cron(spec.agents["quiet"].mission, spec.agents["quiet"].reflect) is None  # no mission
    assert reflection_cron(spec.agents["still"].mission, spec.agents["still"].reflect) is None
    with pytest.raises(SpecError, match=r"reflect.*invalid cron expression 'at two'"):
        parse_spec(SPEC.replace('{cron: "0 */6 * * *"}', '{cron: "at two"}'))


# -- the store: versions, rights, holds ---------------------------------------------------------------


def test_an_agent_revises_its_own_plan_in_versions_audited_and_its_manager_may_too(acme):
    first = acme.revise_plan("ann", GOOD, actor="ann", reason="first plan")
    second = acme.revise_plan("ann", Plan(priorities=["review before fixing"], no_kpi_goal_because="testing"),
                              actor="lead", reason="lead's change")
    assert (first.version, second.version, second.author) == (1, 2, "lead")
    assert acme.plan("ann", actor="ann") == second
    assert [v.version for v in acme.plan_history("ann", actor="alice")] == [2, 1]
    events = acme.audit_log(action="plan.revise")
    assert [(e.principal, e.subject, e.data["version"]) for e in events] == [
        ("ann", "principal:ann", 1), ("lead", "principal:ann", 2)]
    with acme.store.read() as conn:
        rows = conn.execute(select(plans.c.agent, plans.c.version, plans.c.author)).all()
    assert sorted(tuple(r) for r in rows) == [("ann", 1, "ann"), ("ann", 2, "lead")]


def test_a_plan_is_written_only_by_its_agent_its_manager_or_a_human_and_read_by_the_agent_or_humans(acme):
    with pytest.raises(Denied, match="plan.edit"):
        acme.revise_plan("ann", GOOD, actor="bob", reason="not mine")
    with pytest.raises(Denied, match="plan.edit"):
        acme.hold_plan("ann", actor="bob")
    acme.revise_plan("ann", GOOD, actor="alice", reason="a human's plan")
    with pytest.raises(Denied, match="profile.read"):
        acme.plan("ann", actor="bob")
    assert acme.plan("ann", actor="ann").author == "alice"
    assert acme.plan("ann", actor="lead").author == "alice"  # ann's manager reads what it may revise
    rejected = [(e.action, e.principal, e.subject) for e in acme.audit_log(action="plan.*")
                if e.action.endswith(".rejected")]
    assert rejected == [("plan.revise.rejected", "bob", "principal:ann"), ("plan.hold.rejected", "bob", "principal:ann"),
                        ("plan.read.rejected", "bob", "principal:ann")]
    with pytest.raises(NotFound, match="agents: ann, bob, lead, quiet, still"):
        acme.plan("alice", actor="alice")


def test_a_plan_breaking_the_contract_is_refused_with_the_clause_audited_and_the_old_one_stays(acme):
    acme.revise_plan("ann", GOOD, actor="ann", reason="first plan")
    with pytest.raises(PlanRefused, match="clause 'kpi-goal'") as refused:
        acme.revise_plan("ann", Plan(priorities=["only vibes"]), actor="ann", reason="drop the KPI")
    assert refused.value.to_dict()["problems"][0]["clause"] == "kpi-goal"
    assert acme.plan("ann", actor="ann").version == 1
    [event] = acme.audit_log(action="plan.refused")
    assert (event.principal, event.data["problems"][0]["clause"]) == ("ann", "kpi-goal")
    with pytest.raises(UsageError, match="needs a reason"):
        acme.revise_plan("ann", GOOD, actor="ann", reason="  ")


def test_while_a_human_holds_a_plan_nobody_else_writes_it_and_the_hold_expires(acme, clock):
    held = acme.hold_plan("ann", actor="alice", ttl=3600, note="rewriting the priorities")
    assert held.holder == "alice"
    with pytest.raises(PlanHeld, match="held by 'alice'"):
        acme.revise_plan("ann", GOOD, actor="ann", reason="my reflection")
    with pytest.raises(PlanHeld):
        acme.release_plan("ann", actor="lead")
    assert acme.revise_plan("ann", GOOD, actor="alice", reason="alice's edit").author == "alice"
    clock.advance(3601)
    assert acme.plan_hold("ann") is None  # expired: the agent may write again
    assert acme.revise_plan("ann", GOOD, actor="ann", reason="after the hold").version == 2
    with pytest.raises(NotFound, match="you hold no plan"):
        acme.release_plan("ann", actor="alice")
    actions = [e.action for e in acme.audit_log(action="plan.*")]
    assert actions == ["plan.hold", "plan.revise", "plan.revise"]


# -- reflection runs -----------------------------------------------------------------------------------


@pytest.fixture
def reflecting(acme, tmp_path, clock):
    """acme's dispatcher for ann, whose runner is a Recorder answering every run with a good plan."""
    runner = Recorder({"plan": GOOD_OUT, "memories": [{"text": "E501 fixes need the line length setting"}]})
    dispatcher = Dispatcher(acme, workdir=tmp_path, runners={"ann": runner}, agents=["ann"])
    yield acme, dispatcher, runner, clock
    dispatcher.close()


def test_an_agent_with_a_mission_reflects_nightly_on_its_period_and_writes_its_plan(reflecting):
    company, dispatcher, runner, clock = reflecting  # 2026-01-01 00:00 UTC
    runner.results = [{"transition": "finish"}, *runner.results]
    task = company.create_task(workflow="fix", title="fix a.py", actor="alice")[0]
    company.record_kpi("lint_findings", 40, actor=None)
    dispatcher.cycle()  # ann's task run: it asks for approval of finish; the first look sets the baseline
    assert [b["task"]["id"] if b["task"] else None for b in runner.briefs] == [task.id]
    company.approve_request(company.list_requests(actor="alice")[0].id, actor="alice", note="good split")
    company.send_message("ann", "please batch E501 next", actor="alice")
    company.record_kpi("lint_findings", 31, actor=None)
    clock.advance(hours=1)
    dispatcher.cycle()
    assert reflection_runs(company) == []  # 02:00 has not come
    clock.advance(hours=1)  # 02:00
    dispatcher.cycle()
    [(run_id, agent, outcome, failure)] = reflection_runs(company)
    assert (agent, outcome, failure) == ("ann", "succeeded", None), failure
    brief = runner.briefs[-1]["reflection"]
    assert brief["since"].startswith("2025-12-31T02:00:00")  # a first reflection looks back a day
    assert brief["plan"]["version"] == 0
    assert brief["runs"]["count"] >= 1 and "recent" in brief["runs"]
    assert [(a["status"], a["note"], a["task_id"]) for a in brief["approvals"]] == [("approved", "good split", task.id)]
    assert [m["body"] for m in brief["messages"]] == ["please batch E501 next"]
    [kpi] = brief["kpis"]
    assert (kpi["name"], kpi["latest"], kpi["direction"], kpi["target"]) == ("lint_findings", 31.0, "down", 0.0)
    saved = company.plan("ann", actor="alice")
    assert (saved.version, saved.author, saved.run_id, saved.reason) == (1, "ann", run_id,
                                                                         "the findings are mostly E501")
    assert [e.text for e in company.list_memory(actor="ann")] == ["E501 fixes need the line length setting"]
    dispatcher.cycle()
    clock.advance(hours=12)
    dispatcher.cycle()
    assert len(reflection_runs(company)) == 1  # once a night
    clock.advance(hours=12)  # the next night
    dispatcher.cycle()
    assert len(reflection_runs(company)) == 2
    second = runner.briefs[-1]["reflection"]
    assert second["plan"]["version"] == 1 and "fix the E501 findings first" in second["plan"]["text"]
    with company.store.read() as conn:
        first_start = conn.scalar(select(runs.c.started_at).where(runs.c.id == run_id))
    assert second["since"] == first_start  # the period runs from the previous reflection
    assert [m["text"] for m in second["memory"]] == ["E501 fixes need the line length setting"]


def test_a_reflection_consolidates_its_agents_memory_and_the_next_one_sees_what_went(reflecting):
    company, dispatcher, runner, clock = reflecting
    for confidence in (0.5, 0.9):  # the same lesson twice: consolidation keeps the surer one
        company.remember("wrap long URLs", actor="ann", kind="lesson", confidence=confidence)
    runner.results = [{"plan": GOOD_OUT}]
    assert dispatcher.reflect_once("ann").outcome == "succeeded"
    assert [(e.text, e.confidence) for e in company.list_memory(actor="ann")] == [("wrap long URLs", 0.9)]
    clock.advance(hours=1)
    assert dispatcher.reflect_once("ann").outcome == "succeeded"
    [merged] = runner.briefs[-1]["reflection"]["memory_removed"]
    assert (merged["action"], merged["by"]) == ("memory.merge", "runtime")


def test_agents_without_a_mission_or_with_reflection_off_never_reflect(acme, tmp_path, clock):
    runner = Recorder({"plan": GOOD_OUT})
    dispatcher = Dispatcher(acme, workdir=tmp_path, runners={"quiet": runner, "still": runner},
                            agents=["quiet", "still"])
    try:
        for _ in range(3):
            dispatcher.cycle()
            clock.advance(days=1)
        assert reflection_runs(acme) == [] and runner.briefs == []
        assert dispatcher.reflect_once("quiet").outcome == "succeeded"  # on demand, it still may
        assert acme.plan("quiet", actor="alice").version == 1
    finally:
        dispatcher.close()


def test_a_reflection_whose_plan_breaks_the_contract_fails_and_applies_nothing(reflecting):
    company, dispatcher, runner, _ = reflecting
    company.revise_plan("ann", GOOD, actor="ann", reason="first plan")
    runner.results = [{"plan": {"priorities": ["just vibes"], "reason": "no KPI"},
                       "memories": [{"text": "should not be kept"}], "messages": [{"to": "alice", "body": "hi"}]}]
    outcome = dispatcher.reflect_once("ann")
    assert (outcome.outcome, outcome.failure.code, outcome.failure.category.value) == (
        "failed", "plan-refused", "deterministic")
    assert "clause 'kpi-goal'" in outcome.failure.message
    assert company.plan("ann", actor="ann").version == 1  # the old plan stays
    assert company.list_memory(actor="ann") == [] and company.message_inbox(actor="alice") == []
    [(_, _, outcome_row, message)] = reflection_runs(company)
    assert outcome_row == "failed" and "clause 'kpi-goal'" in message


def test_a_reflection_opens_and_closes_goals_within_its_rights(reflecting):
    company, dispatcher, runner, _ = reflecting
    old = company.set_goal("ann", "an old goal", actor="alice", check=GoalCheck.parse_kpi("lint_findings<=10"),
                           budget=GoalBudget(runs=3))
    runner.results = [{"plan": GOOD_OUT, "goals": [{"objective": "no lint left", "kpi": "lint_findings<=0",
                                                    "budget_runs": 10, "every_seconds": 3600}],
                       "close_goals": [{"goal_id": old.id, "note": "superseded by the new plan"}]}]
    assert dispatcher.reflect_once("ann").outcome == "succeeded"
    new = [g for g in company.list_goals(actor="alice") if g.id != old.id]
    assert [(g.objective, g.created_by, g.state, g.every_seconds) for g in new] == [
        ("no lint left", "ann", "active", 3600)]
    closed = company.get_goal(old.id, actor="alice")
    assert (closed.state, closed.reason) == ("abandoned", "superseded by the new plan")
    # a goal for an agent that does not report to ann: denied, audited, and the run fails as governance
    runner.results = [{"plan": GOOD_OUT, "goals": [{"objective": "bob's", "kpi": "lint_findings<=0",
                                                    "agent": "bob", "budget_runs": 1}]}]
    outcome = dispatcher.reflect_once("ann")
    assert (outcome.outcome, outcome.failure.category.value) == ("failed", "governance")
    assert [e.subject for e in company.audit_log(action="goal.set.rejected")] == ["principal:bob"]
    # a goal without a budget is the run's mistake: deterministic, with what to fix
    runner.results = [{"goals": [{"objective": "free", "kpi": "lint_findings<=0"}]}]
    outcome = dispatcher.reflect_once("ann")
    assert outcome.failure.category.value == "deterministic" and "needs a budget" in outcome.failure.message


def test_only_a_reflection_run_may_revise_a_plan(acme, tmp_path):
    runner = Recorder({"plan": GOOD_OUT})
    dispatcher = Dispatcher(acme, workdir=tmp_path, runners={"ann": runner}, agents=["ann"])
    try:
        acme.create_task(workflow="fix", title="fix a.py", actor="alice")
        [task_run] = dispatcher.cycle()
        assert task_run.outcome == "failed" and "only a reflection run" in task_run.failure.message
        acme.set_goal("ann", "g", actor="alice", check=GoalCheck.parse_kpi("lint_findings<=0"),
                      budget=GoalBudget(runs=2))
        outcome = dispatcher.run_once("ann", None, trigger="manual", context={})
        assert outcome.outcome == "failed" and "only a reflection run" in outcome.failure.message
        assert acme.plan("ann", actor="alice") is None
    finally:
        dispatcher.close()


def test_a_held_plan_skips_the_reflection_and_the_next_one_sees_the_humans_diff(reflecting):
    company, dispatcher, runner, clock = reflecting
    company.revise_plan("ann", GOOD, actor="ann", reason="first plan")
    dispatcher.cycle()  # the baseline
    company.hold_plan("ann", actor="alice", ttl=6 * 3600, note="rethinking")
    clock.advance(hours=2)  # 02:00, while held
    [skipped] = [o for o in dispatcher.cycle() if o.blocked]
    assert skipped.outcome == "stopped" and "held by alice" in skipped.blocked
    assert reflection_runs(company) == [] and runner.briefs == []
    edited = Plan(priorities=["fix the E501 findings first", "ask QA before big changes"],
                  goals=GOOD.goals, stop_doing=[])
    company.revise_plan("ann", edited, actor="alice", reason="QA keeps catching wide changes")
    company.release_plan("ann", actor="alice", note="done")
    dispatcher.cycle()
    assert reflection_runs(company) == []  # this night's slot was skipped, not retried all night
    clock.advance(days=1)
    dispatcher.cycle()
    plan = runner.briefs[-1]["reflection"]["plan"]
    assert (plan["version"], plan["author"]) == (2, "alice")
    edits = plan["edits_since_yours"]
    assert "+2. ask QA before big changes" in edits["diff"] and "-- reformatting by hand" in edits["diff"]
    assert edits["by"] == [{"version": 2, "author": "alice", "reason": "QA keeps catching wide changes"}]


def test_two_dispatchers_reflect_an_agent_once_per_slot(databases, tmp_path, clock):
    stores = [Store.open(databases("missions2"), clock=clock, artifact_root=tmp_path / "art") for _ in range(2)]
    stores[0].apply(parse_spec(SPEC), applied_by="alice")
    runners = [Recorder({"plan": GOOD_OUT}), Recorder({"plan": GOOD_OUT})]
    dispatchers = [Dispatcher(s.company("acme"), workdir=tmp_path, runners={"ann": r}, agents=["ann"])
                   for s, r in zip(stores, runners, strict=True)]
    try:
        for _ in range(2):
            for d in dispatchers:
                d.cycle()
            clock.advance(days=1)
            for d in dispatchers:
                d.cycle()
        assert len(reflection_runs(stores[0].company("acme"))) == 2
        assert sum(len(r.briefs) for r in runners) == 2
    finally:
        for d in dispatchers:
            d.close()
        for s in stores:
            s.close()


# -- the llm runner: what the model is shown, and the offline script --------------------------------------


@pytest.fixture
def no_model_requests(monkeypatch):
    monkeypatch.setattr(models, "ALLOW_MODEL_REQUESTS", False)


def test_the_model_is_shown_the_reflection_brief_and_answers_with_a_plan(acme, tmp_path, no_model_requests):
    acme.revise_plan("ann", GOOD, actor="alice", reason="a human's first plan")
    seen = []

    def model(messages, info):  # noqa: ANN001, ANN202
        requests = [m for m in messages if isinstance(m, ModelRequest)]
        seen.append((requests[-1].instructions or "", info.output_tools[0].parameters_json_schema))
        return ModelResponse(parts=[ToolCallPart(OUTPUT_TOOL, {"plan": GOOD_OUT, "rationale": "kept the plan"})])

    runner = LLMRunner({"kind": "llm", "model": "offline"}, company=acme,
                       model=FunctionModel(model, model_name="scripted-test-model"))
    dispatcher = Dispatcher(acme, workdir=tmp_path, runners={"ann": runner}, agents=["ann"])
    try:
        assert dispatcher.reflect_once("ann").outcome == "succeeded"
    finally:
        dispatcher.close()
    [(instructions, schema)] = seen
    assert "## Reflect on your mission" in instructions
    assert "Your plan now is version 1, by alice" in instructions and "1. fix the E501 findings first" in instructions
    assert "Humans changed your plan since your own last version" in instructions
    assert "plan" in schema["properties"] and "close_goals" in schema["properties"]
    assert acme.plan("ann", actor="alice").version == 2


def test_the_offline_model_reflects_with_a_plan_that_obeys_the_contract(acme, tmp_path, no_model_requests):
    acme.set_goal("ann", "under ten findings", actor="alice", check=GoalCheck.parse_kpi("lint_findings<=10"),
                  budget=GoalBudget(runs=3))
    runner = LLMRunner({"kind": "llm", "model": "offline"}, company=acme)
    dispatcher = Dispatcher(acme, workdir=tmp_path, runners={"ann": runner, "lead": runner}, agents=["ann", "lead"])
    try:
        assert dispatcher.reflect_once("ann").outcome == "succeeded"
        assert dispatcher.reflect_once("lead").outcome == "succeeded"  # no KPI: it says why
    finally:
        dispatcher.close()
    plan = acme.plan("ann", actor="alice")
    assert [(g.objective, g.kpi, g.goal_id) for g in plan.plan.goals] == [("under ten findings", "lint_findings<=10", 1)]
    assert "(scripted offline model)" in plan.reason or "[offline scripted model]" in plan.reason
    lead = acme.plan("lead", actor="alice").plan
    assert lead.goals == [] and "no KPI" in lead.no_kpi_goal_because


# -- the command line ----------------------------------------------------------------------------------


@pytest.fixture
def mission_cli(cli, db_url, monkeypatch):
    spec = SPEC.replace("{mission: fix lint, tier: high-impact-executor, reports_to: lead, kpis: [lint_findings]}",
                        "{mission: fix lint, tier: high-impact-executor, reports_to: lead, kpis: [lint_findings], "
                        "runner: {kind: llm, model: offline}}")
    (cli.workspace / "roster.yaml").write_text(spec)
    monkeypatch.setenv("ROSTER_DB", db_url)
    assert cli("apply").exit_code == 0
    return cli


def test_roster_reflect_now_mission_show_and_a_humans_hold_edit_release(mission_cli):
    cli = mission_cli
    schedule = cli("reflect", "ann")
    assert schedule.exit_code == 0 and "on cron '0 2 * * *'" in schedule.stdout
    done = cli("reflect", "ann", "--now", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["outcome"] == "succeeded"
    shown = json.loads(cli("mission", "show", "ann", "--json").stdout)
    assert (shown["mission"], shown["reflect_cron"], len(shown["versions"])) == ("fix lint", "0 2 * * *", 1)
    assert shown["versions"][0]["author"] == "ann" and shown["versions"][0]["diff"].startswith("--- no plan")
    assert cli("mission", "hold", "ann", "--note", "tightening").exit_code == 0
    refused = cli("reflect", "ann", "--now")
    assert refused.exit_code == 0 and "held by" in refused.stdout
    bad = cli.workspace / "bad.yaml"
    bad.write_text("priorities: [only vibes]\n")
    result = cli("mission", "edit", "ann", "--file", str(bad), "--reason", "vibes")
    assert result.exit_code == 5 and "kpi-goal" in result.output
    good = cli.workspace / "plan.yaml"
    good.write_text("priorities: [E501 first, then F401]\ngoals:\n  - {objective: clean main, kpi: lint_findings<=0}\n"
                    "stop_doing: [fixing tests by hand]\n")
    edited = cli("mission", "edit", "ann", "--file", str(good), "--reason", "F401 matters too")
    assert edited.exit_code == 0 and "v2 by" in edited.stdout
    assert cli("mission", "release", "ann", "--note", "over to you").exit_code == 0
    text = cli("mission", "show", "ann").stdout
    assert text.index("1. E501 first") < text.index("history, newest first")  # the current plan, then the history
    assert "-1. " in text and "+1. E501 first" in text and "F401 matters too" in text
    assert "[offlinescriptedmodel]reflectedon" in "".join(text.split())  # store text, never console markup
    missing = cli("mission", "edit", "ann", "--file", str(cli.workspace / "nope.yaml"), "--reason", "x")
    assert missing.exit_code == 2


def test_a_reflection_is_budgeted_like_any_run(databases, tmp_path, clock):
    spec = SPEC + "budgets:\n  - {scope: 'agent:ann', usd: 1, period: month}\n"
    store = Store.open(databases("missions_budget"), clock=clock, artifact_root=tmp_path / "art")
    store.apply(parse_spec(spec), applied_by="alice")
    company = store.company("acme")
    runner = Recorder({"plan": GOOD_OUT})
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"ann": runner}, agents=["ann"])
    try:
        run = company.start_run("ann", trigger="earlier work", task_id=None, fencing_token=None)
        company.finish_run(run, outcome="succeeded", cost_usd=1.0)
        outcome = dispatcher.reflect_once("ann")
        assert outcome.outcome == "stopped" and "hard stop, budget agent:ann per month" in outcome.blocked
        assert runner.briefs == [] and company.plan("ann", actor="alice") is None  # no model call, no plan
        assert company.get_principal("ann").status == "paused"
    finally:
        dispatcher.close()
        store.close()
