"""Missions and their plans: what an agent will prioritize, which goals it intends, and what it will stop
doing. Pure: no I/O.

An agent's ``mission`` (in the spec) says why it exists; its **plan** says how it will work toward the
mission for now. Plans are versioned (1, 2, ...): a reflection run writes the next version with its
reason, and a human may hold, edit and release the plan in between (see :mod:`roster.store.plans`).

Every version obeys the **plan contract** (:func:`plan_problems`), whoever wrote it:

- ``priorities``: at least one, at most :data:`MAX_ITEMS`;
- ``kpi-goal``: at least one intended goal linked to a KPI of the spec (``kpi: lint_findings<=5``), or
  ``no_kpi_goal_because`` says why there is none;
- ``kpi``: every KPI a goal names is defined in the spec, as a target ``NAME<=VALUE`` (or ``>=``, ``<``,
  ``>``, ``==``).

The reflection schedule (:func:`reflection_cron`) is the spec's ``reflect: {cron: ...}``; an agent with a
mission and no ``reflect`` key reflects nightly (:data:`DEFAULT_REFLECT_CRON`), and ``reflect: {cron:
null}`` turns reflection off.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from roster.errors import UsageError
from roster.kernel.goals import GoalCheck

DEFAULT_REFLECT_CRON = "0 2 * * *"
"""When an agent with a mission reflects unless its spec says otherwise: every night at 02:00 UTC."""
MAX_ITEMS = 20
"""Most priorities, goals or things to stop doing one plan may list."""
MAX_ITEM_CHARS = 500
MAX_REASON_CHARS = 4000
PLAN_CLAUSES = ("priorities", "kpi-goal", "kpi")
"""The clauses of the plan contract, as a refusal names them."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanGoal(_Model):
    """A goal the plan intends: its ``objective``, and the KPI target that would show it met
    (``lint_findings<=5``; empty when it has none). ``goal_id`` links it to a goal already set."""

    objective: str = Field(min_length=1, max_length=MAX_ITEM_CHARS)
    kpi: str = Field(default="", max_length=200, description="A KPI target, NAME<=VALUE (or >=, <, >, ==).")
    goal_id: int | None = Field(default=None, ge=1)


class Plan(_Model):
    """One version's content. Text items are one line each (at most :data:`MAX_ITEM_CHARS` characters)."""

    priorities: list[str] = Field(default=[], max_length=MAX_ITEMS,
                                  description="What the agent will do first, most important first.")
    goals: list[PlanGoal] = Field(default=[], max_length=MAX_ITEMS,
                                  description="The goals it intends; at least one linked to a KPI, or say why not.")
    stop_doing: list[str] = Field(default=[], max_length=MAX_ITEMS, description="What it will stop doing.")
    no_kpi_goal_because: str = Field(default="", max_length=MAX_REASON_CHARS,
                                     description="Why no goal is linked to a KPI, when none is.")

    @classmethod
    def parse(cls, value: Any) -> Plan:
        """A plan from its JSON-ready form. Raises :class:`UsageError` naming every problem."""
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'plan'}: {e['msg']}" for e in exc.errors())
            raise UsageError(f"the plan is malformed: {problems}") from None


def plan_problems(plan: Plan, kpis: Collection[str]) -> list[tuple[str, str]]:
    """What breaks the plan contract (see the module docstring), as ``(clause, detail)`` pairs; empty when
    ``plan`` obeys it. ``kpis`` are the KPI names the spec defines."""
    problems: list[tuple[str, str]] = []
    if not [p for p in plan.priorities if p.strip()]:
        problems.append(("priorities", "a plan names at least one priority: what the agent will do first"))
    for item in [*plan.priorities, *plan.stop_doing, *(g.objective for g in plan.goals)]:
        if "\n" in item or len(item) > MAX_ITEM_CHARS:
            problems.append(("priorities", f"each item is one line of at most {MAX_ITEM_CHARS} characters: "
                                           f"'{item[:60]}...'"))
            break
    linked = 0
    for goal in plan.goals:
        if not goal.kpi:
            continue
        try:
            check = GoalCheck.parse_kpi(goal.kpi)
        except UsageError as exc:
            problems.append(("kpi", f"goal '{goal.objective[:60]}': {exc.message}"))
            continue
        if check.kpi not in kpis:
            known = ", ".join(sorted(kpis)) or "none"
            problems.append(("kpi", f"goal '{goal.objective[:60]}' names KPI '{check.kpi}', which the spec does "
                                    f"not define; KPIs: {known}"))
            continue
        linked += 1
    if not linked and not plan.no_kpi_goal_because.strip():
        problems.append(("kpi-goal", "a plan names at least one goal linked to a KPI (kpi: NAME<=VALUE), or says "
                                     "in no_kpi_goal_because why it has none"))
    return problems


def render_plan(plan: Plan) -> str:
    """The plan as Markdown, one item per line, in a fixed layout: what a person reads and what diffs
    between versions compare."""
    lines = ["## Priorities", *(f"{i}. {p}" for i, p in enumerate(plan.priorities, 1)), "", "## Goals"]
    for goal in plan.goals:
        links = [f"KPI {goal.kpi}" if goal.kpi else "no KPI", *([f"goal {goal.goal_id}"] if goal.goal_id else [])]
        lines.append(f"- {goal.objective} ({'; '.join(links)})")
    if not plan.goals:
        lines.append("- (none)")
    lines += ["", "## Stop doing", *(f"- {s}" for s in plan.stop_doing or ["(nothing)"])]
    if plan.no_kpi_goal_because.strip():
        lines += ["", "## No KPI-linked goal, because", plan.no_kpi_goal_because.strip()]
    return "\n".join(lines) + "\n"


def plan_diff(old: Plan | None, new: Plan, *, old_label: str, new_label: str) -> str:
    """A unified diff of two versions' Markdown (:func:`render_plan`); everything is added when ``old``
    is ``None``; empty when they read the same."""
    before = render_plan(old).splitlines(keepends=True) if old is not None else []
    return "".join(difflib.unified_diff(before, render_plan(new).splitlines(keepends=True),
                                        fromfile=old_label, tofile=new_label))


def reflection_cron(mission: str, reflect: Any) -> str | None:
    """When an agent reflects: the cron expression of its spec's ``reflect`` block, the nightly default
    (:data:`DEFAULT_REFLECT_CRON`) for an agent with a mission and no block, or ``None`` (it does not)."""
    if reflect is None:
        return DEFAULT_REFLECT_CRON if mission.strip() else None
    return reflect.cron
