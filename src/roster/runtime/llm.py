"""The ``llm`` runner: a language model decides one run, through pydantic-ai.

Spec (``runner:`` of an agent)::

    runner:
      kind: llm
      model: openai:gpt-4o-mini        # or anthropic:claude-..., or offline (a scripted stand-in, no network)
      base_url: http://127.0.0.1:11434/v1   # optional: any OpenAI-compatible server (Chat Completions)
      api_key_env: OPENAI_API_KEY      # optional: the environment variable holding the key
      timeout: 300                     # seconds per model request attempt (default 300)
      max_retries: 2                   # the provider SDK's own retries of a failed request (429, 5xx, timeouts)
      output_retries: 1                # how many times the model is asked again after an invalid answer
      max_requests: 20                 # model requests allowed in one run (tool calls take one each)

The model sees the whole brief, every part the context assembler kept within the agent's token budget,
in :mod:`~roster.runtime.brief_text`'s layout: who it is, why it runs, the task and its fields, the
transitions it may take with what blocks each now, rejected approvals, the previous failure, the hand-off
(what others changed, their notes, artifact diffs), delegated children, unread messages, recalled memory,
recent events and what the budget left out. It may call the read tools of
:mod:`~roster.runtime.llm_tools` (artifacts, their versions and diffs, memory, inbox, threads) and the
tools granted to the agent, and ends by calling the ``submit_decision`` output tool with its decision: a
transition and its writes, with artifacts, checks, messages (replies), memories and tasks to file or
delegate; or a failure. A run without a task (woken by a schedule, event, watcher or messages) decides
only tasks, messages and memories. An answer naming a transition the brief does not offer, or writing a
field the transition may not write (or a value the field's schema refuses), is sent back to the model to
correct; a second bad answer is :class:`~roster.errors.MalformedOutput`.

Every call of a spec tool goes through ``authorize_tool(tool, arguments)`` first (the dispatcher passes
``company.record_tool_call``: rights are checked and the call is audited); a denial stops the run and is
raised as is. A tool with a ``command`` then runs it (arguments as JSON on stdin, in the workspace folder,
with the runner's timeout); a tool without one only returns a note that the call was authorised and recorded.

Failures: timeouts, connection errors, HTTP 429 and 5xx are transient (:class:`RunnerTimeout`,
:class:`RunnerCrashed`), raised after the provider SDK's own bounded retries; any other 4xx (a bad key, an
unknown model) is a configuration problem (:class:`RunnerExit`, deterministic). A configured model is
never replaced by the offline one.

After each run the runner exposes its usage: :attr:`LLMRunner.model_name`, ``input_tokens``,
``output_tokens``, ``requests``, ``cost_usd`` and ``cost_known`` (priced offline from genai-prices' bundled
data when the model is known; 0.0 and ``False`` otherwise, and always for the offline model).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic_ai import Agent, ModelRetry, Tool, ToolOutput, capture_run_messages
from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelConnectionError,
    ModelContextWindowExceededError,
    ModelHTTPError,
    ModelQuotaExceededError,
    ModelRateLimitError,
    ModelRequestRejectedError,
    ModelRequestTimeout,
    ModelServerError,
    ModelTimeoutError,
    ModelUnavailableError,
    UnexpectedModelBehavior,
    UsageLimitExceeded,
    UserError,
)
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import UsageLimits

from roster.errors import (
    MalformedOutput,
    RosterError,
    RunnerCrashed,
    RunnerError,
    RunnerExit,
    RunnerTimeout,
    UsageError,
)
from roster.kernel.runner_spec import OFFLINE, LlmRunnerSpec
from roster.kernel.spec import ModelPrice
from roster.runtime import brief_text
from roster.runtime.llm_tools import MAX_TOOL_OUTPUT, READ_TOOLS, AgentReads
from roster.runtime.processes import run_in_session
from roster.runtime.runners import (
    ArtifactOut,
    Brief,
    CheckOut,
    FailureOut,
    GoalClose,
    GoalOut,
    MemoryOut,
    MessageOut,
    PlanOut,
    RunResult,
    TaskOut,
    Usage,
    parse_runner_config,
)

OFFLINE_TAG = "(scripted offline model)"
"""Every rationale and failure reason from the offline model says this, so no report can pass it off as a model."""
PLACEHOLDER = "[offline scripted model]"
OUTPUT_TOOL = "submit_decision"

AuthorizeTool = Callable[[str, dict[str, Any]], None]
OfflineScript = Callable[[dict[str, Any]], Mapping[str, Any]]
"""A script for the offline model: the brief as a dict in, a decision dict out (``transition``, ``writes``,
``rationale``, ``artifacts``, ``failure``)."""

_TOOL_ARGUMENTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {},
    "additionalProperties": True,
    "description": "Arguments of the call, as a JSON object; they are recorded in the audit log.",
}

_current_brief: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("roster_llm_brief",
                                                                                     default=None)


# -- configuration ---------------------------------------------------------------------------------


LLMConfig = LlmRunnerSpec
"""The ``runner:`` block of an ``llm`` agent: the kernel's model, checked when the spec is loaded (see
:class:`~roster.kernel.runner_spec.LlmRunnerSpec` for the keys and what each model string may be)."""


def parse_config(config: Mapping[str, Any]) -> LLMConfig:
    """Validate an ``llm`` runner block. Raises :class:`UsageError` naming every problem."""
    return parse_runner_config(LLMConfig, config)


# -- the structured answer -------------------------------------------------------------------------


class DecisionFailure(BaseModel):
    """Why the model cannot take a transition now."""

    model_config = ConfigDict(extra="forbid")
    category: Literal["judgment", "deterministic"] = Field(
        "judgment", description="'judgment' when you cannot decide (missing context, low confidence); "
        "'deterministic' when the task cannot be done as specified.")
    reason: str = Field(min_length=1, description="What is missing or wrong, for the humans who read it.")


class Decision(BaseModel):
    """Your decision for this run: take one transition (with its writes and what goes with it), or report a
    failure. The parts are the program result's (:class:`~roster.runtime.runners.RunResult`), so every
    runner kind can do the same things."""

    model_config = ConfigDict(extra="forbid")
    transition: str | None = Field(None, description="The name of one transition offered in the brief.")
    writes: dict[str, Any] = Field(default_factory=dict, description="Field values to set; only the fields "
                                   "the chosen transition may write.")
    rationale: str = Field("", description="Why, in a sentence or two; it goes on the record.")
    artifacts: list[ArtifactOut] = Field(default_factory=list, description="Work products to save on the task "
                                         "(kind, name, content), e.g. the artifact kinds a transition produces.")
    checks: list[CheckOut] = Field(default_factory=list, description="Checks you ran on the task (name, passed, "
                                   "detail), e.g. the checks a transition requires.")
    tasks: list[TaskOut] = Field(default_factory=list, description="Tasks to file (workflow, title, fields); "
                                 "one with a 'packet' is delegated as a child of this task.")
    messages: list[MessageOut] = Field(default_factory=list, description="Messages to send; a reply sets "
                                       "'thread_id' to the thread of the message it answers.")
    memories: list[MemoryOut] = Field(default_factory=list, description="Lessons to keep in your memory pad.")
    failure: DecisionFailure | None = Field(None, description="Set instead of a transition when you cannot "
                                            "take one now.")


class WakeDecision(BaseModel):
    """What a run without a task does: file tasks, send messages and replies, remember; or report a failure."""

    model_config = ConfigDict(extra="forbid")
    rationale: str = Field("", description="Why, in a sentence or two; it goes on the record.")
    tasks: list[TaskOut] = Field(default_factory=list, description="Tasks to file (workflow, title, fields).")
    messages: list[MessageOut] = Field(default_factory=list, description="Messages to send; a reply sets "
                                       "'thread_id' to the thread of the message it answers.")
    memories: list[MemoryOut] = Field(default_factory=list, description="Lessons to keep in your memory pad.")
    failure: DecisionFailure | None = Field(None, description="Set when you cannot act on what woke you.")


class ReflectionDecision(WakeDecision):
    """What a reflection run decides: the plan's next version, goals to open and to abandon, and what any
    run without a task may do (lessons as memories, questions to a human as messages)."""

    plan: PlanOut | None = Field(None, description="Your plan's next version, with the reason it changed.")
    goals: list[GoalOut] = Field(default_factory=list, description="Goals to open now, each checked against a "
                                 "KPI target, with a budget.")
    close_goals: list[GoalClose] = Field(default_factory=list, description="Goals to abandon, each with a note.")


def _decision_type(brief: dict[str, Any]) -> type[BaseModel]:
    """The decision's model for this brief: :class:`ReflectionDecision` for a reflection run,
    :class:`WakeDecision` for another run without a task, else :class:`Decision` with the offered
    transition names as the schema's enum, to guide the model."""
    if brief.get("reflection"):
        return ReflectionDecision
    if brief.get("task") is None:
        return WakeDecision
    names = [t["name"] for t in brief.get("transitions") or []]
    return create_model(
        "Decision", __base__=Decision, __doc__=Decision.__doc__,
        transition=(str | None, Field(None, description="The name of one transition offered in the brief.",
                                      json_schema_extra={"enum": [*names, None]})),
    )


def check_decision(decision: Decision | WakeDecision, brief: dict[str, Any]) -> list[str]:
    """What is wrong with ``decision`` for this brief (empty when it is usable): an unknown transition,
    a write outside the transition's ``writes``, a value its field's schema refuses (a run without a task
    has no transition to check)."""
    if not isinstance(decision, Decision):
        return []
    offered = {t["name"]: t for t in brief.get("transitions") or []}
    if decision.failure is not None:
        return ["set either 'transition' or 'failure', not both"] if decision.transition else []
    if decision.transition is None:
        return ["set 'transition' to one of " + brief_text.names(offered) + ", or report a 'failure'"]
    option = offered.get(decision.transition)
    if option is None:
        return [f"transition '{decision.transition}' is not offered; choose one of {brief_text.names(offered)}"]
    allowed = list(option.get("writes") or [])
    problems = []
    outside = sorted(set(decision.writes) - set(allowed))
    if outside:
        problems.append(f"transition '{decision.transition}' may write only {brief_text.names(allowed)}; "
                        f"not {brief_text.names(outside)}")
    schema = brief.get("fields_schema") or {}
    for name, value in decision.writes.items():
        if name in outside or name not in schema:
            continue
        for error in Draft202012Validator(schema[name]).iter_errors(value):
            problems.append(f"field '{name}': {error.message}")
    return problems


# -- the brief as instructions ---------------------------------------------------------------------


def instructions_for(brief: dict[str, Any], tools: list[tuple[str, str]]) -> str:
    """The instructions the model gets for one run: the whole brief in :mod:`~roster.runtime.brief_text`'s
    layout. ``tools`` are ``(name, description)`` of the tools it may call."""
    return brief_text.render(brief, tools, output_tool=OUTPUT_TOOL)


# -- the offline model -----------------------------------------------------------------------------


def default_script(brief: dict[str, Any]) -> dict[str, Any]:
    """The offline model's decision: for a reflection run, a plan read off the brief
    (:func:`reflection_script`); nothing for another run without a task; else the first offered
    transition whose blockers the run can lift itself (only a missing ``produces`` artifact, which it
    attaches), with every written field and produced artifact filled with labelled placeholders; a
    judgment failure when no transition is open."""
    if brief.get("reflection"):
        return reflection_script(brief)
    if brief.get("task") is None:
        return {"rationale": f"{PLACEHOLDER} woken without a task ({brief.get('trigger') or 'no reason'}); a "
                             "scripted model files, sends and remembers nothing."}
    schema = brief.get("fields_schema") or {}
    for option in brief.get("transitions") or []:
        if any(block.get("clause") != "produces" for block in option.get("blocked") or []):
            continue
        writes = {name: _placeholder(schema.get(name) or {}, name) for name in option.get("writes") or []}
        artifacts = [{"kind": kind, "name": f"{kind}.txt", "content": f"{PLACEHOLDER} placeholder {kind}: no "
                      "model wrote this.", "reason": f"{PLACEHOLDER} placeholder"}
                     for kind in option.get("produces") or []]
        return {"transition": option["name"], "writes": writes, "artifacts": artifacts,
                "rationale": f"{PLACEHOLDER} took the first open transition, '{option['name']}'."}
    return {"failure": {"category": "judgment",
                        "reason": f"{PLACEHOLDER} no offered transition is open to this run"}}


def reflection_script(brief: dict[str, Any]) -> dict[str, Any]:
    """The offline model's reflection: a plan made of what the brief says, labelled as scripted. Its
    priorities are the mission, the period's failed runs and the open goals; its goals are the open
    goals checked against a KPI, else each KPI of the agent with a target (``NAME<=TARGET`` for a KPI
    whose lower values are better); with none, it says so. A period with failed runs leaves a lesson."""
    reflection = brief["reflection"]
    mission = (brief.get("agent") or {}).get("mission") or "the work the spec gives me"
    runs = reflection.get("runs") or {}
    failed = (runs.get("by_outcome") or {}).get("failed", 0)
    priorities = [f"{PLACEHOLDER} {mission}"[:500]]
    if failed:
        priorities.append(f"{PLACEHOLDER} find out why {failed} run(s) failed since {reflection.get('since')}")
    goals = []
    for goal in reflection.get("goals") or []:
        if goal.get("state") in ("active", "paused", "stalled") and not str(goal.get("check", "")).startswith("`"):
            goals.append({"objective": goal["objective"][:500], "kpi": goal["check"].replace(" ", ""),
                          "goal_id": goal["id"]})
            priorities.append(f"{PLACEHOLDER} goal {goal['id']}: {goal['objective']}"[:500])
    if not goals:
        for kpi in reflection.get("kpis") or []:
            if kpi.get("target") is not None:
                op = "<=" if kpi.get("direction") == "down" else ">="
                goals.append({"objective": f"{PLACEHOLDER} bring {kpi['name']} to its target",
                              "kpi": f"{kpi['name']}{op}{kpi['target']:g}"})
    plan = {"priorities": priorities[:20], "goals": goals[:20], "stop_doing": [],
            "no_kpi_goal_because": "" if goals else f"{PLACEHOLDER} no KPI with a target is linked to this agent",
            "reason": f"{PLACEHOLDER} reflected on {runs.get('count', 0)} run(s) since {reflection.get('since')}"}
    memories = [{"kind": "lesson", "text": f"{PLACEHOLDER} {failed} of {runs.get('count', 0)} run(s) failed in "
                 f"the period since {reflection.get('since')}", "confidence": 0.5}] if failed else []
    return {"plan": plan, "memories": memories,
            "rationale": f"{PLACEHOLDER} a plan from the mission, the open goals and the KPIs of the brief."}


def _placeholder(schema: dict[str, Any], name: str) -> Any:
    """A value of the field's type: labelled text for strings (padded to ``minLength``), the smallest
    allowed number, ``False``, or an empty list or object."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return {}
    text = f"{PLACEHOLDER} placeholder for '{name}': no model wrote this."
    return text.ljust(int(schema.get("minLength", 0)), ".")


def _load_script(target: str) -> OfflineScript:
    """The ``module:function`` named by ``offline_script``. Raises :class:`UsageError`."""
    import importlib

    module_name, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UsageError(f"llm runner: offline_script '{target}' cannot be loaded: {exc}") from None


def offline_model(script: OfflineScript | None = None) -> FunctionModel:
    """A :class:`FunctionModel` that answers every request with ``script(brief)`` as its decision (the
    :func:`default_script` unless given). The brief is the one of the :class:`LLMRunner` run in progress."""
    script = script or default_script

    async def scripted(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        brief = _current_brief.get()
        if brief is None:
            raise UserError("the offline model answers only inside an LLMRunner run")
        decision = dict(script(brief))
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, decision)])

    return FunctionModel(scripted, model_name=OFFLINE)


# -- cost ------------------------------------------------------------------------------------------


def compute_cost(usage: Any, model: str, *, provider: str | None = None,
                 provider_api_url: str | None = None) -> tuple[float, bool]:
    """``(cost in USD, known)`` of ``usage`` (anything with ``input_tokens`` and ``output_tokens``, e.g. a
    pydantic-ai ``RunUsage``) on ``model`` (``gpt-4o-mini``, or ``openai:gpt-4o-mini``), from genai-prices'
    bundled price data (no network). An unknown model or provider is ``(0.0, False)``."""
    from genai_prices import Usage, calc_price

    if ":" in model and provider is None and provider_api_url is None:
        provider, _, model = model.partition(":")
    try:
        if provider_api_url:
            price = calc_price(Usage(**_token_counts(usage)), model, provider_api_url=provider_api_url)
        else:
            price = calc_price(Usage(**_token_counts(usage)), model, provider_id=provider)
    except (LookupError, ValueError):
        return 0.0, False
    return float(price.total_price), True


def spec_cost(usage: Any, price: ModelPrice) -> float:
    """The cost in USD of ``usage`` at a price of the spec's ``models:`` table (USD per million tokens),
    computed by genai-prices as for its own table (cached input at ``cache_read_mtok`` /
    ``cache_write_mtok`` when set, else at ``input_mtok``)."""
    from decimal import Decimal

    from genai_prices import Usage
    from genai_prices.types import ModelPrice as GenaiModelPrice

    rates = {key: Decimal(str(value)) for key, value in price.model_dump().items() if value is not None}
    return float(GenaiModelPrice(**rates).calc_price(Usage(**_token_counts(usage)))["total_price"])


def _token_counts(usage: Any) -> dict[str, int]:
    return {key: int(getattr(usage, key, 0) or 0)
            for key in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")}


PriceTable = Mapping[str, ModelPrice] | Callable[[], Mapping[str, ModelPrice]]
"""The spec's ``models:`` prices by model string, or a function returning the current table."""


# -- the runner ------------------------------------------------------------------------------------


class LLMRunner:
    """``llm``: a language model decides the run. See the module docstring for the spec keys.

    ``authorize_tool(tool, arguments)`` checks and records each tool call (and raises to refuse it);
    ``tools`` maps tool names to their spec (``description``, ``command``), or is a function returning
    that map; ``prices`` is the spec's ``models:`` table (or a function returning it); ``company`` (a
    :class:`~roster.store.CompanyStore`) serves the read tools of
    :mod:`~roster.runtime.llm_tools` (without it the model gets none); ``model`` replaces the configured
    model (a test's :class:`FunctionModel`).

    After each run, :attr:`delivered` says whether the model was shown the brief (it answered at least
    once): the runtime marks the brief's messages read only then."""

    kind = "llm"

    def __init__(self, config: Mapping[str, Any], *, authorize_tool: AuthorizeTool | None = None,
                 tools: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
                 workdir: Path | None = None, model: Model | None = None, company: Any = None,
                 prices: PriceTable | None = None) -> None:
        self.config = parse_config(config)
        self.authorize_tool = authorize_tool
        self._tools = tools
        self.company = company
        self.prices = prices
        """The spec's ``models:`` table (or a function returning the current one): a price there for this
        runner's model string extends and overrides genai-prices'."""
        self.delivered = False
        self.workdir = workdir
        self._model_override = model
        self.scripted = model is None and self.config.model == OFFLINE
        self._reset_usage()

    # -- usage of the last run ----------------------------------------------------------------------

    def _reset_usage(self) -> None:
        self.model_name: str = (self._model_override.model_name if self._model_override is not None
                                else self.config.model)
        self.input_tokens = 0
        self.output_tokens = 0
        self.requests = 0
        self.cost_usd = 0.0
        self.cost_known = False

    @property
    def last_usage(self) -> Usage:
        """What the last run cost, for the dispatcher's run record (see :class:`Usage`): ``cost_usd`` is
        ``None`` when the model could not be priced (neither the spec's ``models:`` nor genai-prices know
        it), and 0 for the offline scripted model, which calls no provider."""
        cost = self.cost_usd if self.cost_known or self.scripted else None
        return Usage(self.model_name, self.input_tokens, self.output_tokens, cost)

    def _record_usage(self, usage: Any) -> None:
        """Keep the tokens of ``usage`` and price them: the spec's ``models:`` price for the configured model
        string first, then genai-prices' (by the provider's API URL when ``base_url`` is set)."""
        self.input_tokens = int(usage.input_tokens or 0)
        self.output_tokens = int(usage.output_tokens or 0)
        self.requests = int(getattr(usage, "requests", 0) or 0)
        table = self.prices() if callable(self.prices) else (self.prices or {})
        price = table.get(self.config.model)
        if self.scripted:
            self.cost_usd, self.cost_known = 0.0, False
        elif price is not None:
            self.cost_usd, self.cost_known = spec_cost(usage, price), True
        elif self._model_override is not None:  # priced by its own name and system, if genai-prices knows them
            self.cost_usd, self.cost_known = compute_cost(usage, self._model_override.model_name,
                                                          provider=self._model_override.system)
        elif self.config.base_url:
            self.cost_usd, self.cost_known = compute_cost(usage, self.config.model_id,
                                                          provider_api_url=self.config.base_url)
        else:
            self.cost_usd, self.cost_known = compute_cost(usage, self.config.model_id,
                                                          provider=self.config.provider)

    # -- one run ------------------------------------------------------------------------------------

    def run(self, brief: Brief) -> RunResult:
        self._reset_usage()
        self.delivered = False
        data = json.loads(brief.to_json())
        token = _current_brief.set(data)
        try:
            return _drive(lambda: self._run(data))
        finally:
            _current_brief.reset(token)

    async def _run(self, brief: dict[str, Any]) -> RunResult:
        model = self._model()
        tools = self._granted_tools(brief)
        reserved = {OUTPUT_TOOL, *(READ_TOOLS if self.company is not None else ())}
        clash = sorted(name for name, _, _ in tools if name in reserved)
        if clash:
            raise RunnerExit(f"configuration problem: the spec's tool(s) {brief_text.names(clash)} have the name "
                             f"of one of the llm runner's own tools ({brief_text.names(sorted(reserved))}); "
                             "rename them in the spec")
        reads = list(READ_TOOLS.values()) if self.company is not None else []
        reader = AgentReads(self.company, (brief.get("agent") or {}).get("handle", ""),
                            (brief.get("task") or {}).get("id")) if reads else None
        agent = Agent(
            model,
            output_type=ToolOutput(_decision_type(brief), name=OUTPUT_TOOL,
                                   description="Submit your decision for this run; call it once, last",
                                   max_retries=self.config.output_retries),
            instructions=instructions_for(brief, [(name, description) for name, description, _ in tools]
                                          + [(t.name, t.description) for t in reads]),
            tools=[self._tool(name, description, command) for name, description, command in tools]
            + [_read_tool(tool, reader) for tool in reads],
            retries={"tools": self.config.output_retries, "output": self.config.output_retries},
            model_settings=ModelSettings(timeout=self.config.timeout, max_retries=self.config.max_retries),
            name=f"roster-{(brief.get('agent') or {}).get('handle', 'agent')}",
        )

        @agent.output_validator
        def validate(decision: Decision | WakeDecision) -> Decision | WakeDecision:
            problems = check_decision(decision, brief)
            if problems:
                raise ModelRetry("Your decision cannot be applied: " + "; ".join(problems) + ". Call "
                                 f"'{OUTPUT_TOOL}' again with a corrected decision.")
            return decision

        task = brief.get("task")
        prompt = (f"Decide the next step for task {task.get('id')} ('{task.get('title', '')}')." if task else
                  f"Act on what woke you: {brief.get('trigger') or 'see the brief'}.")
        with capture_run_messages() as messages:
            try:
                async with agent:
                    result = await agent.run(prompt, usage_limits=UsageLimits(request_limit=self.config.max_requests))
            except Exception as exc:
                self.delivered = any(isinstance(m, ModelResponse) for m in messages)
                self._record_usage(_usage_of(messages))
                translated = self._translate(exc)
                if translated is exc:
                    raise
                if isinstance(translated, RosterError) and not isinstance(translated, RunnerError):
                    raise translated from None  # a refusal from Roster itself (a tool denial): as it was raised
                raise translated from exc
        self.delivered = True
        self._record_usage(result.usage)  # a property in pydantic-ai 2.x (calling it is deprecated)
        return self._result(result.output)

    def _result(self, decision: Decision | WakeDecision) -> RunResult:
        rationale = decision.rationale
        failure = None
        if decision.failure is not None:
            reason = decision.failure.reason
            if self.scripted and OFFLINE_TAG not in reason:
                reason = f"{reason} {OFFLINE_TAG}"
            failure = FailureOut(category=decision.failure.category, reason=reason)
        if self.scripted and OFFLINE_TAG not in rationale:
            rationale = f"{rationale} {OFFLINE_TAG}".strip()
        taken = isinstance(decision, Decision) and failure is None
        return RunResult(transition=decision.transition if taken else None,
                         writes=dict(decision.writes) if taken else {}, rationale=rationale,
                         artifacts=list(getattr(decision, "artifacts", [])), checks=list(getattr(decision, "checks", [])),
                         tasks=list(decision.tasks), messages=list(decision.messages),
                         memories=list(decision.memories), failure=failure,
                         plan=getattr(decision, "plan", None), goals=list(getattr(decision, "goals", [])),
                         close_goals=list(getattr(decision, "close_goals", [])))

    # -- the model ----------------------------------------------------------------------------------

    def _model(self) -> Model:
        """The model of this run, built afresh (its HTTP client is closed when the run ends)."""
        if self._model_override is not None:
            return self._model_override
        config = self.config
        if config.model == OFFLINE:
            return offline_model(_load_script(config.offline_script) if config.offline_script else None)
        provider, name = config.provider, config.model_id
        if provider == "openai":
            from pydantic_ai.models.openai import OpenAIChatModel
            from pydantic_ai.providers.openai import OpenAIProvider
            from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider

            key = self._api_key("OPENAI_API_KEY")
            if config.base_url:
                return OpenAIChatModel(name, provider=OpenAICompatibleProvider(
                    "openai-compatible", base_url=config.base_url, api_key=key))
            return OpenAIChatModel(name, provider=OpenAIProvider(api_key=key))
        if provider == "anthropic":
            from pydantic_ai.models.anthropic import AnthropicModel
            from pydantic_ai.providers.anthropic import AnthropicProvider

            key = self._api_key("ANTHROPIC_API_KEY")
            return AnthropicModel(name, provider=AnthropicProvider(api_key=key, base_url=config.base_url))
        from pydantic_ai.models import infer_model

        try:
            return infer_model(config.model)
        except (UserError, ImportError) as exc:
            raise RunnerExit(f"configuration problem with model '{config.model}': {exc}") from None

    def _api_key(self, default_env: str) -> str | None:
        """The API key from ``api_key_env`` (or ``default_env``). It is required unless a ``base_url`` is set
        without ``api_key_env`` (a local OpenAI-compatible server often needs none)."""
        env = self.config.api_key_env or default_env
        key = os.environ.get(env)
        if not key and (self.config.base_url is None or self.config.api_key_env is not None):
            raise RunnerExit(f"configuration problem: the environment variable {env} holds no API key for model "
                             f"'{self.config.model}'")
        return key or None

    # -- tools --------------------------------------------------------------------------------------

    def _granted_tools(self, brief: dict[str, Any]) -> list[tuple[str, str, str | None]]:
        """``(name, description, command)`` of each tool the brief grants, and only those."""
        specs = self._tools() if callable(self._tools) else (self._tools or {})
        granted = []
        for entry in brief.get("tools") or []:
            name = entry.get("name") if isinstance(entry, Mapping) else str(entry)
            spec = entry if isinstance(entry, Mapping) else specs.get(name)
            description = _get(spec, "description") or f"The '{name}' tool."
            granted.append((name, description, _get(spec, "command")))
        return granted

    def _tool(self, name: str, description: str, command: str | None) -> Tool:
        async def call(**arguments: Any) -> str:
            if self.authorize_tool is None:
                raise RunnerExit(f"configuration problem: tool '{name}' was called but this llm runner has no "
                                 "authorize_tool callback, so the call cannot be checked or recorded")
            self.authorize_tool(name, dict(arguments))
            if not command:
                return (f"The call to '{name}' was authorised and recorded in the audit log. The tool has no "
                        "command, so nothing else ran.")
            return _run_command(name, command, arguments, self.workdir, self.config.timeout)

        return Tool.from_schema(call, name=name, description=description, json_schema=_TOOL_ARGUMENTS_SCHEMA)

    # -- failures -----------------------------------------------------------------------------------

    def _translate(self, exc: Exception) -> BaseException:
        """The Roster error for a failed run (RosterErrors, e.g. a tool denial, pass through unchanged)."""
        from pydantic_ai import models

        leaf = _first_leaf(exc)
        model = f"'{self.model_name}'" + (f" at {self.config.base_url}" if self.config.base_url else "")
        retries = f"after up to {self.config.max_retries} retries"
        if isinstance(leaf, RosterError):
            return leaf
        if isinstance(leaf, ModelRequestTimeout | ModelTimeoutError):
            return RunnerTimeout(f"model {model} did not answer within {self.config.timeout:g} s ({retries}): "
                                 f"{leaf}")
        if isinstance(leaf, ModelQuotaExceededError):
            return RunnerExit(f"configuration problem: the account behind model {model} has no quota or credit "
                              f"left: {leaf}")
        if isinstance(leaf, ModelContextWindowExceededError):
            return RunnerExit(f"the brief is too long for model {model} (its context window): {leaf}")
        if isinstance(leaf, ModelHTTPError):
            status = leaf.status_code
            if status in (408, 429) or status >= 500:
                return RunnerCrashed(f"model {model} answered HTTP {status} ({retries}): {leaf}")
            return RunnerExit(f"configuration problem: model {model} refused the request with HTTP {status} "
                              f"(check the API key, the model name and base_url): {leaf}")
        if isinstance(leaf, ModelRateLimitError | ModelUnavailableError | ModelServerError | ModelConnectionError):
            return RunnerCrashed(f"model {model} is unreachable or overloaded ({retries}): {leaf}")
        if isinstance(leaf, ModelRequestRejectedError):
            return RunnerExit(f"configuration problem: model {model} refused the request: {leaf}")
        if isinstance(leaf, ModelAPIError):
            return RunnerCrashed(f"model {model} failed: {leaf}")
        if isinstance(leaf, UnexpectedModelBehavior | UsageLimitExceeded):
            return MalformedOutput(f"model {model} gave no usable decision: {leaf}")
        if isinstance(leaf, UserError):
            return RunnerExit(f"configuration problem with model {model}: {leaf}")
        if isinstance(leaf, RuntimeError) and not models.ALLOW_MODEL_REQUESTS:
            return RunnerExit(f"configuration problem: model requests are disabled in this process "
                              f"(pydantic_ai.models.ALLOW_MODEL_REQUESTS is False), so model {model} was not asked")
        if isinstance(leaf, Exception):
            return RunnerCrashed(f"the llm run with model {model} failed: {type(leaf).__name__}: {leaf}")
        return exc


def _read_tool(tool: Any, reader: AgentReads) -> Tool:
    """The pydantic-ai tool of one read tool (:data:`~roster.runtime.llm_tools.READ_TOOLS`), answered by
    ``reader``, the run's agent and task."""
    async def call(**arguments: Any) -> str:
        return reader.call(tool.name, arguments)

    return Tool.from_schema(call, name=tool.name, description=tool.description, json_schema=tool.json_schema())


def _get(spec: Any, key: str) -> Any:
    if spec is None:
        return None
    return spec.get(key) if isinstance(spec, Mapping) else getattr(spec, key, None)


def _first_leaf(exc: BaseException) -> BaseException:
    """The first RosterError inside an exception group, else its first leaf (or ``exc`` itself)."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []

    def walk(group: BaseExceptionGroup) -> None:
        for inner in group.exceptions:
            walk(inner) if isinstance(inner, BaseExceptionGroup) else leaves.append(inner)

    walk(exc)
    return next((e for e in leaves if isinstance(e, RosterError)), leaves[0] if leaves else exc)


def _usage_of(messages: list[ModelMessage]) -> Any:
    """Token usage summed over the model responses of a run that ended in an error."""
    from pydantic_ai.usage import RunUsage

    total = RunUsage()
    for message in messages:
        if isinstance(message, ModelResponse):
            total.incr(message.usage)
            total.requests += 1
    return total


def _run_command(name: str, command: str, arguments: Mapping[str, Any], workdir: Path | None,
                 timeout: float) -> str:
    """Run an authorised tool's command: arguments as JSON on stdin, in ``workdir``, in its own process
    group (killed whole at the timeout). Its exit status and output go back to the model."""
    try:
        done = run_in_session(shlex.split(command), cwd=workdir, timeout=timeout,
                              input=json.dumps(dict(arguments)).encode())
    except (OSError, ValueError) as exc:
        return f"Tool '{name}' could not start '{command}': {exc}"
    except subprocess.TimeoutExpired:
        return f"Tool '{name}' ran past its timeout of {timeout:g} s and was killed."
    out = done.stdout.decode(errors="replace")
    err = done.stderr.decode(errors="replace")
    text = f"Tool '{name}' exited {done.returncode}.\nstdout:\n{out}"
    if err.strip():
        text += f"\nstderr:\n{err}"
    return text if len(text) <= MAX_TOOL_OUTPUT else text[:MAX_TOOL_OUTPUT] + "\n[output truncated]"


def _drive(make_coroutine: Callable[[], Any]) -> Any:
    """Run a coroutine to completion from sync code: on a fresh event loop in this thread, or in a worker
    thread when this thread already runs a loop. The brief context goes along."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(context.run, lambda: asyncio.run(make_coroutine())).result()
