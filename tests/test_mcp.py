"""The MCP server with the official `mcp` client: in memory (`Client(server)`), over streamable HTTP
against a real uvicorn server on 127.0.0.1, and over stdio (`roster mcp`). Real SQLite files."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import httpx2
import pytest
from conftest import FIX_LINT, GOOD_SPEC
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from roster.api.mcp_server import create_mcp_server, granted_tools
from roster.api.server import ApiServer
from roster.specfile import parse_spec

READ_ONLY = FIX_LINT.replace("humans:", "  watcher: {reports_to: alice, rights: {read: ['*']}}\nhumans:")


def token_for(company, handle: str) -> str:
    return company.issue_token(handle, actor="alice").token


def run(coroutine):
    return asyncio.run(coroutine)


def text(result) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def test_an_agent_claims_reads_saves_and_transitions_over_http_and_the_audit_says_via_mcp(store, company,
                                                                                          new_task):
    task = new_task()
    token = token_for(company, "planner")
    server = ApiServer(store, port=0)
    url = server.start()
    try:
        async def work() -> dict:
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
                async with Client(streamable_http_client(f"{url}/mcp/", http_client=http)) as client:
                    who = (await client.call_tool("whoami", {})).structured_content
                    queue = (await client.call_tool("my_tasks", {})).structured_content["result"]
                    lease = (await client.call_tool("claim", {"task_id": task.id})).structured_content
                    brief = (await client.call_tool("context", {"task_id": task.id})).structured_content
                    saved = await client.call_tool("save_artifact", {
                        "task_id": task.id, "name": "plan.md", "kind": "plan", "content": "split imports\n",
                        "fencing_token": lease["fencing_token"]})
                    moved = (await client.call_tool("transition", {
                        "task_id": task.id, "transition": "plan", "writes": {"spec": GOOD_SPEC},
                        "fencing_token": lease["fencing_token"]})).structured_content
                    return {"who": who, "queue": queue, "brief": brief, "saved": saved, "moved": moved}

        done = run(work())
    finally:
        server.stop()
    assert done["who"]["id"] == "acme/planner" and "claim" in done["who"]["tools"]
    assert [t["id"] for t in done["queue"]] == [task.id]
    assert done["brief"]["task"]["id"] == task.id and done["brief"]["fencing_token"] == 1
    assert not done["saved"].is_error
    assert done["moved"]["state"] == "planned"
    steps = [(e.principal, e.action, e.data.get("via")) for e in company.history(task.id)
             if e.principal == "planner"]
    assert steps == [("planner", "lease.claim", "mcp"), ("planner", "artifact.record", "mcp"),
                     ("planner", "task.transition", "mcp"), ("planner", "lease.release", "mcp")]
    assert company.get_task(task.id).lease_holder is None
    assert company.verify_audit()[1] is None


def test_a_tool_not_granted_is_absent_from_list_tools_and_the_store_refuses_it_if_called(store, company, new_task):
    """The list only hides: a hidden tool called anyway runs its store verb, which refuses (and audits)
    what a read-only agent may not do."""
    store.apply(parse_spec(READ_ONLY), applied_by="alice")
    task = new_task()
    watcher = create_mcp_server(store, token=token_for(company, "watcher"))

    async def probe() -> tuple[list, object, object]:
        async with Client(watcher) as client:
            tools = sorted(t.name for t in (await client.list_tools()).tools)
            return (tools, await client.call_tool("record_check", {"task_id": task.id, "name": "lint_clean",
                                                                   "passed": True}),
                    await client.call_tool("transition", {"task_id": task.id, "transition": "plan",
                                                          "writes": {"spec": GOOD_SPEC}}))

    tools, check, move = run(probe())
    for hidden in ("claim", "transition", "save_artifact", "record_check", "delegate", "file_task", "hold",
                   "decide", "request_approval"):
        assert hidden not in tools, hidden
    assert {"whoami", "my_tasks", "context", "recall", "read_artifact", "artifact_diff", "inbox", "mark_read",
            "escalate"} <= set(tools)
    assert check.is_error and "denied: " in text(check) and move.is_error and "contract-violation: " in text(move)
    assert company.get_task(task.id).state == "found" and company.get_task(task.id).version == 1
    refusals = [(e.principal, e.action, e.data.get("via")) for e in company.audit_log()
                if e.action.endswith(".rejected")]
    assert refusals == [("watcher", "check.record.rejected", "mcp"), ("watcher", "task.transition.rejected", "mcp")]


def test_arguments_that_break_a_tools_schema_get_a_clean_tool_error(store, company, new_task):
    new_task()
    server = create_mcp_server(store, token=token_for(company, "planner"))

    async def bad_calls() -> list:
        async with Client(server) as client:
            return [await client.call_tool("claim", {"task_id": "first"}),
                    await client.call_tool("claim", {"task_id": 0}),
                    await client.call_tool("remember", {"text": ""}),
                    await client.call_tool("claim", {"task_id": 999})]

    results = run(bad_calls())
    assert all(r.is_error for r in results)
    assert "task_id" in text(results[0]) and "task_id" in text(results[1])
    assert "not-found" in text(results[3]) and "999" in text(results[3])
    assert company.leases() == []


def test_a_contract_violation_comes_back_as_a_tool_error_naming_the_clause(store, company, new_task):
    task = new_task()
    server = create_mcp_server(store, token=token_for(company, "builder"))

    async def wrong_move():
        async with Client(server) as client:
            return await client.call_tool("transition", {"task_id": task.id, "transition": "build",
                                                         "writes": {"branch": "b"}})

    result = run(wrong_move())
    assert result.is_error and "contract-violation" in text(result) and "'from'" in text(result)
    assert company.get_task(task.id).state == "found"


def test_the_me_resource_carries_the_mission_and_skills(store, company, tmp_path):
    skills = tmp_path / "skills"
    (skills / "split-imports").mkdir(parents=True)
    (skills / "split-imports" / "SKILL.md").write_text(
        "---\nname: split-imports\ndescription: One import per line, sorted.\n---\nRun ruff --fix.\n")
    (skills / "broken").mkdir()
    (skills / "broken" / "SKILL.md").write_text("no frontmatter here\n")
    server = create_mcp_server(store, token=token_for(company, "planner"), skills_dir=skills)

    async def read():
        async with Client(server) as client:
            return await client.read_resource("roster://me")

    me = json.loads(run(read()).contents[0].text)
    assert me["handle"] == "planner"
    assert [(s["name"], s["description"]) for s in me["skills"]] == [("split-imports", "One import per line, sorted.")]
    assert me["kpis"] == [] and me["kpi_latest"] == {}


def test_the_me_resource_shows_the_latest_reading_of_each_of_the_agents_kpis(store, company):
    planner = "  planner: {reports_to: alice, tier: bounded-mutator}"
    assert planner in FIX_LINT
    spec = FIX_LINT.replace(planner, planner[:-1] + ", kpis: [lint_findings, lead_time]}") + (
        "kpis:\n  lint_findings: {unit: findings, direction: down}\n  lead_time: {unit: hours}\n")
    store.apply(parse_spec(spec), applied_by="alice")
    company.record_kpi("lint_findings", 9, actor="alice", source="first count")
    latest = company.record_kpi("lint_findings", 7, actor="alice", source="after a merge")
    server = create_mcp_server(store, token=token_for(company, "planner"))

    async def read():
        async with Client(server) as client:
            return await client.read_resource("roster://me")

    me = json.loads(run(read()).contents[0].text)
    assert me["kpis"] == ["lint_findings", "lead_time"]
    assert me["kpi_latest"] == {"lint_findings": {"value": 7.0, "measured_at": latest.measured_at},
                                "lead_time": None}  # defined, never measured


def test_granted_tools_follow_tier_and_grants(store, company):
    coordinator = "  triage: {reports_to: alice, tier: coordinator, rights: {create: [default/default/fix-lint]}}\n"
    store.apply(parse_spec(READ_ONLY.replace("humans:", coordinator + "humans:")), applied_by="alice")
    tools = {h: granted_tools(store.session(token_for(company, h)))
             for h in ("alice", "planner", "qa", "merger", "watcher", "triage")}
    everyone = {"whoami", "my_tasks", "context", "read_artifact", "artifact_versions", "artifact_diff", "remember",
                "recall", "message", "inbox", "thread", "mark_read", "escalate", "set_goal", "my_goals", "goal",
                "move_goal", "my_plan", "revise_plan"}
    assert tools["watcher"] == everyone  # read-only: reads, its own pad, messages, the ladder
    assert tools["planner"] == tools["qa"] == everyone | {"claim", "transition", "save_artifact", "record_check"}
    assert tools["merger"] == tools["qa"] | {"request_approval"}  # the one agent on an approval edge
    assert tools["triage"] == everyone | {"file_task", "delegate"}  # no transition, no evidence (no write)
    assert tools["alice"] >= tools["merger"] | tools["triage"] | {"hold", "release", "approvals", "decide"}


def test_roster_mcp_serves_over_stdio_as_the_token_in_the_environment(cli, tmp_path):
    init = cli("init", str(tmp_path / "co"))
    assert init.exit_code == 0, init.output
    spec = tmp_path / "co" / "roster.yaml"
    issued = cli("--spec", str(spec), "token", "issue", "planner", "--json")
    token = json.loads(issued.stdout)["token"]
    params = StdioServerParameters(command=sys.executable, args=["-m", "roster", "--spec", str(spec), "mcp",
                                                                 "--token-env", "PLANNER_TOKEN"],
                                   env={**os.environ, "PLANNER_TOKEN": token})

    async def ask():
        async with Client(params) as client:
            return (await client.call_tool("whoami", {})).structured_content

    assert run(ask())["handle"] == "planner"


@pytest.mark.parametrize("env", [{}, {"PLANNER_TOKEN": ""}])
def test_roster_mcp_without_a_token_says_how_to_get_one(cli, tmp_path, env, monkeypatch):
    monkeypatch.delenv("PLANNER_TOKEN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli("init", str(tmp_path / "co")).exit_code == 0
    result = cli("--spec", str(Path(tmp_path / "co" / "roster.yaml")), "mcp", "--token-env", "PLANNER_TOKEN")
    assert result.exit_code == 12 and "roster token issue" in result.output


def test_over_http_an_agent_reads_its_own_profile_resource_and_no_one_elses(store, company, tmp_path):
    skills = tmp_path / "skills" / "review"
    skills.mkdir(parents=True)
    (skills / "SKILL.md").write_text("---\nname: review\ndescription: Check the patch against the spec.\n---\n")
    token = token_for(company, "planner")
    server = ApiServer(store, port=0, skills_dir=tmp_path / "skills")
    url = server.start()
    try:
        async def read() -> tuple[dict, str]:
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
                async with Client(streamable_http_client(f"{url}/mcp/", http_client=http)) as client:
                    mine = await client.read_resource("roster://agents/planner")
                    try:
                        await client.read_resource("roster://agents/builder")
                        other = "read"
                    except Exception as exc:  # noqa: BLE001 - the SDK raises the server's resource error
                        other = str(exc)
                    return json.loads(mine.contents[0].text), other

        mine, other = run(read())
    finally:
        server.stop()
    assert mine["handle"] == "planner" and [s["name"] for s in mine["skills"]] == ["review"]
    assert other != "read"
