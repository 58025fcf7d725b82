"""The ``process`` runner: an external agent CLI (Claude Code's ``claude -p``, Codex's ``codex exec``) or
any command, working as the agent through Roster with a token of its own.

For each run it writes the brief to ``.roster/runs/<run id>/brief.md`` (a prompt) and ``brief.json``,
issues the agent a short-lived API token (the run's timeout plus a minute; revoked when the run ends),
and starts the command in the workspace, in a process group of its own, with ``ROSTER_TOKEN``,
``ROSTER_RUN_ID``, ``ROSTER_BRIEF`` (the prompt file) and ``ROSTER_BRIEF_JSON`` set, and the prompt file
as its last argument unless ``prompt_arg: false``. The agent acts through ``roster`` (or, later, MCP)
with that token, so every action is its own, rights-checked and audited.

Evidence kept as artifacts of the task: ``run-log`` (exit code, the tail of stdout and stderr, and how
many bytes each printed in all) and, when files changed in the workspace, ``changes`` (the files added,
modified or deleted, by SHA-256). If the last line of stdout is a JSON result (see
:mod:`roster.runtime.runners`), it is applied too.

Agent CLIs print a lot, so their output is never refused: only the last :data:`STDOUT_TAIL` bytes of
stdout (1 MiB, which must hold the JSON result line) and 64 KiB of stderr are kept in memory. The timeout
(:data:`DEFAULT_TIMEOUT`, one hour, unless ``timeout:`` says otherwise) kills the whole process group
(:class:`RunnerTimeout`), promptly even if something the agent started left the group and holds its
output open; a non-zero exit is :class:`RunnerExit`. The agent dies with Roster (see
:mod:`roster.runtime.processes`).

When Roster's MCP server is being served (``roster up``), the runner also writes the agent CLI's MCP
configuration into the working directory for the run (``mcp_config``, default ``.mcp.json``, Claude
Code's project file): a ``roster`` server at the MCP URL whose ``Authorization`` header is
``Bearer ${ROSTER_TOKEN}``, expanded by the CLI from its environment, so the token itself is never
written to disk. An existing file is merged (its other servers are kept) and restored after the run.

Config: ``{kind: process, command: "claude -p", timeout: 3600, prompt_arg: true, mcp_config: .mcp.json}``
(``mcp_config: null`` writes none).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from roster.errors import MalformedOutput, RunnerCrashed, RunnerExit, RunnerTimeout, UsageError
from roster.kernel.runner_spec import DEFAULT_PROCESS_TIMEOUT, ProcessRunnerSpec
from roster.runtime.processes import run_in_session
from roster.runtime.runners import ArtifactOut, Brief, RunResult, Usage, parse_runner_config

DEFAULT_TIMEOUT = DEFAULT_PROCESS_TIMEOUT
"""Seconds an agent CLI may work on one run by default (an hour: they often work half an hour or more)."""
LOG_TAIL = 8_000
"""Characters of stdout and of stderr kept in the run-log."""
STDOUT_TAIL = 1_048_576
"""Bytes of stdout held while the agent runs: its tail, where the last-line JSON result is."""
IssueToken = Callable[[str, timedelta], tuple[str, Callable[[], None]]]
"""``issue(agent, lifetime) -> (token, revoke)``: a short-lived token for the run, and how to revoke it."""


class ProcessRunner:
    """``process``: an external agent CLI works one run (see the module docstring). What its model calls
    cost is not reported to Roster, so every run's cost is recorded as unknown (:attr:`last_usage`), never
    as 0: a USD budget over such runs warns that it cannot be enforced; a token budget cannot count them
    either."""

    kind = "process"
    last_usage = Usage(model=None, cost_usd=None)
    """What a run cost: unknown (the agent CLI's own model calls are not reported to Roster)."""

    def __init__(self, config: dict[str, Any], *, workdir: Path, issue_token: IssueToken | None,
                 mcp_url: str | None = None) -> None:
        if not config.get("command"):
            raise UsageError("a process runner needs 'command: ...' (for example 'claude -p')")
        spec = parse_runner_config(ProcessRunnerSpec, config)
        self.mcp_config = spec.mcp_config
        self.mcp_url = mcp_url
        self.argv = shlex.split(spec.command)
        if not self.argv:
            raise UsageError("a process runner needs 'command: ...' (for example 'claude -p')")
        self.timeout = spec.timeout
        self.prompt_arg = spec.prompt_arg
        self.workdir = workdir
        self.issue_token = issue_token

    def run(self, brief: Brief) -> RunResult:
        data = brief.data
        run_dir = self.workdir / ".roster" / "runs" / data["run_id"]
        run_dir.mkdir(parents=True, exist_ok=True)
        prompt = run_dir / "brief.md"
        prompt.write_text(render_prompt(data), encoding="utf-8")
        (run_dir / "brief.json").write_text(brief.to_json(), encoding="utf-8")
        env = {**os.environ, "ROSTER_RUN_ID": data["run_id"], "ROSTER_BRIEF": str(prompt),
               "ROSTER_BRIEF_JSON": str(run_dir / "brief.json")}
        revoke: Callable[[], None] = lambda: None  # noqa: E731
        if self.issue_token is not None:
            token, revoke = self.issue_token(data["agent"]["handle"], timedelta(seconds=self.timeout + 60))
            env["ROSTER_TOKEN"] = token
        restore = self._write_mcp_config(env)
        before = snapshot(self.workdir)
        argv = [*self.argv, str(prompt)] if self.prompt_arg else self.argv
        try:
            proc = run_in_session(argv, cwd=self.workdir, timeout=self.timeout, env=env, stdout_tail=STDOUT_TAIL)
        except OSError as exc:
            raise RunnerExit(f"cannot start '{shlex.join(self.argv)}': {exc}") from None
        except subprocess.TimeoutExpired:
            raise RunnerTimeout(f"'{shlex.join(self.argv)}' ran past its timeout of {self.timeout:g} s; its process "
                                "group was killed") from None
        finally:
            revoke()
            restore()
        out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        if proc.returncode < 0:
            raise RunnerCrashed(f"'{shlex.join(self.argv)}' was killed by signal {-proc.returncode}")
        if proc.returncode != 0:
            raise RunnerExit(f"'{shlex.join(self.argv)}' exited {proc.returncode}: {err.strip()[-500:] or '(no stderr)'}")
        result = _last_line_result(out)
        log = json.dumps({"exit_code": proc.returncode, "stdout_tail": out[-LOG_TAIL:], "stderr_tail": err[-LOG_TAIL:],
                          "stdout_bytes": proc.stdout_bytes, "stderr_bytes": proc.stderr_bytes}, indent=2)
        evidence = [ArtifactOut(kind="run-log", name=f"run-{data['run_id']}.json", content=log,
                                reason="what the external agent printed, and its exit code")]
        changes = diff_snapshots(before, snapshot(self.workdir), ignore={str(self.mcp_config or "")})
        if changes:
            evidence.append(ArtifactOut(kind="changes", name=f"changes-{data['run_id']}.json",
                                        content=json.dumps(changes, indent=2, sort_keys=True),
                                        reason="files the external agent changed in the workspace"))
        if data.get("task") is None:
            return result  # a run without a task keeps no task evidence
        return result.model_copy(update={"artifacts": [*evidence, *result.artifacts]})


    def _write_mcp_config(self, env: dict[str, str]) -> Callable[[], None]:
        """Point the agent CLI at Roster's MCP server for this run; returns how to put the file back."""
        if not self.mcp_url or not self.mcp_config or "ROSTER_TOKEN" not in env:
            return lambda: None
        path = self.workdir / str(self.mcp_config)
        original = path.read_bytes() if path.exists() else None
        try:
            current = json.loads(original) if original else {}
        except ValueError:
            current = {}
        servers = current.get("mcpServers") if isinstance(current.get("mcpServers"), dict) else {}
        servers = {**servers, "roster": {"type": "http", "url": self.mcp_url,
                                         "headers": {"Authorization": "Bearer ${ROSTER_TOKEN}"}}}
        path.write_text(json.dumps({**current, "mcpServers": servers}, indent=2) + "\n", encoding="utf-8")
        env["ROSTER_MCP_URL"] = self.mcp_url

        def restore() -> None:
            if original is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(original)

        return restore


def render_prompt(brief: dict[str, Any]) -> str:
    """The brief as a prompt an agent CLI reads: who you are, the task, what you may do, how to do it."""
    agent, task = brief["agent"], brief.get("task")
    lines = [f"# You are {agent['handle']}", "", agent.get("mission") or "", ""]
    if task:
        lines += [f"## Task {task['id']}: {task['title']}", f"Workflow {task['workflow']}, state {task['state']}, "
                  f"version {task['version']}.", "", "Fields:", "```json", json.dumps(task["fields"], indent=2), "```",
                  "", "## What you may do next"]
        for t in brief.get("transitions", []):
            blocked = "; ".join(f"{b['clause']}: {b['detail']}" for b in t["blocked"]) or "nothing blocks it"
            lines.append(f"- `{t['name']}` -> {t['to']}; writes {', '.join(t['writes']) or 'nothing'}; "
                         f"blocked now by: {blocked}")
    if brief.get("previous_failure"):
        lines += ["", f"The previous attempt failed: {brief['previous_failure']['message']}"]
    lines += ["", "## How to act", "Use Roster's MCP tools (server `roster`: claim, context, save_artifact, "
              "transition, ...) or the `roster` CLI; ROSTER_TOKEN is set to your own token for this run, so "
              "everything you do is yours and on the record. For example:",
              f"`roster task move {task['id'] if task else 'ID'} TRANSITION --set FIELD=VALUE --rationale WHY`.",
              "You may also print one JSON result as the last line of your output (see docs/runtime.md)."]
    return "\n".join(lines) + "\n"


def snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, except Roster's own state and VCS folders."""
    files: dict[str, str] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if rel.parts and rel.parts[0] in (".roster", ".git", ".venv", "__pycache__"):
            continue
        if path.is_file():
            files[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def diff_snapshots(before: dict[str, str], after: dict[str, str],
                   ignore: set[str] | None = None) -> dict[str, list[str]]:
    """Files added, deleted and modified between two snapshots (``ignore``: paths Roster itself wrote)."""
    if ignore:
        before = {k: v for k, v in before.items() if k not in ignore}
        after = {k: v for k, v in after.items() if k not in ignore}
    changes = {"added": sorted(set(after) - set(before)), "deleted": sorted(set(before) - set(after)),
               "modified": sorted(k for k in set(before) & set(after) if before[k] != after[k])}
    return {k: v for k, v in changes.items() if v}


def _last_line_result(out: str) -> RunResult:
    lines = [line for line in out.strip().splitlines() if line.strip()]
    if not lines or not lines[-1].lstrip().startswith("{"):
        return RunResult()
    try:
        return RunResult.parse(json.loads(lines[-1]))
    except ValueError:
        raise MalformedOutput("the last line of the external agent's output looks like JSON but is not valid") from None
