"""Missions: an agent's versioned plan over REST, as ``roster mission show|edit|hold|release`` has it.

Every endpoint is one store verb of the caller's :class:`~roster.store.Session` (the history also diffs
each version against the one before, :func:`roster.api.verbs.plan_history`), so the store decides who
may: reading a plan is ``profile.read`` on the agent (the agent itself, humans; a refusal is ``403`` and
audited as ``plan.read.rejected``); revising, holding and releasing it is ``plan.edit`` (humans, the
agent itself, the agent it reports to; ``403``, audited as ``plan.<verb>.rejected``). An unknown agent is
``404``. Every version obeys the plan contract (:mod:`roster.kernel.plans`): one that breaks it is
``409`` ``plan-refused`` with ``problems: [{clause, detail}]``, and the current plan stays. While someone
else holds the plan, revising or holding it is ``409`` ``plan-held``. See docs/api.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from roster.api import verbs
from roster.api.app import Caller
from roster.api.models import PlanHoldIn, PlanHoldOut, PlanIn, PlanOut, PlanVersionOut, ReleaseIn
from roster.errors import NotFound

router = APIRouter(tags=["missions"])

Handle = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="The agent's handle.")]


@router.get("/agents/{handle}/plan", response_model=PlanOut,
            summary="An agent's current plan: what it will prioritize, the goals it intends, what it stops doing")
def get_plan(caller: Caller, handle: Handle) -> Any:
    """The current version (``PlanOut``). ``404`` for an unknown agent and for one with no plan yet;
    ``403`` for an agent other than yourself unless you are a human."""
    current = caller.plan(handle)
    if current is None:
        raise NotFound(f"'{handle}' has no plan yet: its first reflection writes one (`roster reflect {handle} "
                       f"--now`), or a human writes one with PUT /api/v1/agents/{handle}/plan")
    return PlanOut.of(current)


@router.get("/agents/{handle}/plan/history", response_model=list[PlanVersionOut],
            summary="An agent's plan versions, newest first, each with its author, reason and diff")
def plan_history(caller: Caller, handle: Handle, limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> Any:
    """At most ``limit`` versions (``PlanVersionOut``), newest first; ``[]`` before the first. As
    :func:`get_plan` for ``403`` and ``404``."""
    return [PlanVersionOut(**PlanOut.of(v).model_dump(), diff=diff)
            for v, diff in verbs.plan_history(caller, handle, limit)]


@router.put("/agents/{handle}/plan", response_model=PlanOut,
            summary="Save the next version of an agent's plan, with the reason it changes")
def revise_plan(caller: Caller, handle: Handle, body: PlanIn) -> Any:
    """``200`` with the new version. ``409`` ``plan-refused`` (``problems: [{clause, detail}]``; the
    current plan stays) or ``plan-held`` (someone else holds it); ``403``; ``404``; ``400`` a blank
    reason; ``422`` a malformed body."""
    return PlanOut.of(caller.revise_plan(handle, body.plan, reason=body.reason))


@router.post("/agents/{handle}/plan/hold", response_model=PlanHoldOut, status_code=201,
             summary="Hold an agent's plan to edit it: nobody else revises it, and its reflection waits")
def hold_plan(caller: Caller, handle: Handle, body: PlanHoldIn) -> Any:
    """``201`` with the hold (holding it again renews it). ``409`` ``plan-held`` (someone else holds it);
    ``403``; ``404``; ``422`` a ttl outside (0, 7 days]."""
    return PlanHoldOut.of(caller.hold_plan(handle, ttl=body.ttl_seconds, note=body.note))


@router.post("/agents/{handle}/plan/release", status_code=204,
             summary="Give back your hold on an agent's plan, with a note: its reflection may revise it again")
def release_plan(caller: Caller, handle: Handle, body: ReleaseIn) -> Response:
    """``204``. ``404`` when you hold no hold on it; ``409`` ``plan-held`` (another's live hold); ``403``."""
    caller.release_plan(handle, note=body.note)
    return Response(status_code=204)
