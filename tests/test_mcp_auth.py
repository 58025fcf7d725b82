"""MCP authentication over real HTTP (issue 14, item 6): the official MCP client and raw httpx against
`roster serve`'s app under uvicorn in a thread, on a real SQLite file. A refused token is a 401 before
the MCP server runs, resources answer as the request's token, and errors reach the console as one line
each, never a traceback."""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import httpx2
import pytest
from conftest import FIX_LINT
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from roster.api import logs
from roster.api.server import ApiServer
from roster.specfile import parse_spec

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "raw", "version": "0"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def served(store, company, tmp_path):
    skills = tmp_path / "skills" / "review"
    skills.mkdir(parents=True)
    (skills / "SKILL.md").write_text("---\nname: review\ndescription: Check the patch against the spec.\n---\n")
    server = ApiServer(store, port=0, skills_dir=tmp_path / "skills")
    url = server.start()
    yield url
    server.stop()


async def connect(url: str, headers: dict, statuses: list | None = None) -> dict:
    """Connect with the official client; list the tools and read roster://me. ``statuses`` collects the
    HTTP status of every response the client received."""

    async def seen(response) -> None:
        (statuses if statuses is not None else []).append(response.status_code)

    async with httpx2.AsyncClient(headers=headers, event_hooks={"response": [seen]}) as http:
        async with Client(streamable_http_client(f"{url}/mcp/", http_client=http)) as client:
            tools = sorted(t.name for t in (await client.list_tools()).tools)
            me = json.loads((await client.read_resource("roster://me")).contents[0].text)
            return {"tools": tools, "me": me}


def flattened(error: BaseException) -> str:
    """Every message in an exception group (and causes), for asserting what the client was told."""
    seen, todo = [], [error]
    while todo:
        e = todo.pop()
        seen.append(f"{type(e).__name__}: {e}")
        todo += list(getattr(e, "exceptions", ())) + [c for c in (e.__cause__, e.__context__) if c is not None]
    return " | ".join(seen)


def refusals(company) -> list[str]:
    return [e.data["reason"] for e in company.audit_log(action="auth.rejected")]


def test_missing_bad_revoked_and_paused_tokens_get_401_before_the_mcp_server_runs(served, company):
    good = company.issue_token("planner", actor="alice").token
    revoked = company.issue_token("builder", actor="alice")
    company.revoke_token(revoked.record.id, actor="alice")
    paused = company.issue_token("qa", actor="alice").token
    company.set_status("qa", "paused", actor="alice")
    attempts = {
        "missing": {},
        "not bearer": {"Authorization": f"Basic {good}"},
        "bad": {"Authorization": "Bearer rst.acme.nope.nope"},
        "malformed": {"Authorization": "Bearer not-a-token"},
        "revoked": {"Authorization": f"Bearer {revoked.token}"},
        "paused": {"Authorization": f"Bearer {paused}"},
    }
    rest = httpx.get(f"{served}/api/v1/tasks")
    for name, headers in attempts.items():
        raw = httpx.post(f"{served}/mcp/", json=INITIALIZE, headers={**MCP_HEADERS, **headers})
        assert raw.status_code == 401, (name, raw.status_code, raw.text)
        assert raw.headers["www-authenticate"].lower().startswith("bearer"), name
        assert raw.headers["content-type"].startswith("application/problem+json"), name
        assert raw.json() == rest.json() == {"type": "/problems/unauthenticated", "title": "Unauthenticated",
                                             "status": 401, "detail": "a valid bearer token is required"}
        assert "mcp-session-id" not in raw.headers, name  # the MCP server never saw the request
        statuses: list[int] = []
        with pytest.raises(BaseException) as refused:
            asyncio.run(connect(served, headers, statuses))
        assert "MCPError" in flattened(refused.value), name
        assert statuses and set(statuses) == {401}, (name, statuses)  # every response the client got
    reasons = refusals(company)
    assert any("revoked" in r for r in reasons) and any("paused" in r for r in reasons)
    assert "unknown token" in reasons

    done = asyncio.run(connect(served, {"Authorization": f"Bearer {good}"}))
    assert {"claim", "transition", "record_check", "read_artifact", "inbox"} <= set(done["tools"])
    assert done["me"]["handle"] == "planner"


def test_roster_me_over_http_is_the_callers_own_profile(served, company, store):
    planner = "  planner: {reports_to: alice, tier: bounded-mutator}"
    store.apply(parse_spec(FIX_LINT.replace(planner, planner[:-1] + ", mission: Write specs that can be checked.}")),
                applied_by="alice")
    for handle in ("planner", "builder"):
        token = company.issue_token(handle, actor="alice").token
        me = asyncio.run(connect(served, {"Authorization": f"Bearer {token}"}))["me"]
        assert me["handle"] == handle
        assert [s["name"] for s in me["skills"]] == ["review"]
    assert me["mission"] == ""  # builder's own, not the planner's
    alice = company.issue_token("alice", actor="alice").token
    human = asyncio.run(connect(served, {"Authorization": f"Bearer {alice}"}))["me"]
    assert (human["handle"], human["kind"]) == ("alice", "human")


def test_errors_are_logged_once_on_one_line_and_never_as_a_traceback(store, company, new_task, monkeypatch):
    from roster.store.company import CompanyStore

    task = new_task()
    token = company.issue_token("planner", actor="alice").token
    server = ApiServer(store, port=0, log_level="info")
    console = io.StringIO()
    logs.configure("info", stream=console)
    url = server.start()

    def broken(*_args, **_kwargs):
        raise RuntimeError("the disk is on fire")

    try:
        async def agent() -> list:
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
                async with Client(streamable_http_client(f"{url}/mcp/", http_client=http)) as client:
                    me = await client.read_resource("roster://me")
                    refused = await client.call_tool("transition", {"task_id": task.id, "transition": "build"})
                    monkeypatch.setattr(CompanyStore, "pending_work", broken)
                    crashed = await client.call_tool("my_tasks", {})
                    return [me, refused, crashed]

        me, refused, crashed = asyncio.run(agent())
        assert json.loads(me.contents[0].text)["handle"] == "planner"
        assert refused.is_error and crashed.is_error and "fire" not in " ".join(c.text for c in crashed.content)
        unauthenticated = httpx.post(f"{url}/mcp/", json=INITIALIZE, headers={**MCP_HEADERS,
                                                                             "Authorization": "Bearer x"})
        assert unauthenticated.status_code == 401
        monkeypatch.setattr(CompanyStore, "list_tasks", broken)
        internal = httpx.get(f"{url}/api/v1/tasks", headers={"Authorization": f"Bearer {token}"})
        assert internal.status_code == 500 and "fire" not in internal.text
    finally:
        server.stop()
        logs.configure()
    lines = console.getvalue().splitlines()
    assert "Traceback" not in console.getvalue() and all(line.count(" ") > 2 for line in lines), lines

    def logged(*parts: str) -> list[str]:
        return [line for line in lines if all(part in line for part in parts)]

    assert len(logged("MCP tools/call transition -> contract-violation", "clause 'from'")) == 1, lines
    assert len(logged("my_tasks", "RuntimeError: the disk is on fire")) == 1, lines
    assert len(logged("POST /mcp/ -> 401 unauthenticated", "malformed token")) == 1, lines
    assert len(logged("GET /api/v1/tasks -> 500 internal", "RuntimeError: the disk is on fire")) == 1, lines
    assert not logged("roster://me"), lines  # it works over HTTP now
