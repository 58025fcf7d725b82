"""Fitness and autonomy stages: the figures from the record, and each agent's stage per workflow."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from roster.api.app import Caller
from roster.api.models import FitnessOut, StageIn, StageOut
from roster.kernel.spec import window_seconds

router = APIRouter()


@router.get("/fitness", response_model=FitnessOut, tags=["fitness"],
            summary="Fitness per agent, workflow, transition and model, from the record (docs/fitness.md)")
def fitness(caller: Caller, window: Annotated[str, Query(max_length=16, description=(
        "How far back runs count: a whole number and d, h or m (7d, 30d, 12h)"))] = "7d",
            agent: Annotated[str | None, Query(max_length=63)] = None) -> Any:
    return caller.fitness(window_seconds=window_seconds(window, name="window"), agent=agent)


@router.get("/stages", response_model=list[StageOut], tags=["fitness"],
            summary="Each agent's autonomy stage per workflow: shadow, assist, bounded or autonomous, and why")
def stages(caller: Caller, agent: Annotated[str | None, Query(max_length=63)] = None) -> Any:
    return caller.stages(agent=agent)


@router.put("/agents/{handle}/stage", response_model=StageOut, tags=["fitness"],
            summary="Set an agent's stage (humans with admin); it sticks until new evidence crosses a criterion")
def set_stage(caller: Caller, handle: str, body: StageIn) -> Any:
    return caller.set_stage(handle, body.stage, workflow=body.workflow, reason=body.reason)
