"""The always-on metric (issue 16, deliverable 3): time in each state from recorded runs, approvals,
pauses and goals; around the clock at 95%. On SQLite and PostgreSQL, with a clock the test moves."""

from __future__ import annotations

import json
from datetime import datetime, timedelta


import pytest

from roster.errors import ApprovalPending, UsageError
from roster.kernel.goals import GoalBudget, GoalCheck
from roster.kernel.presence import always_on, time_in_states
from roster.specfile import parse_spec
from roster.store import Store

SPEC = """
company: acme
humans:
  alice: {}
agents:
  ann: {mission: fix lint, tier: high-impact-executor, reports_to: alice}
  bob: {mission: watch, tier: high-impact-executor, reports_to: alice}
  cron: {mission: scan, tier: bounded-mutator, triggers: [{every: 1h}]}
kpis:
  lint_findings: {direction: down}
workflows:
  fix:
    states: [open, done]
    initial: open
    transitions:
      ship: {from: open, to: done, by: [ann, bob], approval: {by: [human]}}
"""
T0 = datetime(2026, 3, 1)
H = 3600.0


def test_overlaps_go_to_the_state_first_in_precedence_and_the_rest_is_idle():
    hour = timedelta(hours=1)
    seconds = time_in_states(T0, T0 + 24 * hour, {
        "working": [(T0 + hour, T0 + 2 * hour), (T0 + 1.5 * hour, T0 + 3 * hour)],  # overlapping runs
        "blocked": [(T0 + 2 * hour, T0 + 4 * hour)],  # under a run: still working
        "watching": [(T0 - 24 * hour, T0 + 20 * hour)],  # reaching before the window
    })
    assert seconds == {"working": 2 * H, "blocked": H, "waiting": 0.0, "watching": 17 * H, "idle": 4 * H}
    assert always_on(seconds) is False  # 19 of 24 hours
    assert always_on({"working": 3 * H, "watching": 20 * H, "idle": 0.9 * H}) is True
    with pytest.raises(ValueError, match="unknown presence state"):
        time_in_states(T0, T0 + hour, {"sleeping": []})


@pytest.fixture
def acme(databases, tmp_path, clock):
    store = Store.open(databases("presence"), clock=clock, artifact_root=tmp_path / "art")
    store.apply(parse_spec(SPEC), applied_by="alice")
    yield store.company("acme"), clock
    store.close()


def test_a_day_of_goal_watching_runs_a_pause_and_an_approval_is_split_as_recorded(acme):
    company, clock = acme
    start = clock.now
    goal = company.set_goal("ann", "fewer findings", actor="alice", check=GoalCheck.parse_kpi("lint_findings<=5"),
                            budget=GoalBudget(runs=10))
    clock.advance(H)
    run_id = company.start_run("ann", trigger="goal", task_id=None, fencing_token=None, goal_id=goal.id)
    clock.advance(600)
    company.finish_run(run_id, outcome="succeeded")
    clock.advance(4 * H - 600)  # 5 h after the start: paused for an hour (its goal pauses with it)
    company.set_status("ann", "paused", actor="alice")
    clock.advance(H)
    company.set_status("ann", "active", actor="alice")
    company.move_goal(goal.id, "resume", actor="alice")
    task = company.create_task(workflow="fix", title="t", actor="alice")[0]
    with pytest.raises(ApprovalPending):  # bob waits on a human for 2 hours
        company.transition(task.id, "ship", actor="bob", expected_version=1)
    clock.advance(2 * H)
    [request] = company.inbox(actor="alice")
    company.approve_request(request.id, actor="alice")
    clock.advance(24 * H - 8 * H)
    assert clock.now == start + timedelta(hours=24)

    [day] = company.presence(actor="alice")["days"]
    ann, bob, cron = (day["agents"][a] for a in ("ann", "bob", "cron"))
    assert ann["seconds"] == {"working": 600.0, "blocked": H, "waiting": 0.0, "watching": 23 * H - 600,
                              "idle": 0.0}
    assert ann["around_the_clock"] is True and round(ann["utilization"], 4) == round(600 / 86400, 4)
    assert bob["seconds"]["waiting"] == 2 * H and bob["seconds"]["idle"] == 22 * H
    assert bob["around_the_clock"] is False
    assert cron["seconds"]["watching"] == 24 * H and cron["around_the_clock"] is True  # its trigger is armed
    assert day["around_the_clock"] == 2


def test_a_trend_day_by_day_and_an_agent_sees_only_itself(acme):
    company, clock = acme
    company.set_goal("ann", "x", actor="alice", check=GoalCheck.parse_kpi("lint_findings<=5"), budget=GoalBudget(runs=5))
    clock.advance(days=2)
    report = company.presence(actor="alice", days=3)
    assert [d["agents"]["ann"]["around_the_clock"] for d in report["days"]] == [False, True, True]
    assert [d["around_the_clock"] for d in report["days"]] == [0, 2, 2]  # cron's trigger since it was added; ann's goal
    own = company.presence(actor="bob")["days"][0]["agents"]
    assert list(own) == ["bob"]
    with pytest.raises(UsageError, match="1 to 31 days"):
        company.presence(actor="alice", days=40)


def test_a_company_kill_switch_blocks_every_agent(acme):
    company, clock = acme
    clock.advance(H)
    company.pause("*", actor="alice", reason="incident")
    clock.advance(3 * H)
    company.resume("*", actor="alice")
    clock.advance(20 * H)
    [day] = company.presence(actor="alice")["days"]
    assert {a: row["seconds"]["blocked"] for a, row in day["agents"].items()} == {"ann": 3 * H, "bob": 3 * H,
                                                                                 "cron": 3 * H}
    assert day["agents"]["cron"]["seconds"]["watching"] == 21 * H


def test_roster_presence_and_status_report_it(cli, db_url, monkeypatch):
    (cli.workspace / "roster.yaml").write_text(SPEC)
    monkeypatch.setenv("ROSTER_DB", db_url)
    assert cli("apply").exit_code == 0
    shown = cli("presence", "--days", "2")
    assert shown.exit_code == 0, shown.output
    assert "0 of 3 agent(s) around the clock" in shown.output and "the last day, in hours" in shown.output
    report = json.loads(cli("presence", "--json").stdout)
    cron = report["days"][-1]["agents"]["cron"]  # its trigger is armed since it was added, seconds ago
    assert 0 < cron["seconds"]["watching"] < 600 and cron["around_the_clock"] is False
    status = json.loads(cli("status", "--json").stdout)
    assert (status["always_on"]["around_the_clock"], status["always_on"]["agents"]) == (0, 3)
    assert "always on: 0 of 3 agent(s)" in cli("status").output


def test_rest_reports_presence_to_a_human_and_an_agent_its_own(acme):
    from fastapi.testclient import TestClient

    from roster.api import create_app

    company, clock = acme
    clock.advance(days=1)  # a day since cron (and its trigger) was added
    client = TestClient(create_app(company.store))
    human = {"Authorization": f"Bearer {company.issue_token('alice', actor='alice').token}"}
    agent = {"Authorization": f"Bearer {company.issue_token('bob', actor='alice').token}"}
    answered = client.get("/api/v1/presence", params={"days": 2}, headers=human)
    assert answered.status_code == 200, answered.text
    assert [d["around_the_clock"] for d in answered.json()["days"]] == [0, 1]
    assert list(client.get("/api/v1/presence", headers=agent).json()["days"][0]["agents"]) == ["bob"]
    assert client.get("/api/v1/presence", params={"days": 32}, headers=human).status_code == 422
