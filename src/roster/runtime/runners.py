"""Runners: how an agent thinks for one run. A runner takes a :class:`Brief` and returns a
:class:`RunResult`; everything else (leases, rights, contracts, audit, retries) is the dispatcher's.

Kinds (``runner:`` in the spec):

- ``program`` with ``callable: "module:function"``: a Python function, called in-process with the brief
  as a dict; it returns a result dict. Trusted code: it runs in Roster's process, so no timeout can stop
  it (use ``command`` for untrusted or long work).
- ``program`` with ``command: "python worker.py"``: any command, run in the workspace folder in a process
  group of its own. The brief is JSON on stdin; the result is JSON on stdout (at most 1 MiB). ``timeout``
  (seconds, default 600) kills the whole group.

The result shape (every key optional)::

    {"transition": "plan", "writes": {"spec": "..."}, "rationale": "...",
     "artifacts": [{"kind": "patch", "name": "fix.diff", "content": "..."}],
     "checks": [{"name": "lint_clean", "passed": true, "detail": "..."}],
     "tasks": [{"workflow": "fix-lint", "title": "...", "fields": {...}, "key": "ruff:E501:a.py"}],
     "messages": [{"to": "alice", "body": "...", "thread_id": null}],
     "memories": [{"kind": "lesson", "text": "...", "confidence": 0.9}],
     "failure": {"category": "judgment", "reason": "cannot tell which fix is right"}}

A filed task with a ``packet`` is a delegation: it becomes a child of the run's task (see
:mod:`roster.store.delegation`).
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from roster.errors import MalformedOutput, RunnerCrashed, RunnerExit, RunnerTimeout, UsageError
from roster.runtime.processes import OutputTooLarge, run_in_session

DEFAULT_TIMEOUT = 600.0
"""Seconds a ``program`` command may run by default (10 minutes: room for a few model calls of minutes
each); ``timeout:`` in the spec sets another."""
MAX_OUTPUT_BYTES = 1_048_576
"""Largest stdout a command runner may print, in bytes (1 MiB): past it the command is killed at once
(:class:`MalformedOutput`), and no more than this plus one read is ever held in memory."""


class ArtifactOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    name: str = ""
    content: str
    reason: str = ""


class CheckOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    passed: bool
    detail: str = ""


class FailureOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: Literal["judgment", "deterministic", "transient", "governance"] = "judgment"
    reason: str


class TaskOut(BaseModel):
    """A task the run files (a scout finding work, a coordinator delegating). ``key`` is its
    idempotency key: filing the same finding again returns the existing task."""

    model_config = ConfigDict(extra="forbid")
    workflow: str
    title: str
    fields: dict[str, Any] = {}
    key: str | None = None
    priority: int = 0
    owner: str | None = None
    packet: dict[str, Any] | None = None
    """A delegation packet: the task becomes a child of the run's task."""
    artifacts: list[ArtifactOut] = []
    """Saved on the task when it is created (not when its key finds an existing task)."""


class MessageOut(BaseModel):
    """A message the run sends (an answer in a thread when ``thread_id`` is set). ``task_id`` defaults
    to the run's task."""

    model_config = ConfigDict(extra="forbid")
    to: str
    body: str
    thread_id: int | None = None
    task_id: int | None = None


class MemoryOut(BaseModel):
    """An entry the run adds to its agent's own memory pad (``expires_in`` in seconds)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["belief", "decision", "constraint", "preference", "lesson"] = "lesson"
    text: str
    confidence: float = 0.8
    expires_in: float | None = None


class RunResult(BaseModel):
    """What a run produced. A runner's output is validated into this; anything else is malformed."""

    model_config = ConfigDict(extra="forbid")
    transition: str | None = None
    writes: dict[str, Any] = {}
    rationale: str = ""
    artifacts: list[ArtifactOut] = []
    checks: list[CheckOut] = []
    tasks: list[TaskOut] = []
    messages: list[MessageOut] = []
    memories: list[MemoryOut] = []
    failure: FailureOut | None = None

    @classmethod
    def parse(cls, value: Any) -> RunResult:
        """Validate a runner's output. Raises :class:`MalformedOutput` naming what was wrong."""
        if isinstance(value, RunResult):
            return value
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'result'}: {e['msg']}" for e in exc.errors())
            raise MalformedOutput(f"the runner's result is malformed: {problems}") from None


@dataclass(frozen=True)
class Brief:
    """What one run is shown, as a JSON-ready dict in :attr:`data` (see ``Dispatcher.brief``)."""

    data: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(self.data, sort_keys=True)


@dataclass(frozen=True)
class Usage:
    """What a run cost: the model, tokens in and out, and USD (``cost_known`` False when no price)."""

    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True


class Runner(Protocol):
    """One small interface for every runner kind. A runner that uses a model also exposes
    ``last_usage`` (a :class:`Usage`) after each run."""

    kind: str

    def run(self, brief: Brief) -> RunResult: ...


class CallableRunner:
    """``program`` with ``callable``: a Python function ``f(brief: dict) -> dict``."""

    kind = "program"

    def __init__(self, target: str) -> None:
        module_name, _, attribute = target.partition(":")
        if not module_name or not attribute:
            raise UsageError(f"runner callable '{target}': expected 'module:function'")
        try:
            self.function: Callable[[dict[str, Any]], Any] = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"runner callable '{target}' cannot be loaded: {exc}") from None
        self.target = target

    def run(self, brief: Brief) -> RunResult:
        try:
            output = self.function(json.loads(brief.to_json()))
        except Exception as exc:  # noqa: BLE001 - any failure of the worker is the run's failure
            raise RunnerCrashed(f"{self.target} raised {type(exc).__name__}: {exc}") from exc
        return RunResult.parse(output)


class CommandRunner:
    """``program`` with ``command``: brief as JSON on stdin, result as JSON on stdout, with a timeout
    (:data:`DEFAULT_TIMEOUT`, 600 s, unless given). The command runs in a process group of its own
    (see :mod:`roster.runtime.processes`): past the timeout the group is killed and the run fails at once
    (:class:`RunnerTimeout`), even if something it started left the group and holds stdout open; past
    :data:`MAX_OUTPUT_BYTES` of stdout it is killed too (:class:`MalformedOutput`). Stderr keeps its last
    64 KiB."""

    kind = "program"

    def __init__(self, command: str, *, workdir: Path, timeout: float = DEFAULT_TIMEOUT,
                 env: dict[str, str] | None = None) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise UsageError("runner command is empty")
        self.command = command
        self.workdir = workdir
        self.timeout = timeout
        self.env = env

    def run(self, brief: Brief) -> RunResult:
        env = {**os.environ, **(self.env or {})}
        try:
            done = run_in_session(self.argv, cwd=self.workdir, timeout=self.timeout, input=brief.to_json().encode(),
                                  env=env, max_output=MAX_OUTPUT_BYTES)
        except OSError as exc:
            raise RunnerExit(f"cannot start '{self.command}': {exc}") from None
        except subprocess.TimeoutExpired:
            raise RunnerTimeout(f"'{self.command}' ran past its timeout of {self.timeout:g} s; its process group "
                                "was killed") from None
        except OutputTooLarge as exc:
            raise MalformedOutput(f"'{self.command}' printed more than {exc.limit} bytes on stdout, the limit, and "
                                  "was killed. Write large output to an artifact file instead") from None
        stdout, stderr = done.stdout, done.stderr
        if done.returncode < 0:
            raise RunnerCrashed(f"'{self.command}' was killed by signal {-done.returncode}")
        if done.returncode != 0:
            tail = stderr.decode(errors="replace").strip()[-500:]
            raise RunnerExit(f"'{self.command}' exited {done.returncode}: {tail or '(no stderr)'}")
        try:
            output = json.loads(stdout.decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedOutput(f"'{self.command}' did not print one JSON result on stdout: {exc}") from None
        return RunResult.parse(output)


def make_runner(config: dict[str, Any] | None, *, workdir: Path,
                authorize_tool: Callable[[str, dict[str, Any]], None] | None = None,
                tools: Any = None, issue_token: Any = None, mcp_url: str | None = None) -> Runner | None:
    """The runner an agent's spec ``runner:`` describes, or ``None`` for an agent without one.
    ``authorize_tool(tool, arguments)`` and ``tools`` (the spec's tools) serve the ``llm`` runner, whose
    tool calls go through the rights check and the audit; ``issue_token(agent, lifetime)`` serves the
    ``process`` runner (a short-lived token per run), and ``mcp_url`` (Roster's MCP server, when served)
    its MCP configuration. Raises :class:`UsageError` for a
    configuration that cannot work, or a kind not built yet."""
    if not config:
        return None
    kind = config.get("kind")
    if kind == "process":
        from roster.runtime.process import ProcessRunner  # noqa: PLC0415

        return ProcessRunner(config, workdir=workdir, issue_token=issue_token, mcp_url=mcp_url)
    if kind == "llm":
        from roster.runtime.llm import LLMRunner  # noqa: PLC0415 - pydantic-ai loads only for model agents

        return LLMRunner(config, authorize_tool=authorize_tool, tools=tools, workdir=workdir)
    if kind == "program":
        if config.get("callable"):
            return CallableRunner(str(config["callable"]))
        if config.get("command"):
            return CommandRunner(str(config["command"]), workdir=workdir,
                                 timeout=float(config.get("timeout", DEFAULT_TIMEOUT)))
        raise UsageError("a program runner needs 'callable: module:function' or 'command: ...'")
    raise UsageError(f"unknown runner kind '{kind}'; expected program, llm or process")
