"""Missions over REST and MCP: an agent's versioned plan read, revised, held and released over the real
app's HTTP test client, and read and revised with the official MCP client, on SQLite and PostgreSQL.
Who may read or write a plan and what a plan must say are the store's decisions; these tests check the
interfaces carry them out (status codes, problem bodies, audit rows with their ``via``) and show a
version as ``roster mission show --json`` does."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient
from mcp import Client
from test_api import check_problem_shape, problem

from roster.api import create_app
from roster.api.mcp_server import TOOL_SET_OF, create_mcp_server
from roster.kernel.plans import Plan
from roster.specfile import parse_spec
from roster.store import Store
from roster.store.plans import version_diff

API = "/api/v1"
SPEC = """
company: acme
humans:
  alice: {}
agents:
  lead: {mission: keep main clean, tier: coordinator, reports_to: alice}
  ann: {mission: fix lint, tier: bounded-mutator, reports_to: lead, kpis: [lint_findings]}
  bob: {mission: fix lint, tier: bounded-mutator}
kpis:
  lint_findings: {direction: down, target: 0}
workflows:
  fix:
    states: [open, done]
    initial: open
    transitions:
      finish: {from: open, to: done, by: [ann, bob]}
"""
PLAN = {"priorities": ["fix the E501 findings first"],
        "goals": [{"objective": "no lint left", "kpi": "lint_findings<=5"}],
        "stop_doing": ["reformatting by hand"]}
NO_KPI_GOAL = {"priorities": ["be helpful"], "goals": [{"objective": "be nice"}]}


@pytest.fixture
def acme(databases, tmp_path, clock):
    store = Store.open(databases("missions_api"), clock=clock, artifact_root=tmp_path / "art")
    store.apply(parse_spec(SPEC), applied_by="alice")
    yield store, store.company("acme")
    store.close()


@pytest.fixture
def api(acme, tmp_path):
    store, _company = acme
    client = TestClient(create_app(store, workdir=tmp_path))
    client.event_hooks = {"request": [], "response": [check_problem_shape]}
    with client:
        yield client


@pytest.fixture
def auth(acme):
    _store, company = acme
    tokens = {h: company.issue_token(h, actor="alice").token for h in ("alice", "lead", "ann", "bob")}
    return lambda handle: {"Authorization": f"Bearer {tokens[handle]}"}


def plan_url(handle: str, rest: str = "") -> str:
    return f"{API}/agents/{handle}/plan{rest}"


def test_a_human_writes_a_plan_reads_it_and_its_history_with_diffs(acme, api, auth):
    _store, company = acme
    none_yet = problem(api.get(plan_url("ann"), headers=auth("alice")), 404, "not-found")
    assert "no plan yet" in none_yet["detail"]
    assert api.get(plan_url("ann", "/history"), headers=auth("alice")).json() == []

    first = api.put(plan_url("ann"), json={"plan": PLAN, "reason": "start on lint"}, headers=auth("alice"))
    assert first.status_code == 200, first.text
    v1 = first.json()
    assert (v1["agent"], v1["version"], v1["author"], v1["reason"], v1["run_id"]) == (
        "ann", 1, "alice", "start on lint", None)
    assert v1["plan"]["priorities"] == PLAN["priorities"] and v1["plan"]["goals"][0]["kpi"] == "lint_findings<=5"
    stored = company.plan("ann", actor="alice")
    assert v1 == stored.to_dict()  # the same JSON as `roster mission show --json`'s version
    assert "## Priorities\n1. fix the E501 findings first" in v1["text"]
    assert api.get(plan_url("ann"), headers=auth("alice")).json() == v1

    second_plan = {**PLAN, "priorities": ["fix E501", "then W291"]}
    v2 = api.put(plan_url("ann"), json={"plan": second_plan, "reason": "W291 grew"}, headers=auth("alice")).json()
    assert v2["version"] == 2
    history = api.get(plan_url("ann", "/history"), headers=auth("alice")).json()
    assert [(h["version"], h["reason"]) for h in history] == [(2, "W291 grew"), (1, "start on lint")]
    older, newer = company.plan_history("ann", actor="alice")[::-1]
    assert history[0]["diff"] == version_diff(older, newer) and "+2. then W291" in history[0]["diff"]
    assert history[1]["diff"] == version_diff(None, older) and history[1]["diff"].startswith("--- no plan")
    # a limit shorter than the history still diffs the oldest shown against the one before it
    [only] = api.get(plan_url("ann", "/history"), params={"limit": 1}, headers=auth("alice")).json()
    assert only["diff"] == history[0]["diff"]

    events = company.audit_log(action="plan.revise")
    assert [(e.principal, e.subject, e.data["version"], e.data.get("via")) for e in events] == [
        ("alice", "principal:ann", 1, "api"), ("alice", "principal:ann", 2, "api")]


def test_a_plan_that_breaks_the_contract_is_refused_and_the_current_one_stays(acme, api, auth):
    _store, company = acme
    assert api.put(plan_url("ann"), json={"plan": PLAN, "reason": "start"}, headers=auth("ann")).status_code == 200
    refused = problem(api.put(plan_url("ann"), json={"plan": NO_KPI_GOAL, "reason": "softer"},
                              headers=auth("ann")), 409, "plan-refused")
    assert refused["problems"][0]["clause"] == "kpi-goal" and "no_kpi_goal_because" in refused["problems"][0]["detail"]
    assert refused["agent"] == "ann"
    unknown_kpi = {**PLAN, "goals": [{"objective": "up", "kpi": "uptime>=99"}]}
    refused = problem(api.put(plan_url("ann"), json={"plan": unknown_kpi, "reason": "uptime"},
                              headers=auth("ann")), 409, "plan-refused")
    assert [p["clause"] for p in refused["problems"]] == ["kpi", "kpi-goal"]
    assert api.get(plan_url("ann"), headers=auth("ann")).json()["version"] == 1  # the current plan stays
    said_why = {"priorities": ["learn the codebase"], "no_kpi_goal_because": "no KPI fits onboarding yet"}
    assert api.put(plan_url("ann"), json={"plan": said_why, "reason": "onboarding"},
                   headers=auth("ann")).json()["version"] == 2
    assert [(e.principal, e.data.get("via")) for e in company.audit_log(action="plan.refused")] == [
        ("ann", "api"), ("ann", "api")]


def test_an_agent_reads_and_revises_its_own_plan_but_not_another_agents(acme, api, auth):
    _store, company = acme
    for agent in ("ann", "bob"):
        assert api.put(plan_url(agent), json={"plan": PLAN, "reason": "start"}, headers=auth("alice")).status_code \
            == 200
    assert api.get(plan_url("ann"), headers=auth("ann")).json()["author"] == "alice"
    assert [v["version"] for v in api.get(plan_url("ann", "/history"), headers=auth("ann")).json()] == [1]
    denied = problem(api.get(plan_url("bob"), headers=auth("ann")), 403, "denied")
    assert "bob" in denied["detail"]
    problem(api.get(plan_url("bob", "/history"), headers=auth("ann")), 403, "denied")
    problem(api.put(plan_url("bob"), json={"plan": PLAN, "reason": "mine now"}, headers=auth("ann")), 403, "denied")
    problem(api.post(plan_url("bob", "/hold"), json={}, headers=auth("ann")), 403, "denied")
    rejected = company.audit_log(action="plan.read.rejected")
    assert [(e.principal, e.subject, e.data.get("via")) for e in rejected] == [
        ("ann", "principal:bob", "api"), ("ann", "principal:bob", "api")]
    assert [(e.principal, e.subject) for e in company.audit_log(action="plan.revise.rejected")] == [
        ("ann", "principal:bob")]
    # the agent ann reports to may revise her plan; bob, a peer, may not
    lead = api.put(plan_url("ann"), json={"plan": PLAN, "reason": "as your manager"}, headers=auth("lead"))
    assert (lead.status_code, lead.json()["author"], lead.json()["version"]) == (200, "lead", 2)
    problem(api.put(plan_url("ann"), json={"plan": PLAN, "reason": "peer"}, headers=auth("bob")), 403, "denied")
    assert company.plan("bob", actor="alice").version == 1


def test_a_human_holds_a_plan_edits_it_and_releases_it(acme, api, auth):
    _store, company = acme
    held = api.post(plan_url("ann", "/hold"), json={"ttl_seconds": 3600, "note": "rewriting priorities"},
                    headers=auth("alice"))
    assert held.status_code == 201, held.text
    hold = held.json()
    assert (hold["agent"], hold["holder"], hold["note"]) == ("ann", "alice", "rewriting priorities")
    assert hold["held_at"] < hold["expires_at"]

    blocked = problem(api.put(plan_url("ann"), json={"plan": PLAN, "reason": "reflection"}, headers=auth("ann")),
                      409, "plan-held")
    assert (blocked["holder"], blocked["expires_at"]) == ("alice", hold["expires_at"])
    problem(api.post(plan_url("ann", "/hold"), json={}, headers=auth("lead")), 409, "plan-held")
    problem(api.post(plan_url("ann", "/release"), json={}, headers=auth("lead")), 409, "plan-held")
    assert api.put(plan_url("ann"), json={"plan": PLAN, "reason": "edited while held"},
                   headers=auth("alice")).status_code == 200

    released = api.post(plan_url("ann", "/release"), json={"note": "done, see v1"}, headers=auth("alice"))
    assert (released.status_code, released.content) == (204, b"")
    assert "hold no plan" in problem(api.post(plan_url("ann", "/release"), json={}, headers=auth("alice")),
                                     404, "not-found")["detail"]
    assert api.put(plan_url("ann"), json={"plan": PLAN, "reason": "my turn"}, headers=auth("ann")).json()["version"] \
        == 2
    actions = [(e.action, e.principal, e.data.get("via")) for e in company.audit_log()
               if e.subject == "principal:ann" and e.action.startswith("plan.")]
    assert actions == [("plan.hold", "alice", "api"), ("plan.revise", "alice", "api"),
                       ("plan.release", "alice", "api"), ("plan.revise", "ann", "api")]


def test_bad_input_and_unknown_agents(api, auth):
    assert "no agent 'nobody'" in problem(api.get(plan_url("nobody"), headers=auth("alice")), 404,
                                          "not-found")["detail"]
    problem(api.put(plan_url("nobody"), json={"plan": PLAN, "reason": "x"}, headers=auth("alice")), 404, "not-found")
    problem(api.get(plan_url("Not-A-Handle"), headers=auth("alice")), 422, "validation")
    blank = problem(api.put(plan_url("ann"), json={"plan": PLAN, "reason": "   "}, headers=auth("alice")), 400, "usage")
    assert "reason" in blank["detail"]
    for body in ({"plan": PLAN}, {"plan": PLAN, "reason": ""}, {"plan": {**PLAN, "surprise": 1}, "reason": "x"},
                 {"plan": {"priorities": "not a list"}, "reason": "x"}, {"plan": PLAN, "reason": "x", "run_id": "r"}):
        problem(api.put(plan_url("ann"), json=body, headers=auth("alice")), 422, "validation")
    for ttl in (0, 7 * 86400 + 1):
        problem(api.post(plan_url("ann", "/hold"), json={"ttl_seconds": ttl}, headers=auth("alice")), 422,
                "validation")
    problem(api.get(plan_url("ann", "/history"), params={"limit": 0}, headers=auth("alice")), 422, "validation")
    problem(api.get(plan_url("ann"), headers={"Authorization": "Bearer nope"}), 401, "unauthenticated")


def test_an_agent_reads_and_revises_its_own_plan_over_mcp(acme):
    store, company = acme
    ann = create_mcp_server(store, token=company.issue_token("ann", actor="alice").token)

    async def work() -> tuple:
        async with Client(ann) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            before = await client.call_tool("my_plan", {})
            made = await client.call_tool("revise_plan", {"plan": PLAN, "reason": "start on lint"})
            refused = await client.call_tool("revise_plan", {"plan": NO_KPI_GOAL, "reason": "softer"})
            blank = await client.call_tool("revise_plan", {"plan": PLAN, "reason": "   "})
            company.hold_plan("ann", actor="alice", note="editing")
            held = await client.call_tool("revise_plan", {"plan": PLAN, "reason": "again"})
            company.release_plan("ann", actor="alice")
            again = await client.call_tool("revise_plan", {"agent": "ann", "plan": {**PLAN, "stop_doing": []},
                                                           "reason": "nothing to stop"})
            mine = await client.call_tool("my_plan", {"history": 5})
            bobs = await client.call_tool("my_plan", {"agent": "bob"})
            bob_revised = await client.call_tool("revise_plan", {"agent": "bob", "plan": PLAN, "reason": "x"})
            return tools, before, made, refused, blank, held, again, mine, bobs, bob_revised

    tools, before, made, refused, blank, held, again, mine, bobs, bob_revised = asyncio.run(work())
    assert {"my_plan", "revise_plan"} <= tools & set(TOOL_SET_OF["everyone"])
    assert before.structured_content == {"agent": "ann", "current": None, "history": []}
    assert not made.is_error, made
    assert made.structured_content == company.plan_history("ann", actor="alice")[-1].to_dict()
    assert made.structured_content["author"] == "ann"
    text = refused.content[0].text
    assert refused.is_error and "plan-refused: " in text and "clause 'kpi-goal'" in text
    assert blank.is_error and "usage: " in blank.content[0].text and "reason" in blank.content[0].text
    assert held.is_error and "plan-held: " in held.content[0].text and "'alice'" in held.content[0].text
    assert again.structured_content["version"] == 2
    shown = mine.structured_content
    assert shown["current"] == again.structured_content
    assert [(v["version"], v["reason"]) for v in shown["history"]] == [(2, "nothing to stop"), (1, "start on lint")]
    assert "-- reformatting by hand" in shown["history"][0]["diff"]
    assert bobs.is_error and "denied: " in bobs.content[0].text
    assert bob_revised.is_error and "denied: " in bob_revised.content[0].text
    assert [(e.action, e.data.get("via")) for e in company.audit_log()
            if e.principal == "ann" and e.action.startswith("plan.")] == [
        ("plan.revise", "mcp"), ("plan.refused", "mcp"), ("plan.revise", "mcp"), ("plan.read.rejected", "mcp"),
        ("plan.revise.rejected", "mcp")]


def test_a_human_revises_an_agents_plan_over_mcp(acme):
    store, company = acme
    alice = create_mcp_server(store, token=company.issue_token("alice", actor="alice").token)

    async def work() -> tuple:
        async with Client(alice) as client:
            made = await client.call_tool("revise_plan", {"agent": "bob", "plan": PLAN, "reason": "kick off"})
            mine = await client.call_tool("my_plan", {})  # a human has no plan of its own
            read = await client.call_tool("my_plan", {"agent": "bob", "history": 0})
            return made, mine, read

    made, mine, read = asyncio.run(work())
    assert (made.structured_content["agent"], made.structured_content["author"]) == ("bob", "alice")
    assert mine.is_error and "not-found: " in mine.content[0].text
    assert read.structured_content == {"agent": "bob", "current": made.structured_content, "history": []}
    assert Plan.parse(read.structured_content["current"]["plan"]) == Plan.parse(PLAN)
