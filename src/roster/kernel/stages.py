"""Autonomy stages: how far an agent's transitions on a workflow are trusted, and the criteria that move
it. Pure: the store keeps the stages and the runtime evaluates the criteria (see docs/fitness.md).

- ``shadow``: the agent runs on real tasks beside the agent that owns them; its result is recorded and
  compared with what happened, never applied (the store refuses its claims and transitions);
- ``assist``: every transition it takes opens an approval request for a human;
- ``bounded``: it acts, with approvals only at the spec's approval edges (the default);
- ``autonomous``: as bounded, and an approval edge marked ``relaxable`` is skipped while review volume
  shows it over-reviewed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from roster.kernel.spec import Approval

STAGES = ("shadow", "assist", "bounded", "autonomous")
"""The stages, lowest first: promotion moves one step up, demotion one step down."""
DEFAULT_STAGE = "bounded"
ALL_WORKFLOWS = "*"
"""The workflow key of a stage that holds on every workflow (``stage: shadow`` in the spec)."""

SHADOW_TRIGGER = "shadow of run"
"""How a shadow run's trigger begins (``shadow of run <owner's run id>``)."""

ASSIST_APPROVAL = Approval(by=["human"], expires_in="7d")
"""The approval edge every transition of an ``assist`` agent gets: any human decides, within 7 days."""

METRICS = ("outcomes", "success_rate", "approval_rate", "days_without_rejection", "cost_vs_pool_median",
           "burden_per_outcome", "p95_seconds")
"""What a criterion may name (for a shadow agent, ``outcomes`` and ``success_rate`` are its compared shadow
runs and the share that matched what happened)."""


def step(stage: str, by: int) -> str:
    """The stage ``by`` steps up (positive) or down (negative), kept within :data:`STAGES`."""
    return STAGES[max(0, min(len(STAGES) - 1, STAGES.index(stage) + by))]


@dataclass(frozen=True)
class Verdict:
    """What the criteria say of one (agent, workflow): ``move`` is ``promote``, ``demote`` or ``None``;
    ``why`` lists the criteria that held (a promotion needs all, a demotion one)."""

    move: str | None
    why: tuple[str, ...]


def holds(criterion: Any, metrics: dict[str, float | None]) -> bool | None:
    """Whether ``criterion`` (``metric`` with ``at_least``, ``below`` or ``above``) holds of ``metrics``;
    ``None`` when the metric is unknown (not enough evidence, no cost)."""
    value = metrics.get(criterion.metric)
    if value is None:
        return None
    if criterion.at_least is not None and value < criterion.at_least:
        return False
    if criterion.below is not None and value >= criterion.below:
        return False
    return not (criterion.above is not None and value <= criterion.above)


def describe(criterion: Any) -> str:
    """``success_rate >= 0.9``, ``success_rate < 0.7``, ``cost_vs_pool_median > 2``."""
    for key, sign in (("at_least", ">="), ("below", "<"), ("above", ">")):
        bound = getattr(criterion, key)
        if bound is not None:
            return f"{criterion.metric} {sign} {bound:g}"
    return criterion.metric


def judge(metrics: dict[str, float | None], promote: list[Any], demote: list[Any], *, enough: bool) -> Verdict:
    """Demote when any ``demote`` criterion holds (only with ``enough`` evidence); else promote when every
    ``promote`` criterion holds (and there is at least one); else nothing."""
    if enough:
        breached = [describe(c) for c in demote if holds(c, metrics)]
        if breached:
            return Verdict("demote", tuple(breached))
    if promote and enough and all(holds(c, metrics) for c in promote):
        return Verdict("promote", tuple(describe(c) for c in promote))
    return Verdict(None, ())
