"""The process runner: an external agent CLI works as the agent through Roster, with a short-lived
token of its own; its output, exit code and changed files are kept as evidence."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from conftest import FIX_LINT

from roster.errors import RunnerExit, RunnerTimeout
from roster.runtime.dispatcher import Dispatcher
from roster.specfile import parse_spec
from roster.store import Store

AGENT_CLI = """
import json, os, subprocess, sys
brief = json.load(open(os.environ["ROSTER_BRIEF_JSON"]))
prompt = open(sys.argv[-1]).read()
assert "roster task move" in prompt and brief["agent"]["handle"] in prompt
task = brief["task"]["id"]
open("notes.txt", "w").write("planned by the external agent\\n")
subprocess.run([sys.executable, "-m", "roster", "--spec", os.environ["SPEC"], "--token", os.environ["ROSTER_TOKEN"],
                "task", "move", str(task), "plan", "--set", "spec=Split the imports, one per line, as ruff asks."],
               check=True)
print("done; token ends with", os.environ["ROSTER_TOKEN"][-4:])
"""


def workspace(tmp_path: Path, command: str, timeout: float = 60) -> tuple[Store, Path]:
    root = tmp_path / "ws"
    (root / ".roster").mkdir(parents=True)
    spec = FIX_LINT.replace("planner: {reports_to: alice, tier: bounded-mutator}",
                            "planner: {reports_to: alice, tier: bounded-mutator, runner: "
                            f"{{kind: process, command: '{command}', timeout: {timeout}}}}}")
    (root / "roster.yaml").write_text(spec)
    store = Store.open(f"sqlite:///{root / '.roster' / 'roster.db'}", artifact_root=root / ".roster" / "artifacts")
    store.apply(parse_spec(spec), applied_by="alice")
    return store, root


def test_an_external_agent_acts_with_its_own_short_lived_token(tmp_path, monkeypatch):
    (tmp_path / "agent_cli.py").write_text(AGENT_CLI)
    store, root = workspace(tmp_path, f"{sys.executable} {tmp_path / 'agent_cli.py'}")
    monkeypatch.setenv("SPEC", str(root / "roster.yaml"))
    company = store.company("acme")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E401"})
    [outcome] = Dispatcher(company, workdir=root).cycle()
    assert outcome.outcome == "succeeded", outcome
    moved = company.get_task(task.id)
    assert moved.state == "planned"
    assert company.audit_log(action="task.transition")[-1].principal == "planner"  # its own identity
    kinds = {a.kind: a for a in company.list_artifacts(task.id)}
    assert {"run-log", "changes"} <= set(kinds)
    changes = json.loads(company.artifact(task.id, kinds["changes"].name)[1])
    assert changes == {"added": ["notes.txt"]}
    [token] = company.list_tokens(principal="planner")
    [run] = company.list_runs()
    assert token.name == f"run token (process runner, run {run.id})"  # named after its run: the crash sweep revokes it
    assert token.revoked_at is not None  # gone with the run
    assert (root / ".roster" / "runs" / outcome.run_id / "brief.md").read_text().startswith("# You are planner")
    assert company.verify_audit()[1] is None


def test_an_external_agent_that_exits_non_zero_is_a_deterministic_failure(tmp_path):
    (tmp_path / "fail.py").write_text("import sys\nprint('cannot do it', file=sys.stderr)\nsys.exit(4)\n")
    store, root = workspace(tmp_path, f"{sys.executable} {tmp_path / 'fail.py'}")
    company = store.company("acme")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E401"})
    runner = Dispatcher(company, workdir=root).runner("planner")
    with pytest.raises(RunnerExit, match="exited 4: cannot do it"):
        runner.run(Dispatcher(company, workdir=root).brief("planner", task, company.claim(
            task.id, actor="planner", run_id="r", ttl=30), "run1", 1, []))


def test_an_external_agent_past_its_timeout_is_killed_with_its_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = tmp_path / "hang.py"
    script.write_text("import subprocess, sys, time\n"
                      f"p = subprocess.Popen(['sleep', '60']); open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
                      "time.sleep(60)\n")
    store, root = workspace(tmp_path, f"{sys.executable} {script}", timeout=1)
    company = store.company("acme")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E401"})
    dispatcher = Dispatcher(company, workdir=root)
    lease = company.claim(task.id, actor="planner", run_id="r", ttl=30)
    started = time.monotonic()
    with pytest.raises(RunnerTimeout):
        dispatcher.runner("planner").run(dispatcher.brief("planner", task, lease, "run2", 1, []))
    assert time.monotonic() - started < 10
    child = int(pid_file.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text().lower()
    [token] = company.list_tokens(principal="planner")
    assert token.revoked_at is not None


MCP_AGENT_CLI = """
import asyncio, json, os
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

server = json.load(open(".mcp.json"))["mcpServers"]["roster"]
header = server["headers"]["Authorization"].replace("${ROSTER_TOKEN}", os.environ["ROSTER_TOKEN"])
brief = json.load(open(os.environ["ROSTER_BRIEF_JSON"]))

async def main():
    async with httpx2.AsyncClient(headers={"Authorization": header}) as http:
        async with Client(streamable_http_client(server["url"], http_client=http)) as roster:
            who = (await roster.call_tool("whoami", {})).structured_content
            task = brief["task"]["id"]
            await roster.call_tool("save_artifact", {"task_id": task, "name": "plan.md", "kind": "plan",
                                                     "content": "one import per line\\n"})
            moved = await roster.call_tool("transition", {"task_id": task, "transition": "plan",
                                                          "writes": {"spec": "Split the imports, one per line."}})
            assert not moved.is_error, moved.content
            print("acted as", who["handle"])

asyncio.run(main())
"""


def test_the_external_agent_works_through_rosters_mcp_server_as_itself(tmp_path):
    from roster.api.server import ApiServer

    (tmp_path / "agent_cli.py").write_text(MCP_AGENT_CLI)
    store, root = workspace(tmp_path, f"{sys.executable} {tmp_path / 'agent_cli.py'}")
    mine = {"mcpServers": {"other": {"command": "other-server"}}, "note": "the user's own file"}
    (root / ".mcp.json").write_text(json.dumps(mine))
    company = store.company("acme")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E401"})
    server = ApiServer(store, port=0)
    url = server.start()
    try:
        [outcome] = Dispatcher(company, workdir=root, mcp_url=f"{url}/mcp/").cycle()
    finally:
        server.stop()
    assert (outcome.agent, outcome.outcome) == ("planner", "succeeded"), outcome
    assert company.get_task(task.id).state == "planned"
    via = [(e.principal, e.action, e.data.get("via")) for e in company.history(task.id)
           if e.data.get("via") == "mcp"]
    assert via == [("planner", "artifact.record", "mcp"), ("planner", "task.transition", "mcp")]
    assert json.loads((root / ".mcp.json").read_text()) == mine  # the user's file is put back
    log = {a.kind: a for a in company.list_artifacts(task.id)}
    assert "acted as planner" in company.artifact(task.id, log["run-log"].name)[1].decode()
    assert "changes" not in log  # writing and restoring .mcp.json is not the agent's change


CHATTY_AGENT_CLI = """
import json, sys
for i in range(60_000):
    print(f"log line {i}: " + "." * 80)
    if i % 10 == 0:
        print(f"warning {i}: " + "!" * 80, file=sys.stderr)
print(json.dumps({"transition": "plan", "writes": {"spec": "Split the imports, one per line, as ruff asks."}}))
"""


def test_a_chatty_external_agent_keeps_the_tail_of_its_output_and_its_last_line_result(tmp_path):
    from roster.runtime.process import DEFAULT_TIMEOUT, LOG_TAIL

    (tmp_path / "chatty.py").write_text(CHATTY_AGENT_CLI)
    store, root = workspace(tmp_path, f"{sys.executable} {tmp_path / 'chatty.py'}")
    company = store.company("acme")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E401"})
    [outcome] = Dispatcher(company, workdir=root).cycle()
    assert outcome.outcome == "succeeded", outcome
    assert company.get_task(task.id).state == "planned"  # the last-line result, found in the tail
    [run_log] = [a for a in company.list_artifacts(task.id) if a.kind == "run-log"]
    log = json.loads(company.artifact(task.id, run_log.name)[1])
    assert log["stdout_bytes"] > 5_000_000 and log["stderr_bytes"] > 500_000  # what it printed in all
    assert len(log["stdout_tail"]) == LOG_TAIL and log["stdout_tail"].rstrip().endswith('one per line, as ruff asks."}}')
    assert "log line 59999" in log["stdout_tail"] and "log line 0:" not in log["stdout_tail"]
    assert len(log["stderr_tail"]) == LOG_TAIL and "warning 59990" in log["stderr_tail"]
    assert DEFAULT_TIMEOUT == 3600.0
