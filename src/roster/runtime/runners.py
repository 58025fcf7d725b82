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

A reflection run (see :mod:`roster.kernel.plans`) may also return its plan's next version, goals to open
and goals to abandon::

    {"plan": {"priorities": ["..."], "goals": [{"objective": "...", "kpi": "lint_findings<=5"}],
              "stop_doing": ["..."], "no_kpi_goal_because": "", "reason": "why it changed"},
     "goals": [{"objective": "...", "kpi": "lint_findings<=5", "budget_usd": 1.0}],
     "close_goals": [{"goal_id": 3, "note": "superseded by the new plan"}]}

A filed task with a ``packet`` is a delegation: it becomes a child of the run's task (see
:mod:`roster.store.delegation`).
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from roster.defaults import MAX_ID
from roster.errors import MalformedOutput, RunnerCrashed, RunnerExit, RunnerTimeout, UsageError
from roster.kernel.plans import Plan
from roster.kernel.runner_spec import DEFAULT_PROGRAM_TIMEOUT, ProgramRunnerSpec
from roster.runtime.processes import OutputTooLarge, run_in_session

DEFAULT_TIMEOUT = DEFAULT_PROGRAM_TIMEOUT
"""Seconds a ``program`` command may run by default (10 minutes: room for a few model calls of minutes
each); ``timeout:`` in the spec sets another."""
MAX_OUTPUT_BYTES = 1_048_576
"""Largest stdout a command runner may print, in bytes (1 MiB): past it the command is killed at once
(:class:`MalformedOutput`), and no more than this plus one read is ever held in memory."""




class ArtifactOut(BaseModel):
    """An artifact the run saves on its task: ``content`` (text) becomes the next version of the artifact
    ``name`` (default: ``kind``), with ``reason`` on record. Over MCP: the ``save_artifact`` tool."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(min_length=1, max_length=63, description="What it is, e.g. patch, plan, report.")
    name: str = Field(default="", max_length=255, description="The artifact's name on the task (default: kind).")
    content: str = Field(description="The text of this version.")
    reason: str = Field(default="", max_length=4000, description="Why this version exists.")


class CheckOut(BaseModel):
    """The result of a named check the run ran on its task (``requires.checks`` counts the latest result
    per name). Over MCP: the ``record_check`` tool; over REST: ``POST /tasks/{id}/checks``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63, description="The check's name, as the contract names it.")
    passed: bool = Field(description="Whether it passed.")
    detail: str = Field(default="", max_length=4000, description="What was checked and what it found.")


class FailureOut(BaseModel):
    """The run cannot finish: its failure category and why. The runtime counts the attempt and, once the
    agent is blocked, takes the next step up the escalation ladder (over MCP/REST: ``escalate``)."""

    model_config = ConfigDict(extra="forbid")
    category: Literal["judgment", "deterministic", "transient", "governance"] = "judgment"
    reason: str


class TaskOut(BaseModel):
    """A task the run files (a scout finding work, a coordinator delegating). ``key`` is its
    idempotency key: filing the same finding again returns the existing task. Over MCP: ``file_task``,
    or ``delegate`` with a packet; over REST: ``POST /tasks``, ``POST /tasks/{id}/children``."""

    model_config = ConfigDict(extra="forbid")
    workflow: str = Field(min_length=1, max_length=63, description="The workflow to file it in.")
    title: str = Field(min_length=1, description="What the task is (at most 500 characters).")
    fields: dict[str, Any] = Field(default={}, description="Typed fields, checked by the workflow's schemas.")
    key: str | None = Field(default=None, description="Idempotency key (at most 255 characters): the same "
                                                   "key files once.")
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000, description="Higher is more urgent.")
    owner: str | None = Field(default=None, max_length=127, description="A principal's handle, if any.")
    packet: dict[str, Any] | None = Field(default=None, description=(
        "A delegation packet (subproblem, context, tried, desired_output, and success_condition and/or "
        "blocking_threshold): the task becomes a child of the run's task."))
    artifacts: list[ArtifactOut] = Field(default=[], description=(
        "Saved on the task when it is created (not when its key finds an existing task)."))


class MessageOut(BaseModel):
    """A message the run sends (an answer in a thread when ``thread_id`` is set). ``task_id`` defaults
    to the run's task. Over MCP: ``message``; over REST: ``POST /messages``."""

    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1, max_length=127, description="A principal's handle in your company.")
    body: str = Field(min_length=1, max_length=16_000)
    thread_id: int | None = Field(default=None, ge=1, le=MAX_ID, description="Set it to reply in a thread.")
    task_id: int | None = Field(default=None, ge=1, le=MAX_ID, description="The task it is about.")


class MemoryOut(BaseModel):
    """An entry the run adds to its agent's own memory pad (``expires_in`` in seconds). Over MCP:
    ``remember``; over REST: ``POST /memory``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["belief", "decision", "constraint", "preference", "lesson"] = "lesson"
    text: str = Field(min_length=1, max_length=2000, description="One short statement.")
    confidence: float = Field(default=0.8, ge=0, le=1)
    expires_in: float | None = Field(default=None, gt=0, le=10 * 365 * 86400.0, description="Seconds to keep it.")


class PlanOut(Plan):
    """A reflection run's new version of its agent's plan (:mod:`roster.kernel.plans`), with ``reason``:
    why it changed. Refused, with the clause, unless it names a goal linked to a KPI or says why not."""

    reason: str = Field(min_length=1, max_length=4000, description="Why the plan changes, for the record.")

    def content(self) -> Plan:
        """The plan itself, without the reason."""
        return Plan.model_validate(self.model_dump(exclude={"reason"}))


class GoalOut(BaseModel):
    """A goal a reflection run opens, for its agent (or, with ``agent``, one that reports to it), checked
    against a KPI target (an agent never sets a command check). Over MCP: ``set_goal``."""

    model_config = ConfigDict(extra="forbid")
    objective: str = Field(min_length=1, max_length=2000)
    kpi: str = Field(min_length=1, max_length=200, description="The check: a KPI target, NAME<=VALUE (or >=, <, >, ==).")
    agent: str | None = Field(default=None, max_length=127, description="Whose goal (default: yours).")
    budget_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    budget_tokens: int | None = Field(default=None, gt=0)
    budget_runs: int | None = Field(default=None, gt=0)
    every_seconds: int = Field(default=900, ge=60, le=30 * 86400, description="Its cadence, in seconds.")


class GoalClose(BaseModel):
    """A goal a reflection run abandons, with why. Over MCP: ``move_goal``."""

    model_config = ConfigDict(extra="forbid")
    goal_id: int = Field(ge=1, le=MAX_ID)
    note: str = Field(min_length=1, max_length=2000)


class RunResult(BaseModel):
    """What a run produced. A runner's output is validated into this; anything else is malformed.
    Each key has its verb on every interface (the parity table in docs/api.md): ``transition`` (with
    ``writes`` and ``rationale``), ``artifacts`` (save an artifact), ``checks`` (record a check),
    ``tasks`` (file a task; with a ``packet``: delegate), ``messages`` (message; with ``thread_id``:
    reply), ``memories`` (remember), ``failure`` (escalate, once the retries are spent)."""

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
    plan: PlanOut | None = None
    goals: list[GoalOut] = []
    close_goals: list[GoalClose] = []

    @property
    def reflects(self) -> bool:
        """Whether it carries what only a reflection run may: a plan, goals opened or closed."""
        return self.plan is not None or bool(self.goals or self.close_goals)

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
    """What a run cost: the model, tokens in and out, and USD. ``cost_usd`` is ``None`` when the run could
    not be priced (a model neither the spec's ``models:`` nor genai-prices has a price for): the run's
    cost is then recorded as unknown, never as 0. A run that called no model costs 0."""

    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0

    @property
    def cost_known(self) -> bool:
        return self.cost_usd is not None


class Runner(Protocol):
    """One small interface for every runner kind. A runner that uses a model also exposes
    ``last_usage`` (a :class:`Usage`) after each run, and ``delivered`` (whether the model was shown the
    brief: the runtime marks the brief's messages read only then; a runner without it delivers the brief
    by being called)."""

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
                 env: dict[str, str] | None = None,
                 issue_token: Callable[[str, timedelta], tuple[str, Callable[[], None]]] | None = None) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise UsageError("runner command is empty")
        self.command = command
        self.workdir = workdir
        self.timeout = timeout
        self.env = env
        self.issue_token = issue_token

    def run(self, brief: Brief) -> RunResult:
        """Run the command once on ``brief``; with ``issue_token`` (the spec's ``token: true``) it gets a
        token of its own in ``ROSTER_TOKEN``, revoked once it has exited."""
        env = {**os.environ, **(self.env or {})}
        revoke: Callable[[], None] = lambda: None  # noqa: E731
        if self.issue_token is not None:
            token, revoke = self.issue_token(brief.data["agent"]["handle"], timedelta(seconds=self.timeout + 60))
            env["ROSTER_TOKEN"] = token
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
        finally:
            revoke()
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
                tools: Any = None, issue_token: Any = None, mcp_url: str | None = None,
                company: Any = None, prices: Any = None) -> Runner | None:
    """The runner an agent's spec ``runner:`` describes, or ``None`` for an agent without one.
    ``authorize_tool(tool, arguments)`` and ``tools`` (the spec's tools) serve the ``llm`` runner, whose
    tool calls go through the rights check and the audit; ``issue_token(agent, lifetime)`` serves the
    ``process`` runner and a ``program`` command with ``token: true`` (a short-lived token per run), and ``mcp_url`` (Roster's MCP server, when served)
    its MCP configuration; ``company`` (the agent's :class:`~roster.store.CompanyStore`) the ``llm`` runner's
    read tools; ``prices`` (the spec's ``models:`` table, or a function returning the current one) the
    ``llm`` runner's pricing. The block is checked by the kernel's models
    (:mod:`roster.kernel.runner_spec`), as at spec load. Raises :class:`UsageError` for a configuration
    that cannot work, or a kind not built yet."""
    if not config:
        return None
    kind = config.get("kind")
    if kind == "process":
        from roster.runtime.process import ProcessRunner  # noqa: PLC0415

        return ProcessRunner(config, workdir=workdir, issue_token=issue_token, mcp_url=mcp_url)
    if kind == "llm":
        from roster.runtime.llm import LLMRunner  # noqa: PLC0415 - pydantic-ai loads only for model agents

        return LLMRunner(config, authorize_tool=authorize_tool, tools=tools, workdir=workdir, company=company,
                         prices=prices)
    if kind == "program":
        program = parse_runner_config(ProgramRunnerSpec, config)
        if program.callable is not None:
            return CallableRunner(program.callable)
        assert program.command is not None
        return CommandRunner(program.command, workdir=workdir, timeout=program.timeout,
                             issue_token=issue_token if program.token else None)
    raise UsageError(f"unknown runner kind '{kind}'; expected program, llm or process")


SpecModel = TypeVar("SpecModel", bound=BaseModel)


def parse_runner_config(model: type[SpecModel], config: Mapping[str, Any]) -> SpecModel:
    """A runner block validated by its kernel model (:mod:`roster.kernel.runner_spec`). Raises
    :class:`UsageError` naming every problem, e.g. ``process runner: timout: Extra inputs are not
    permitted``."""
    try:
        return model.model_validate(dict(config))
    except ValidationError as exc:
        kind = model.model_fields["kind"].default
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'runner'}: {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())
        raise UsageError(f"{kind} runner: {problems}") from None
