"""A Claude Code-style agent walks the agency lane's `verify` step over MCP (issue 14, item 2): the official
MCP client over streamable HTTP against `roster serve`'s app under uvicorn, as QA with its own token, on
the lane's real spec (src/roster/agency/roster.yaml) and a real SQLite file. `verify` requires the
`patch` artifact and four passed checks: QA reads the brief, claims, reads the patch and its diff, is
refused without the checks, records them, and moves the task with its fencing token."""

from __future__ import annotations

import asyncio

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from roster.agency.demo import spec_text
from roster.api.server import ApiServer
from roster.specfile import parse_spec

CHECKS = ("findings_gone", "no_new_findings", "behaviour_unchanged", "tests_pass")
BEFORE = "import os\nimport sys\n\nprint(sys.argv)\n"
AFTER = "import sys\n\nprint(sys.argv)\n"


def built_task(store):
    """A lint-fix task walked to `built` by the planner and the builder (two patch versions), through the
    store as they would."""
    store.apply(parse_spec(spec_text("alice")), applied_by="alice")
    lane = store.company("agency")
    task, _ = lane.create_task(workflow="lint-fix", title="F401 in tool.py", actor="alice",
                               fields={"rule": "F401", "file": "tool.py", "count": 1})
    lane.transition(task.id, "plan", actor="planner", expected_version=1,
                    writes={"spec": "Remove the unused `import os` from tool.py; nothing else changes."})
    lane.record_artifact(task.id, "patch", f"--- a/tool.py\n+++ b/tool.py\n-{BEFORE}".encode(), actor="builder",
                         reason="first try")
    lane.record_artifact(task.id, "patch", f"--- a/tool.py\n+++ b/tool.py\n-import os\n {AFTER}".encode(),
                         actor="builder", reason="only the import")
    version = lane.get_task(task.id).version
    lane.transition(task.id, "build", actor="builder", expected_version=version,
                    writes={"branch": f"roster/task-{task.id}"})
    return lane, lane.get_task(task.id)


def text(result) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def test_qa_over_mcp_walks_verify_from_claim_to_verified_with_checks(store):
    lane, task = built_task(store)
    assert task.state == "built"
    token = lane.issue_token("qa", actor="alice").token
    server = ApiServer(store, port=0)
    url = server.start()
    try:
        async def qa() -> dict:
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
                async with Client(streamable_http_client(f"{url}/mcp/", http_client=http)) as client:
                    async def call(tool: str, **arguments):
                        result = await client.call_tool(tool, arguments)
                        assert not result.is_error, (tool, text(result))
                        return result.structured_content

                    seen = {"tools": {t.name for t in (await client.list_tools()).tools}}
                    seen["queue"] = (await call("my_tasks"))["result"]
                    seen["brief"] = await call("context", task_id=task.id)
                    lease = await call("claim", task_id=task.id, seconds=120)
                    seen["patch"] = await call("read_artifact", task_id=task.id, name="patch")
                    seen["versions"] = (await call("artifact_versions", task_id=task.id, name="patch"))["result"]
                    seen["diff"] = await call("artifact_diff", task_id=task.id, name="patch")
                    seen["too_soon"] = await client.call_tool("transition", {
                        "task_id": task.id, "transition": "verify", "fencing_token": lease["fencing_token"]})
                    seen["checks"] = [await call("record_check", task_id=task.id, name=name, passed=True,
                                                 detail=f"{name} on roster/task-{task.id}",
                                                 fencing_token=lease["fencing_token"]) for name in CHECKS]
                    seen["moved"] = await call("transition", task_id=task.id, transition="verify",
                                               rationale="all four checks pass on the branch",
                                               fencing_token=lease["fencing_token"])
                    seen["lease"] = lease
                    return seen

        seen = asyncio.run(qa())
    finally:
        server.stop()

    assert {"record_check", "read_artifact", "artifact_diff", "claim", "transition"} <= seen["tools"]
    assert not {"delegate", "hold", "decide", "request_approval"} & seen["tools"]
    assert [t["id"] for t in seen["queue"]] == [task.id]
    [verify] = [t for t in seen["brief"]["transitions"] if t["name"] == "verify"]
    assert verify["requires"]["checks"] == list(CHECKS)
    assert [b["clause"] for b in verify["blocked"]] == ["requires.checks"]
    assert seen["patch"]["version"] == 2 and seen["patch"]["encoding"] == "utf-8"
    assert seen["patch"]["content"].startswith("--- a/tool.py") and "-import os" in seen["patch"]["content"]
    assert [(v["version"], v["reason"], v["created_by"]) for v in seen["versions"]] == [
        (1, "first try", "builder"), (2, "only the import", "builder")]
    assert seen["diff"]["diff"].startswith("--- patch@v1\n+++ patch@v2\n") and "\n-import sys\n+ import sys\n" in seen["diff"]["diff"]
    assert seen["too_soon"].is_error and "contract-violation" in text(seen["too_soon"])
    assert "requires.checks" in text(seen["too_soon"])
    assert [(c.get("name"), c.get("passed")) for c in seen["checks"]] == [(name, True) for name in CHECKS]
    assert seen["moved"]["state"] == "verified"

    final = lane.get_task(task.id)
    assert (final.state, final.version, final.lease_holder) == ("verified", seen["moved"]["version"], None)
    by_qa = [(e.action, e.data.get("via")) for e in lane.history(task.id) if e.principal == "qa"]
    assert by_qa == [("lease.claim", "mcp"), ("task.transition.rejected", "mcp"),
                     *[("check.record", "mcp")] * len(CHECKS), ("task.transition", "mcp"), ("lease.release", "mcp")]
    [moved] = [e for e in lane.history(task.id) if e.action == "task.transition" and e.principal == "qa"]
    assert (moved.data["to"], moved.data["rationale"]) == ("verified", "all four checks pass on the branch")
    assert lane.verify_audit()[1] is None
