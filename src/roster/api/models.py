"""Request and response bodies of the REST API (pydantic models, so the OpenAPI document is exact).

Single records are the store's own dataclasses (``Task``, ``ArtifactRecord``, ...), used as response
models directly, so a field added to a record shows in the API without a second definition. Times are
ISO 8601 UTC strings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, model_validator

from roster.api.verbs import Decided, Decision
from roster.defaults import MAX_ID
from roster.errors import UsageError
from roster.kernel.audit import AuditEvent
from roster.kernel.goals import (
    DEFAULT_EVERY_SECONDS,
    DEFAULT_STALL_AFTER,
    GOAL_STATES,
    MAX_OBJECTIVE_CHARS,
    MIN_EVERY_SECONDS,
    GoalBudget,
    GoalCheck,
    GoalSpend,
)
from roster.kernel.plans import MAX_REASON_CHARS, Plan
from roster.kernel.review import VERDICTS
from roster.runtime.runners import CheckOut, MessageOut, TaskOut
from roster.store import Message, Task
from roster.store.goals import Goal
from roster.store.kpis import KpiReading
from roster.store.plans import DEFAULT_PLAN_HOLD_SECONDS, MAX_PLAN_HOLD_SECONDS, PlanHold, PlanVersion
from roster.store.runs import RunRecord

JSONObject = dict[str, Any]


class TaskPage(BaseModel):
    items: list[Task]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow: str = Field(min_length=1, max_length=63)
    title: str = Field(min_length=1, max_length=500)
    fields: JSONObject = {}
    owner: str | None = None
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    parent_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class TransitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transition: str = Field(min_length=1, max_length=63)
    expected_version: int = Field(ge=1, le=MAX_ID)
    writes: JSONObject = {}
    rationale: str = Field(default="", max_length=4000)
    fencing_token: int | None = Field(default=None, ge=0, le=MAX_ID)


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=60.0, gt=0, le=3600.0)


class HoldIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=8 * 3600.0, gt=0, le=7 * 86400.0)
    note: str = Field(default="", max_length=4000)


class ReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=4000)


class DiffOut(BaseModel):
    task_id: int
    name: str
    diff: str


class MemoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=2000)
    kind: str = "belief"
    confidence: float = Field(default=0.8, ge=0, le=1)
    pad: str | None = None
    expires_in: float | None = Field(default=None, gt=0, le=10 * 365 * 86400.0)
    provenance: JSONObject = {}


class MessageIn(MessageOut):
    """A message to send: the fields of a run's :class:`~roster.runtime.runners.MessageOut`."""


class ReadIn(BaseModel):
    """Messages addressed to you to mark read."""

    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1, max_length=500)


class ReadOut(BaseModel):
    marked: int = Field(description="How many messages changed from unread to read.")


class CheckIn(CheckOut):
    """A check's result: the fields of a run's :class:`~roster.runtime.runners.CheckOut`, and the fencing
    token of your claim (if you hold one)."""

    fencing_token: int | None = Field(default=None, ge=0, le=MAX_ID)


class CheckRecorded(CheckOut):
    task_id: int
    version: int = Field(description="The task's version after the check (evidence moves it).")


class DelegationIn(TaskOut):
    """A child task: the fields of a run's :class:`~roster.runtime.runners.TaskOut`, with its delegation
    ``packet`` required."""

    packet: JSONObject = Field(description="subproblem, context, tried, desired_output, and success_condition "
                                           "and/or blocking_threshold")


class EscalationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=4000, description="What you tried and why you cannot finish.")
    category: Literal["judgment", "deterministic", "transient", "governance"] = "judgment"


class DecisionsIn(BaseModel):
    """Approval decisions, each taken on its own, in order."""

    model_config = ConfigDict(extra="forbid")
    decisions: list[Decision] = Field(min_length=1, max_length=100)


class DecisionsOut(BaseModel):
    results: list[Decided] = Field(description="One per decision, in order: approved, rejected or refused "
                                               "(with the error's code and message).")


class MessagePage(BaseModel):
    items: list[Message]
    next_cursor: str | None


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=4000)


class RunPage(BaseModel):
    items: list[RunRecord]
    next_cursor: str | None


class SpendOut(BaseModel):
    """Spend of one agent or portfolio. ``cost_usd`` is ``null`` when some run could not be priced (its
    model has no price in the spec's ``models:`` nor in genai-prices): ``priced_cost_usd`` is then what the
    ``runs - unpriced_runs`` priced runs cost, a lower bound, never passed off as the total."""

    name: str
    runs: int
    successes: int
    cost_usd: float | None
    priced_cost_usd: float
    unpriced_runs: int
    input_tokens: int
    output_tokens: int
    cost_per_success_usd: float | None


class CostsOut(BaseModel):
    agents: list[SpendOut]
    portfolios: list[SpendOut]


class ApprovalEdgeStatsOut(BaseModel):
    """Review volume of one approval edge over the requests made in the window (see docs/fitness.md):
    counts, ``decided`` (approved + rejected), ``approval_rate`` (approved / decided, ``null`` when nothing
    was decided), the verdict and a sentence saying why."""

    edge: str = Field(description="workflow.transition, or tool:NAME")
    requested: int
    approved: int = Field(description="approved, including a tool approval since used")
    rejected: int
    expired: int
    stale: int
    pending: int
    decided: int
    approval_rate: float | None
    verdict: Literal[VERDICTS] = Field(  # type: ignore[valid-type]
        description="over-reviewed, weak-upstream, ok, or too-few below fitness.review.min_requests decided")
    summary: str


class AgentPresenceOut(BaseModel):
    """One agent's day: seconds in each state, its working share, and whether it was around the clock."""

    seconds: dict[str, float]
    utilization: float
    around_the_clock: bool


class PresenceDayOut(BaseModel):
    """24 hours ending at ``until`` (ISO 8601 UTC): each agent's time, and how many were around the clock."""

    since: str
    until: str
    around_the_clock: int
    agents: dict[str, AgentPresenceOut]


class PresenceOut(BaseModel):
    """The always-on metric, day by day, oldest first (see docs/goals.md)."""

    days: list[PresenceDayOut]
    states: list[str]


class KpiOut(BaseModel):
    """A KPI the spec defines, with its first and latest readings (``null`` before any) and their count."""

    name: str
    description: str
    unit: str
    direction: str
    target: float | None
    first: KpiReading | None
    latest: KpiReading | None
    readings: int
    change: float | None
    """latest - first, in the KPI's unit; ``null`` before two readings."""


class KpiReadingIn(BaseModel):
    """A reading a human measured (agents never record their own KPIs)."""

    model_config = ConfigDict(extra="forbid")
    value: float = Field(allow_inf_nan=False)
    source: str = Field(default="recorded by hand", max_length=500)


class AuditPage(BaseModel):
    items: list[AuditEvent]
    next_cursor: str | None


class VerifyOut(BaseModel):
    events: int
    intact: bool
    first_bad_seq: int | None
    reason: str | None


class GoalIn(BaseModel):
    """A goal to set (``POST /goals``, the MCP tool ``set_goal``): its check is exactly one of ``check``
    (``{command}`` or ``{kpi, op, target}``, with ``timeout``) or ``kpi_check`` (``lint_findings<=5``), as
    ``roster goal add`` takes ``--check`` or ``--kpi``. What a goal may be is the kernel's
    (:mod:`roster.kernel.goals`) and the store's; who may set it is the store's."""

    model_config = ConfigDict(extra="forbid")
    agent: str = Field(min_length=1, max_length=63, description="The agent the goal belongs to.")
    objective: str = Field(min_length=1, max_length=MAX_OBJECTIVE_CHARS,
                           description="What it should achieve, in a sentence.")
    check: GoalCheck | None = Field(default=None, description="A command that exits 0 when the goal is met (run "
                                    "in the spec's folder; humans only), or a KPI target: kpi, op and target.")
    kpi_check: str | None = Field(default=None, max_length=200, examples=["lint_findings<=5"],
                                  description="A KPI target as text, NAME<=VALUE (or >=, <, >, ==), instead of "
                                              "check.")
    budget: GoalBudget = Field(description="At least one of usd, tokens, runs, seconds.")
    every_seconds: int = Field(default=DEFAULT_EVERY_SECONDS, ge=MIN_EVERY_SECONDS, le=MAX_ID,
                               description="Its cadence: how often the agent may be woken for it (at least 60).")
    stall_after: int = Field(default=DEFAULT_STALL_AFTER, ge=1, le=MAX_ID,
                             description="Goal runs in a row that may change nothing before it stalls.")
    deadline_at: str | None = Field(default=None, max_length=64, description="When it is due, ISO 8601 UTC.")

    @model_validator(mode="after")
    def _one_check(self) -> GoalIn:
        if (self.check is None) == (self.kpi_check is None):
            raise ValueError("give the goal exactly one check: check ({command} or {kpi, op, target}) or "
                             "kpi_check (e.g. lint_findings<=5)")
        if self.kpi_check is not None:
            try:
                self.goal_check()
            except UsageError as exc:
                raise ValueError(exc.message) from None
        return self

    def goal_check(self) -> GoalCheck:
        """The check, ``kpi_check`` parsed. Raises :class:`UsageError` (a malformed KPI target)."""
        return self.check if self.check is not None else GoalCheck.parse_kpi(self.kpi_check or "")


class GoalMoveIn(BaseModel):
    """Why a goal is paused, resumed or abandoned; ``expected_version`` refuses the move (409) if the goal
    changed since you read it."""

    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=4000)
    expected_version: int | None = Field(default=None, ge=1, le=MAX_ID)


class GoalOut(BaseModel):
    """A goal as REST and MCP show it: the same JSON as ``roster goal show --json`` (``check`` and
    ``budget`` without the parts not given; ``last_check`` the evidence of the newest check, ``null``
    before any)."""

    id: int
    agent: str
    objective: str
    state: Literal[GOAL_STATES]  # type: ignore[valid-type]
    reason: str
    check: GoalCheck = Field(description="The parts of the check given: command and timeout, or kpi, op, target "
                                         "and timeout (the GoalCheck schema, without nulls).")
    budget: GoalBudget = Field(description="The limits given, of usd, tokens, runs and seconds.")
    spend: GoalSpend
    every_seconds: int
    stall_after: int
    deadline_at: str | None
    idle_runs: int
    last_check: JSONObject | None
    checked_at: str | None
    created_by: str
    created_at: str
    updated_at: str
    version: int

    @field_serializer("check", "budget")
    def _given(self, value: BaseModel) -> JSONObject:
        return value.model_dump(exclude_none=True)

    @classmethod
    def of(cls, goal: Goal) -> GoalOut:
        return cls(id=goal.id, agent=goal.agent, objective=goal.objective, state=goal.state, reason=goal.reason,
                   check=goal.check, budget=goal.budget, spend=goal.spend, every_seconds=goal.every_seconds,
                   stall_after=goal.stall_after, deadline_at=goal.deadline_at, idle_runs=goal.idle_runs,
                   last_check=goal.last_check, checked_at=goal.checked_at, created_by=goal.created_by,
                   created_at=goal.created_at, updated_at=goal.updated_at, version=goal.version)


class PlanIn(BaseModel):
    """A new version of an agent's plan (``PUT /agents/{handle}/plan``, the MCP tool ``revise_plan``), as
    ``roster mission edit`` saves one. It obeys the plan contract (:mod:`roster.kernel.plans`) whoever
    writes it; who may write it is the store's decision (``plan.edit``)."""

    model_config = ConfigDict(extra="forbid")
    plan: Plan = Field(description="The plan: priorities (at least one), goals (objective and kpi, e.g. "
                                   "lint_findings<=5; at least one linked to a KPI, or no_kpi_goal_because says "
                                   "why none is), stop_doing.")
    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS,
                        description="Why the plan changes: the agent's next reflection reads it with the diff.")


class PlanOut(BaseModel):
    """One version of an agent's plan: the same JSON as a version in ``roster mission show --json``."""

    agent: str = Field(description="The agent whose plan it is.")
    version: int = Field(description="1, 2, ... per agent; a version is never rewritten.")
    plan: Plan = Field(description="The plan's content.")
    text: str = Field(description="The plan as Markdown, one item per line (what diffs compare).")
    reason: str = Field(description="Why this version was written.")
    author: str = Field(description="Who wrote it: the agent (in a reflection run) or a human.")
    run_id: str | None = Field(description="The reflection run that wrote it; null when a person did.")
    created_at: str = Field(description="When it was written, ISO 8601 UTC.")

    @classmethod
    def of(cls, version: PlanVersion) -> PlanOut:
        return cls.model_validate(version.to_dict())


class PlanVersionOut(PlanOut):
    """A version in an agent's plan history, with what changed since the version before it."""

    diff: str = Field(description="The unified diff of the plan's Markdown from the version before (from no plan, "
                                  "for version 1); empty when nothing changed.")


class PlanHoldIn(BaseModel):
    """How long to hold an agent's plan, and why (``POST /agents/{handle}/plan/hold``)."""

    model_config = ConfigDict(extra="forbid")
    ttl_seconds: float = Field(default=DEFAULT_PLAN_HOLD_SECONDS, gt=0, le=MAX_PLAN_HOLD_SECONDS,
                               description="How long the hold lasts unless released, in seconds (at most 7 days).")
    note: str = Field(default="", max_length=4000, description="Why you hold it; kept on the audit trail.")


class PlanHoldOut(BaseModel):
    """A live hold on an agent's plan: nobody else revises it, and its reflection waits, until it is released
    or expires."""

    agent: str = Field(description="The agent whose plan is held.")
    holder: str = Field(description="Who holds it.")
    note: str = Field(description="Why, as the holder said.")
    held_at: str = Field(description="When it was taken, ISO 8601 UTC.")
    expires_at: str = Field(description="When it lapses unless released or renewed, ISO 8601 UTC.")

    @classmethod
    def of(cls, hold: PlanHold) -> PlanHoldOut:
        return cls(agent=hold.agent, holder=hold.holder, note=hold.note, held_at=hold.held_at,
                   expires_at=hold.expires_at)


class FiguresOut(BaseModel):
    """The fitness figures of one grain (definitions: docs/fitness.md). Rates are 0..1; USD and tokens per
    successful outcome; seconds of wall time. ``success_rate``, ``usd_per_success`` and
    ``tokens_per_success`` are ``null`` below ``min_outcomes`` settled outcomes (``reason`` says so) or
    when unknown (a run that could not be priced)."""

    evidence: int = Field(description="settled outcomes behind the figures")
    enough: bool
    runs: int
    successes: int
    failed: int
    unsettled: int
    success_rate: float | None
    usd_per_success: float | None
    tokens_per_success: float | None
    reputation: float = Field(description="Wilson lower bound (95%) of the success rate")
    cost_usd: float | None
    priced_cost_usd: float
    unpriced_runs: int
    tokens: int
    burden: dict[str, int] = Field(description="rework, rejected, reverted, check_failed, escalations, "
                                               "contract_rejections, crashed, timed_out")
    p50_seconds: float | None
    p95_seconds: float | None
    kpis: dict[str, dict[str, int]] = Field(description="per linked KPI, how it moved after each success "
                                                        "(toward, away, unchanged, unmeasured): attribution, "
                                                        "not causation")
    reason: str | None = None


class TransitionFitnessOut(BaseModel):
    transition: str
    outcomes: int
    successes: int
    reputation: float


class WorkflowFitnessOut(FiguresOut):
    workflow: str
    transitions: list[TransitionFitnessOut]


class AgentFitnessOut(FiguresOut):
    agent: str
    workflows: list[WorkflowFitnessOut]


class ModelFitnessOut(FiguresOut):
    model: str = Field(description="the run's model, else its agent's runner kind")


class FitnessOut(BaseModel):
    """Fitness from the record over ``[since, until)`` (ISO 8601 UTC): per agent (with its workflows and
    transitions) and per model or runner."""

    since: str
    until: str
    window_seconds: int
    settle: str
    min_outcomes: int
    agents: list[AgentFitnessOut]
    models: list[ModelFitnessOut]


class StageOut(BaseModel):
    """An agent's autonomy stage on a workflow and where it comes from."""

    agent: str
    workflow: str
    stage: Literal["shadow", "assist", "bounded", "autonomous"]
    source: Literal["spec", "human", "criteria"]
    set_by: str | None
    set_at: str | None
    reason: str
    evidence: dict[str, Any]


class StageIn(BaseModel):
    """Set an agent's stage (humans with admin): on one workflow, or on every workflow without one."""

    model_config = ConfigDict(extra="forbid")
    stage: Literal["shadow", "assist", "bounded", "autonomous"]
    workflow: str | None = Field(default=None, max_length=63)
    reason: str = Field(min_length=1, max_length=2000)
