"""Goals: set one (checked at once), list and show them, pause, resume or abandon one.

Every endpoint is one store verb of the caller's :class:`~roster.store.Session` (setting also runs the
check, :func:`roster.api.verbs.set_goal`): who may set or move a goal (the Cedar action ``goal.set``) and
which goals a caller sees (its own and those it set, or all with ``oversee``) are decided in the store.
A goal one may not see is not found (404). See docs/goals.md.

``POST /goals`` checks the new goal at once, as ``roster goal add`` does. A command check runs in the
server's workdir (the spec's folder, :func:`roster.api.app.create_app`'s ``workdir``); a server started
without one checks only KPI goals at once and leaves command checks to the runtime's goal loop.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from roster.api import verbs
from roster.api.app import Caller, Id
from roster.api.models import GoalIn, GoalMoveIn, GoalOut
from roster.kernel.goals import GOAL_STATES

router = APIRouter(tags=["goals"])

GoalState = Literal[GOAL_STATES]  # type: ignore[valid-type]


@router.post("/goals", response_model=GoalOut, status_code=201,
             summary="Set a goal for an agent, checked at once (a check that passes meets it on the spot)")
def set_goal(caller: Caller, body: GoalIn, request: Request) -> Any:
    return GoalOut.of(verbs.set_goal(caller, body, request.app.state.workdir))


@router.get("/goals", response_model=list[GoalOut],
            summary="Goals, newest first: yours and those you set, or every goal if you oversee the company")
def list_goals(caller: Caller, agent: Annotated[str | None, Query(max_length=63)] = None,
               state: GoalState | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> Any:
    return [GoalOut.of(g) for g in caller.list_goals(agent=agent, state=state, limit=limit)]


@router.get("/goals/{goal_id}", response_model=GoalOut,
            summary="One goal: its check and the evidence of the last one, its spend against budget, its state")
def get_goal(caller: Caller, goal_id: Id) -> Any:
    return GoalOut.of(caller.get_goal(goal_id))


def _mover(verb: str, summary: str) -> None:
    def moved(caller: Caller, goal_id: Id, body: GoalMoveIn) -> Any:
        return GoalOut.of(caller.move_goal(goal_id, verb, note=body.note, expected_version=body.expected_version))

    moved.__name__ = f"{verb}_goal"
    router.post(f"/goals/{{goal_id}}/{verb}", response_model=GoalOut, summary=summary)(moved)


_mover("pause", "Pause a goal: its agent is not woken for it until it is resumed")
_mover("resume", "Resume a paused or stalled goal (its count of runs that changed nothing starts again)")
_mover("abandon", "Give a goal up, with a note saying why; it is closed for good")
