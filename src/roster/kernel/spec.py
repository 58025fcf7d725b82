"""The workforce spec as typed models: one company, its structure, workflows, principals, tools and KPIs.

The models check shapes; :func:`reference_problems` checks that every name used is defined. Both report
problems as ``(key path, message)`` so the YAML loader (:mod:`roster.specfile`) can add file and line.

A spec, in YAML (see ``src/roster/templates/roster.yaml`` for a commented one)::

    company: acme
    workflows:
      fix-lint:
        states: [found, planned, built, verified, merged, rejected]
        initial: found
        fields: {rule: {type: string}, spec: {type: string, minLength: 20}}
        transitions:
          plan: {from: found, to: planned, by: [planner], writes: [spec], requires: {fields: [rule]}}
    agents:
      planner: {role: planner, reports_to: alice}
    humans:
      alice: {display_name: Alice}
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

from roster.kernel.runner_spec import KNOWN_PROVIDERS, RunnerSpec, did_you_mean, is_known_provider
from roster.errors import UsageError
from roster.kernel.plans import DEFAULT_REFLECT_CRON
from roster.kernel.webhooks import EVENTS

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
"""A name: lowercase letter first, then lowercase letters, digits, ``-`` or ``_``; at most 63 characters."""

DEFAULT = "default"
ANY_HUMAN = "human"
"""In ``by`` or ``approval.by``: any active human principal of the company."""
ANY_AGENT = "agent"
"""In ``by``: any active agent principal of the company."""
KEYWORDS = frozenset({ANY_HUMAN, ANY_AGENT})


def _known_event(name: str) -> str:
    if name not in EVENTS:
        raise ValueError(f"unknown webhook event '{name}'{did_you_mean(name, list(EVENTS))}; expected one of "
                         f"{', '.join(EVENTS)}")
    return name


def _env_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name):
        raise ValueError(f"'secret_env' names an environment variable (letters, digits and '_', not starting with a "
                         f"digit), not {name!r}")
    return name


def _no_secret(_value: Any) -> Any:
    raise ValueError("a webhook's secret never goes in the spec file: put it in an environment variable and name "
                     "that variable with 'secret_env' (e.g. secret_env: ROSTER_WEBHOOK_OPS_SECRET; 'roster webhooks "
                     "secret' makes one)")


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


NameList = Annotated[list[Name], BeforeValidator(_one_or_many)]
"""A list of names; a single name is accepted and read as a list of one."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TeamMemory(_Model):
    """Who may use a portfolio's team memory pad (``team:<workspace>/<portfolio>``): agent handles or roles.
    Humans of the company may always read and write it."""

    read: NameList = []
    write: NameList = []


class Portfolio(_Model):
    description: str = ""
    team_memory: TeamMemory = TeamMemory()


class Workspace(_Model):
    description: str = ""
    portfolios: dict[Name, Portfolio] = Field(default_factory=lambda: {DEFAULT: Portfolio()})


class Requires(_Model):
    """Preconditions of a transition, checked after its writes are applied."""

    fields: NameList = []
    """Fields that must be present (and valid against the schema)."""
    artifacts: NameList = []
    """Artifact kinds that must exist on the task."""
    checks: NameList = []
    """Named checks whose latest recorded result must be a pass."""


Duration = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*[dhm]$")]
"""A duration: a whole number and a unit, ``d`` (days), ``h`` (hours) or ``m`` (minutes), e.g. ``7d``."""


def duration_seconds(text: str) -> int:
    """Seconds in a :data:`Duration` such as ``7d``, ``12h`` or ``45m``."""
    return int(text[:-1]) * {"d": 86400, "h": 3600, "m": 60}[text[-1]]


_WINDOW = re.compile(r"^[1-9][0-9]{0,5}[dhm]$")


def window_seconds(text: str, *, name: str = "--window") -> int:
    """Seconds in a report's window given by a person (``--window 30d``, ``?window=7d``): a
    :data:`Duration` of at most 6 digits. Raises :class:`UsageError` naming ``name`` and saying what is
    accepted otherwise."""
    if not _WINDOW.match(text):
        raise UsageError(f"{name} {text!r} is not a duration: use a whole number and d, h or m, e.g. 30d "
                         "(at most 6 digits)")
    return duration_seconds(text)


class Approval(_Model):
    by: NameList = Field(min_length=1)
    """Who may approve: a principal handle, a role, or ``human``. Nobody approves their own request."""
    expires_in: Duration = "7d"
    """How long a request waits for a decision before it expires."""
    relaxable: bool = False
    """Whether an agent in stage ``autonomous`` may skip this edge while review volume shows it
    over-reviewed (docs/fitness.md); the move is audited with that evidence."""


class Transition(_Model):
    """One edge of a workflow and its contract."""

    from_: NameList = Field(alias="from", min_length=1)
    to: Name
    by: NameList = Field(min_length=1)
    """Who may perform it: principal handles, roles, ``human`` or ``agent``."""
    writes: NameList = []
    """The only fields this transition may change."""
    requires: Requires = Requires()
    produces: NameList = []
    """Artifact kinds the transition must have produced (they must exist on the task when it commits)."""
    approval: Approval | None = None
    offered: bool = True
    """Whether the runtime offers a task in a ``from`` state to the agents this transition names (starts
    a run for it). ``false``: no run is started for this transition; an agent takes it through the API
    while working on something else, e.g. the merger landing every fix of a review it merged."""
    allow_open_children: bool = False
    """Whether the transition may finish the task (reach a terminal state) while delegated children are
    still open. By default it may not: the delegator stays accountable."""
    description: str = ""


class Workflow(_Model):
    """A state machine of tasks. ``fields`` maps a field name to its JSON Schema (draft 2020-12)."""

    description: str = ""
    portfolio: str = f"{DEFAULT}/{DEFAULT}"
    """Where the workflow lives, as ``workspace/portfolio``."""
    states: NameList = Field(min_length=1)
    initial: Name
    terminal: NameList | None = None
    """States in which a task is no longer live. Default: the states with no outgoing transition."""
    fields: dict[Name, dict[str, Any]] = {}
    required: NameList = []
    """Fields that must be present when a task is created."""
    kpis: NameList = []
    """The KPIs this workflow exists to move (shown with its approval requests)."""
    transitions: dict[Name, Transition] = {}

    def terminal_states(self) -> frozenset[str]:
        if self.terminal is not None:
            return frozenset(self.terminal)
        sources = {s for t in self.transitions.values() for s in t.from_}
        return frozenset(s for s in self.states if s not in sources)

    def fields_schema(self) -> dict[str, Any]:
        """The JSON Schema of a task's whole ``fields`` object."""
        return {
            "type": "object",
            "properties": dict(self.fields),
            "required": list(self.required),
            "additionalProperties": False,
        }


Runner = RunnerSpec
"""How an agent thinks for one run: a ``program``, ``llm`` or ``process`` block, each with its own keys
(see :mod:`roster.kernel.runner_spec`)."""


Tier = Literal["read-only", "bounded-mutator", "high-impact-executor", "coordinator"]
"""An agent's autonomy tier; see :mod:`roster.kernel.rights` for what each allows."""


class AgentRights(_Model):
    """An agent's grants. A grant left out (``None``) takes the default documented in
    :mod:`roster.kernel.rights`; an empty list grants nothing.

    Scopes are ``*`` (the whole company), ``workspace``, ``workspace/portfolio`` or
    ``workspace/portfolio/workflow``; transitions are ``workflow.transition``.
    """

    read: list[str] | None = None
    write: list[str] | None = None
    create: list[str] | None = None
    assign: list[str] | None = None
    transitions: list[str] | None = None
    approve: list[str] | None = None
    message: list[str] | None = None
    """Whom the agent may send messages to: handles, roles, ``human``, ``agent`` or ``*`` (anyone in the
    company). Default: ``human`` (every agent may ask a human)."""


class TaskCondition(_Model):
    """Holds when at least ``min`` tasks of ``workflow`` are in one of ``states`` (any state if empty)."""

    workflow: Name
    states: NameList = []
    min: int = Field(default=1, ge=1)


class Condition(_Model):
    """A cheap check, evaluated without any model: a count of tasks, or a command that exits 0."""

    tasks: TaskCondition | None = None
    command: str | None = None
    timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds the command may run; past it, the condition does not hold."""


class Trigger(_Model):
    """What wakes an agent besides task arrival (always on): exactly one of ``every`` (an interval),
    ``cron`` (a cron expression, UTC), ``event`` (a named event, ``roster emit``) or ``when`` (a condition
    watcher, which fires when its condition starts to hold)."""

    every: Duration | None = None
    cron: str | None = None
    event: Name | None = None
    when: Condition | None = None

    def key(self) -> str:
        """A stable name for this trigger's state (``every:10m``, ``event:new-commit``...)."""
        if self.every:
            return f"every:{self.every}"
        if self.cron:
            return f"cron:{self.cron}"
        if self.event:
            return f"event:{self.event}"
        assert self.when is not None
        when = self.when.tasks.model_dump_json() if self.when.tasks else self.when.command
        return f"when:{when}"


class Reflect(_Model):
    """When the agent reflects on its mission and revises its plan: ``cron`` (UTC; ``null``: never).
    Without this block an agent with a mission reflects nightly (see :mod:`roster.kernel.plans`)."""

    cron: str | None = DEFAULT_REFLECT_CRON


class Agent(_Model):
    display_name: str = ""
    tier: Tier = "read-only"
    rights: AgentRights = AgentRights()
    triggers: list[Trigger] = []
    role: str = ""
    mission: str = ""
    reflect: Reflect | None = None
    """The reflection schedule (see :class:`Reflect`); left out, nightly when ``mission`` is set."""
    roles: NameList = []
    runner: Runner | None = None
    tools: NameList = []
    kpis: NameList = []
    reports_to: Name | None = None
    context_budget: int = Field(default=8000, ge=500, le=1_000_000)
    """Tokens the brief of one run may take (estimated as UTF-8 bytes / 4; see runtime/context.py)."""
    max_concurrent_runs: int = Field(default=1, ge=1, le=1000)
    """Runs of this agent in flight at once (default 1: an agent works one task at a time). A higher
    value lets one agent take several tasks of its queue in parallel, each with its own lease."""
    stage: Stage | dict[Name, Stage] = "bounded"
    """Its autonomy stage (:mod:`roster.kernel.stages`) on every workflow, or per workflow (others:
    ``bounded``). A stage a human or the criteria set later (``roster stage``) takes precedence."""


class Human(_Model):
    display_name: str = ""
    email: str = ""
    roles: NameList = []
    reports_to: Name | None = None
    scopes: list[str] | None = None
    """Where this human works: workspaces, ``workspace/portfolio`` or ``workspace/portfolio/workflow``.
    Left out, or ``['*']``: the whole company. A human with narrower scopes reads and acts on the workflows
    inside them only, and may neither administer the company nor oversee every agent (policy
    ``human:<handle>:scopes`` in :mod:`roster.kernel.rights`)."""


class Tool(_Model):
    description: str = ""
    command: str | None = None
    approval: Approval | None = None
    """If set, each call needs an approved request first (an approval edge on the tool)."""


class KpiMeasure(_Model):
    """How the runtime measures a KPI, without any model: ``command`` (a shell command, run in the spec's
    folder) prints the value, a number, as the last line of its stdout. It runs every ``every`` and
    after each transition named in ``after`` (of a workflow that lists the KPI), for at most
    ``timeout`` seconds."""

    command: str = Field(min_length=1)
    every: Duration | None = None
    after: NameList = []
    timeout: float = Field(default=60.0, gt=0, le=3600)


class Kpi(_Model):
    description: str = ""
    unit: str = ""
    direction: Literal["up", "down"] = "up"
    """Whether a higher (``up``) or lower (``down``) value is better."""
    target: float | None = None
    measure: KpiMeasure | None = None
    """A program that measures it (readings are kept with their time: ``roster kpi``)."""


class Budget(_Model):
    """A spending limit over a calendar period (UTC), for an agent, a portfolio or the company: exactly one
    of ``usd`` (US dollars, over the runs that could be priced) or ``tokens`` (model tokens in and out,
    which every run reports, priced or not).

    ``scope`` is ``company``, ``agent:<handle>`` or ``portfolio:<workspace>/<portfolio>``. At
    ``warn_at`` (a fraction) the runtime warns; at the full amount it is a hard stop. A ``usd`` budget
    over runs that could not be priced cannot be enforced in full: the runtime warns about it once per
    period (``budget.unpriced``).
    """

    scope: str
    usd: float | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)
    period: Literal["day", "week", "month"] = "month"
    warn_at: float = Field(default=0.8, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_unit(self) -> Budget:
        if (self.usd is None) == (self.tokens is None):
            raise ValueError("a budget needs exactly one of 'usd' (US dollars) or 'tokens' (model tokens in and "
                             "out)")
        return self

    @property
    def unit(self) -> Literal["usd", "tokens"]:
        """What the budget counts: ``usd`` or ``tokens``."""
        return "usd" if self.usd is not None else "tokens"

    @property
    def limit(self) -> float:
        """The amount, in :attr:`unit`."""
        return float(self.usd if self.usd is not None else self.tokens or 0)


class ModelPrice(_Model):
    """The price of one model, in USD per million tokens (genai-prices' ``*_mtok`` terms). It extends and
    overrides genai-prices' table for the ``llm`` runner's model string it is keyed by (``models:`` in
    the spec, e.g. ``openai:my-finetune``). Cached input tokens are priced as input unless
    ``cache_read_mtok`` / ``cache_write_mtok`` say otherwise."""

    input_mtok: float = Field(ge=0)
    output_mtok: float = Field(ge=0)
    cache_read_mtok: float | None = Field(default=None, ge=0)
    cache_write_mtok: float | None = Field(default=None, ge=0)


class Limits(_Model):
    """Size limits of the company's data, in bytes."""

    artifact_bytes: int = Field(default=10_485_760, ge=1, le=1_073_741_824)
    """Largest content of one artifact version (default 10 MiB)."""


class MemoryPolicy(_Model):
    """How the runtime keeps memory pads tidy."""

    consolidate_every: Duration | None = "1d"
    """How often ``roster up`` consolidates every pad (merge duplicates, drop expired); ``null``: never."""


Stage = Literal["shadow", "assist", "bounded", "autonomous"]
"""An autonomy stage, lowest first (see :mod:`roster.kernel.stages`)."""

Metric = Literal["outcomes", "success_rate", "approval_rate", "days_without_rejection", "cost_vs_pool_median",
                 "burden_per_outcome", "p95_seconds"]
"""What a stage criterion may name (:data:`roster.kernel.stages.METRICS`)."""


class Criterion(_Model):
    """One bound on one fitness metric of an (agent, workflow): exactly one of ``at_least``, ``below``
    or ``above``."""

    metric: Metric
    at_least: float | None = None
    below: float | None = None
    above: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Criterion:
        if sum(b is not None for b in (self.at_least, self.below, self.above)) != 1:
            raise ValueError("give exactly one of at_least, below or above")
        return self


class ReviewVolume(_Model):
    """When an approval edge is flagged in ``roster approvals stats`` (see docs/fitness.md)."""

    min_requests: int = Field(default=20, ge=1)
    """Decided requests an edge needs in the window before it is judged at all."""
    over_reviewed_at: float = Field(default=0.98, gt=0, le=1)
    """Approved share of decided requests at or above which the edge is over-reviewed."""
    weak_upstream_at: float = Field(default=0.25, gt=0, le=1)
    """Rejected share of decided requests at or above which the edge's upstream contract is weak."""


class FitnessPolicy(_Model):
    """How fitness is judged and used (see docs/fitness.md)."""

    settle: Duration = "1d"
    """How long a transition must stick (not reworked, rejected, reverted or followed by a failed check)
    before it counts as a success; corrections later than this are not counted."""
    min_outcomes: int = Field(default=10, ge=1)
    """Settled outcomes a figure needs; below it the answer is "not enough evidence", never a rate."""
    selection: Literal["least-loaded", "fitness-weighted"] = "least-loaded"
    """Which agent of a pool gets a task: the least loaded, or one drawn by reputation."""
    exploration: float = Field(default=0.1, ge=0, le=1)
    """With ``fitness-weighted``: the share of a pool's tasks that go to the agents with the least
    evidence, so new agents gather it."""
    review: ReviewVolume = ReviewVolume()
    promote: list[Criterion] = Field(default_factory=lambda: [
        Criterion(metric="outcomes", at_least=20), Criterion(metric="success_rate", at_least=0.9),
        Criterion(metric="approval_rate", at_least=0.95), Criterion(metric="days_without_rejection", at_least=7)])
    """Expansion criteria, all of which must hold (over ``window``) for a promotion request with the
    evidence to go to the human inbox; ``[]``: never."""
    demote: list[Criterion] = Field(default_factory=lambda: [
        Criterion(metric="success_rate", below=0.7), Criterion(metric="cost_vs_pool_median", above=2)])
    """Breach criteria, any of which (with ``min_outcomes`` of evidence) demotes the agent one stage,
    audited and reversible by a human; ``[]``: never."""
    window: Duration = "30d"
    """The history the criteria judge."""
    evaluate_every: Duration | None = "1h"
    """How often ``roster up`` judges every (agent, workflow) against the criteria; ``null``: never."""
    retire_after: int = Field(default=2, ge=1)
    """Breaches while already in ``shadow`` before a retirement proposal goes to the human inbox."""


class Webhook(_Model):
    """A webhook: where to POST the events a human should hear about (see docs/webhooks.md). Deliveries are
    signed with the secret in the environment variable ``secret_env`` (Standard Webhooks: ``whsec_`` and
    base64); a secret is never written in the spec."""

    url: str
    events: list[Annotated[str, AfterValidator(_known_event)]] = Field(min_length=1)
    secret_env: Annotated[str, AfterValidator(_env_name)]
    format: Literal["roster", "slack"] = "roster"
    secret: Annotated[Any, AfterValidator(_no_secret)] = Field(default=None, exclude=True)
    """Never accepted: named only to refuse a secret written in the spec, on its own line."""

    @model_validator(mode="after")
    def _http_url(self) -> Webhook:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a webhook's url is an http:// or https:// URL with a host, not {self.url!r}")
        return self


class CompanySpec(_Model):
    """One company: the root of a ``roster.yaml``."""

    company: Name
    display_name: str = ""
    workspaces: dict[Name, Workspace] = Field(default_factory=lambda: {DEFAULT: Workspace()})
    workflows: dict[Name, Workflow] = {}
    agents: dict[Name, Agent] = {}
    humans: dict[Name, Human] = {}
    tools: dict[Name, Tool] = {}
    kpis: dict[Name, Kpi] = {}
    budgets: list[Budget] = []
    models: dict[str, ModelPrice] = {}
    """Prices of models by the ``llm`` runner's model string (``provider:model``), in USD per million
    tokens; they extend and override genai-prices' bundled table."""
    limits: Limits = Limits()
    memory: MemoryPolicy = MemoryPolicy()
    fitness: FitnessPolicy = FitnessPolicy()
    webhooks: dict[Name, Webhook] = {}
    """Per hook name: where the events humans should hear about are sent (approvals requested, escalations,
    budgets, holds, goals), signed; see docs/webhooks.md."""

    def roles(self) -> set[str]:
        return {r for p in (*self.agents.values(), *self.humans.values()) for r in p.roles}


Path = tuple[str | int, ...]


def reference_problems(spec: CompanySpec) -> list[tuple[Path, str]]:
    """Every name that is used but not defined, every duplicate, every bad schema and ``reports_to`` cycle.

    Returns a list of ``(key path, message)``; empty when the spec is consistent.
    """
    problems: list[tuple[Path, str]] = []
    handles = set(spec.agents) | set(spec.humans)
    roles = spec.roles()

    for handle in sorted(set(spec.agents) & set(spec.humans)):
        problems.append((("humans", handle), f"duplicate name '{handle}': it is already defined under agents"))
    for handle in sorted(handles & KEYWORDS):
        problems.append(
            (("agents" if handle in spec.agents else "humans", handle),
             f"'{handle}' is a reserved word in 'by' lists; choose another handle")
        )

    def check_actors(names: list[str], path: Path, allow_agent_keyword: bool = True, indexed: bool = True) -> None:
        for i, name in enumerate(names):
            keywords = KEYWORDS if allow_agent_keyword else {ANY_HUMAN}
            if name not in handles and name not in roles and name not in keywords:
                problems.append(
                    ((*path, i) if indexed else path, f"'{name}' names nobody; expected an agent or human handle "
                     f"({_listing(handles)}), a role ({_listing(roles)}) or '{ANY_HUMAN}'")
                )

    structure = {f"{w}/{p}" for w, ws in spec.workspaces.items() for p in ws.portfolios}
    for ws_name, ws in spec.workspaces.items():
        for pf_name, pf in ws.portfolios.items():
            for key in ("read", "write"):
                check_actors(getattr(pf.team_memory, key),
                             ("workspaces", ws_name, "portfolios", pf_name, "team_memory", key))
    for a_name, agent in spec.agents.items():
        for i, name in enumerate(agent.rights.message or []):
            if name != "*":
                check_actors([name], ("agents", a_name, "rights", "message", i), indexed=False)
    for wf_name, wf in spec.workflows.items():
        base: Path = ("workflows", wf_name)
        states = set(wf.states)
        if wf.portfolio not in structure:
            problems.append(((*base, "portfolio"), f"unknown portfolio '{wf.portfolio}'; expected one of "
                             f"{_listing(structure)} (as workspace/portfolio)"))
        for dup in _duplicates(wf.states):
            problems.append(((*base, "states"), f"duplicate state '{dup}'"))
        if wf.initial not in states:
            problems.append(((*base, "initial"), f"unknown state '{wf.initial}'; expected one of {_listing(states)}"))
        for i, s in enumerate(wf.terminal or []):
            if s not in states:
                problems.append(((*base, "terminal", i), f"unknown state '{s}'; expected one of {_listing(states)}"))
        for field_name, schema in wf.fields.items():
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                where = ".".join(str(p) for p in exc.path) or "the schema"
                problems.append(((*base, "fields", field_name),
                                 f"invalid JSON Schema at {where}: {exc.message}"))
        for i, kpi in enumerate(wf.kpis):
            if kpi not in spec.kpis:
                problems.append(((*base, "kpis", i),
                                 f"KPI '{kpi}' is referenced but not defined; expected one of {_listing(spec.kpis)}"))
        for i, f in enumerate(wf.required):
            if f not in wf.fields:
                problems.append(((*base, "required", i), f"unknown field '{f}'; expected one of {_listing(wf.fields)}"))
        for t_name, t in wf.transitions.items():
            tp: Path = (*base, "transitions", t_name)
            for i, s in enumerate(t.from_):
                if s not in states:
                    problems.append(((*tp, "from", i), f"unknown state '{s}'; expected one of {_listing(states)}"))
            if t.to not in states:
                problems.append(((*tp, "to"), f"unknown state '{t.to}'; expected one of {_listing(states)}"))
            check_actors(t.by, (*tp, "by"))
            if t.approval is not None:
                check_actors(t.approval.by, (*tp, "approval", "by"), allow_agent_keyword=False)
            for key, names in (("writes", t.writes), ("requires.fields", t.requires.fields)):
                for i, f in enumerate(names):
                    if f not in wf.fields:
                        problems.append(((*tp, *key.split("."), i),
                                         f"unknown field '{f}'; expected one of {_listing(wf.fields)}"))

    scopes = {"*"} | set(spec.workspaces) | structure | {
        f"{wf.portfolio}/{name}" for name, wf in spec.workflows.items()}
    for h_name, human in spec.humans.items():
        for i, scope in enumerate(human.scopes or []):
            if scope not in scopes:
                problems.append((("humans", h_name, "scopes", i),
                                 f"unknown scope '{scope}'; expected '*', a workspace, workspace/portfolio or "
                                 f"workspace/portfolio/workflow ({_listing(scopes - {'*'})})"))
    for a_name, agent in spec.agents.items():
        for grant in ("read", "write", "create", "assign"):
            for i, scope in enumerate(getattr(agent.rights, grant) or []):
                if scope not in scopes:
                    problems.append((("agents", a_name, "rights", grant, i),
                                     f"unknown scope '{scope}'; expected '*', a workspace, workspace/portfolio or "
                                     f"workspace/portfolio/workflow ({_listing(scopes - {'*'})})"))
        for grant in ("transitions", "approve"):
            for i, ref in enumerate(getattr(agent.rights, grant) or []):
                wf_name, _, t_name = ref.partition(".")
                wf = spec.workflows.get(wf_name)
                if wf is None or t_name not in wf.transitions:
                    known = {f"{w}.{t}" for w, x in spec.workflows.items() for t in x.transitions}
                    problems.append((("agents", a_name, "rights", grant, i),
                                     f"unknown transition '{ref}'; expected workflow.transition ({_listing(known)})"))
                elif grant == "approve" and wf.transitions[t_name].approval is None:
                    problems.append((("agents", a_name, "rights", grant, i),
                                     f"transition '{ref}' has no approval edge to approve"))
        if agent.reflect is not None and agent.reflect.cron is not None and not _valid_cron(agent.reflect.cron):
            problems.append((("agents", a_name, "reflect", "cron"), f"invalid cron expression "
                             f"'{agent.reflect.cron}'; expected five fields, e.g. '0 2 * * *', or null for never"))
        for i, trigger in enumerate(agent.triggers):
            tp: Path = ("agents", a_name, "triggers", i)
            chosen = [k for k in ("every", "cron", "event", "when") if getattr(trigger, k) is not None]
            if len(chosen) != 1:
                problems.append((tp, f"a trigger needs exactly one of every, cron, event or when; got "
                                     f"{', '.join(chosen) or 'none'}"))
            if trigger.cron is not None and not _valid_cron(trigger.cron):
                problems.append(((*tp, "cron"), f"invalid cron expression '{trigger.cron}'; expected five fields, "
                                                "e.g. '0 2 * * *'"))
            if trigger.when is not None:
                when = trigger.when
                if (when.tasks is None) == (when.command is None):
                    problems.append(((*tp, "when"), "a condition needs exactly one of tasks or command"))
                if when.tasks is not None:
                    wf = spec.workflows.get(when.tasks.workflow)
                    if wf is None:
                        problems.append(((*tp, "when", "tasks", "workflow"), f"unknown workflow "
                                         f"'{when.tasks.workflow}'; expected one of {_listing(spec.workflows)}"))
                    else:
                        for j, state in enumerate(when.tasks.states):
                            if state not in wf.states:
                                problems.append(((*tp, "when", "tasks", "states", j),
                                                 f"unknown state '{state}'; expected one of {_listing(wf.states)}"))
        for i, tool in enumerate(agent.tools):
            if tool not in spec.tools:
                problems.append((("agents", a_name, "tools", i),
                                 f"tool '{tool}' is referenced but not defined; expected one of {_listing(spec.tools)}"))
        for i, kpi in enumerate(agent.kpis):
            if kpi not in spec.kpis:
                problems.append((("agents", a_name, "kpis", i),
                                 f"KPI '{kpi}' is referenced but not defined; expected one of {_listing(spec.kpis)}"))
        if isinstance(agent.stage, dict):
            for workflow in agent.stage:
                if workflow not in spec.workflows:
                    problems.append((("agents", a_name, "stage", workflow),
                                     f"unknown workflow '{workflow}'; expected one of {_listing(spec.workflows)}"))

    for tool_name, tool in spec.tools.items():
        if tool.approval is not None:
            check_actors(tool.approval.by, ("tools", tool_name, "approval", "by"), allow_agent_keyword=False)

    seen_budgets: set[tuple[str, str, str]] = set()
    for i, budget in enumerate(spec.budgets):
        kind, _, name = budget.scope.partition(":")
        valid = (budget.scope == "company" or (kind == "agent" and name in spec.agents)
                 or (kind == "portfolio" and name in structure))
        if not valid:
            problems.append((("budgets", i, "scope"), f"unknown budget scope '{budget.scope}'; expected 'company', "
                             f"'agent:<handle>' ({_listing(spec.agents)}) or 'portfolio:<workspace>/<portfolio>' "
                             f"({_listing(structure)})"))
        if (budget.scope, budget.period, budget.unit) in seen_budgets:
            problems.append((("budgets", i), f"duplicate {budget.unit} budget for {budget.scope} per {budget.period}"))
        seen_budgets.add((budget.scope, budget.period, budget.unit))

    for model in spec.models:
        provider, sep, name = model.partition(":")
        if not sep or not name or not is_known_provider(provider):
            problems.append((("models", model), f"'{model}' is not a model string: expected 'provider:model' with "
                             f"a provider pydantic-ai knows{did_you_mean(provider, KNOWN_PROVIDERS)}, as the llm "
                             "runner's 'model' names it (e.g. 'openai:my-finetune')"))

    managers: dict[str, str] = {}
    for section, people in (("agents", spec.agents), ("humans", spec.humans)):
        for handle, person in people.items():
            if person.reports_to is None:
                continue
            if person.reports_to not in handles:
                problems.append(((section, handle, "reports_to"),
                                 f"'{person.reports_to}' is referenced but not defined; expected an agent or human "
                                 f"handle ({_listing(handles)})"))
            else:
                managers[handle] = person.reports_to
    reported: set[str] = set()
    for start in sorted(managers):
        chain = [start]
        while chain[-1] in managers and managers[chain[-1]] not in chain:
            chain.append(managers[chain[-1]])
        if chain[-1] in managers and managers[chain[-1]] in chain:
            cycle = chain[chain.index(managers[chain[-1]]):]
            key = frozenset(cycle)
            if key not in reported:
                reported.add(key)
                first = min(cycle)
                section = "agents" if first in spec.agents else "humans"
                loop = " -> ".join(cycle[cycle.index(first):] + cycle[:cycle.index(first)] + [first])
                problems.append(((section, first, "reports_to"), f"reports_to forms a cycle: {loop}"))
    for name, kpi in spec.kpis.items():
        if kpi.measure is None:
            continue
        taken = {t for wf in spec.workflows.values() if name in wf.kpis for t in wf.transitions}
        for i, transition in enumerate(kpi.measure.after):
            if transition not in taken:
                problems.append((("kpis", name, "measure", "after", i),
                                 f"unknown transition '{transition}': 'after' names transitions of the workflows "
                                 f"that list this KPI; expected one of {_listing(taken)}"))
    return problems


def idle_agent_problems(spec: CompanySpec) -> list[tuple[Path, str]]:
    """Agents that can never run, as ``(key path, message)`` warnings (a spec with them is still valid):
    an agent with no runner (``roster up`` never runs it); one that no transition's ``by`` names (by
    handle, role or ``agent``) and that has no trigger (nothing offers it work); one whose tier or
    ``rights.transitions`` forbid every transition that names it."""
    from roster.kernel.rights import agent_grants  # noqa: PLC0415 - rights builds on this module

    problems: list[tuple[Path, str]] = []
    for handle, agent in spec.agents.items():
        base: Path = ("agents", handle)
        if agent.runner is None:
            problems.append((base, f"agent '{handle}' has no runner: 'roster up' never runs it (add a 'runner:' "
                                   "block, or drive it with its token over the CLI, MCP or REST)"))
        offered = sorted(f"{w}.{t}" for w, wf in spec.workflows.items() for t, tr in wf.transitions.items()
                         if handle in tr.by or ANY_AGENT in tr.by or set(agent.roles) & set(tr.by))
        if not offered:
            if not agent.triggers:
                problems.append((base, f"agent '{handle}' is offered no work: no transition names it in 'by' (by "
                                       "handle, role or 'agent') and it has no triggers; add it to a transition's "
                                       "'by' or give it a trigger"))
            continue
        if agent.tier == "read-only":
            problems.append(((*base, "tier"), f"agent '{handle}' has tier read-only, which may take no transition, "
                             f"yet {_listing(offered)} name(s) it in 'by'; give it tier bounded-mutator or higher"))
            continue
        if not set(agent_grants(spec, handle).transitions) & set(offered):
            problems.append(((*base, "rights", "transitions"), f"agent '{handle}' has no right to take any "
                             f"transition that names it ({_listing(offered)}); add them to rights.transitions"))
    return problems


def _duplicates(items: list[str]) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for item in items:
        if item in seen and item not in dups:
            dups.append(item)
        seen.add(item)
    return dups


def _listing(names: Any) -> str:
    names = sorted(names)
    return ", ".join(names) if names else "none defined"


def _valid_cron(expression: str) -> bool:
    """Whether ``expression`` is a cron expression croniter accepts (imported here: only specs with a
    ``cron`` trigger need it)."""
    from croniter import croniter  # noqa: PLC0415

    return bool(croniter.is_valid(expression))
