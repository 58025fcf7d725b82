"""The record: runs, costs, KPIs and the audit log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from roster.api.app import Caller
from roster.api.models import (
    ApprovalEdgeStatsOut,
    AuditPage,
    CostsOut,
    KpiOut,
    KpiReadingIn,
    PresenceOut,
    RunPage,
    VerifyOut,
)
from roster.api.pages import MAX_PAGE, cursor_id, page
from roster.defaults import MAX_ID
from roster.kernel.spec import window_seconds
from roster.store.kpis import KpiReading

router = APIRouter()


@router.get("/runs", response_model=RunPage, tags=["runs"],
            summary="Runs, newest first (agents see their own); next_cursor pages back in time")
def runs(caller: Caller, agent: str | None = None, task_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
         cursor: Annotated[str | None, Query(max_length=64)] = None,
         limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100) -> Any:
    found = caller.list_runs(agent=agent, task_id=task_id, limit=limit + 1, before=cursor or None)
    return page(found, limit, lambda run: run.started_at)


@router.get("/costs", response_model=CostsOut, tags=["runs"], summary="Spend per agent and per portfolio")
def costs(caller: Caller, since: str | None = None) -> Any:
    return caller.costs(since=since)


@router.get("/approvals/stats", response_model=list[ApprovalEdgeStatsOut], tags=["approvals"],
            summary="Review volume per approval edge over a window, with a verdict: over-reviewed, weak-upstream, "
                    "ok or too-few")
def approval_stats(caller: Caller, window: Annotated[str, Query(max_length=16, description=(
        "How far back requests count: a whole number and d, h or m (30d, 7d, 12h)"))] = "30d") -> Any:
    return caller.approval_stats(window_seconds=window_seconds(window, name="window"))


@router.get("/presence", response_model=PresenceOut, tags=["runs"],
            summary="The always-on metric: each agent's time working, blocked, waiting, watching and idle, by day")
def presence(caller: Caller, days: Annotated[int, Query(ge=1, le=31)] = 1) -> Any:
    return caller.presence(days=days)


@router.get("/kpis", response_model=list[KpiOut], tags=["runs"],
            summary="The KPIs the company tracks, each with its first and latest readings")
def kpis(caller: Caller) -> Any:
    spec = caller.spec()
    return [{"name": name, **spec.kpis[name].model_dump(), "first": s.first, "latest": s.latest,
             "readings": s.readings, "change": s.change} for name, s in caller.kpi_summaries().items()]


@router.get("/kpis/{name}/readings", response_model=list[KpiReading], tags=["runs"],
            summary="A KPI's readings, oldest first (the newest `limit`)")
def kpi_readings(caller: Caller, name: str, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100) -> Any:
    return caller.kpi_readings(name, limit=limit)


@router.post("/kpis/{name}/readings", response_model=KpiReading, status_code=201, tags=["runs"],
             summary="Record a reading you measured (humans only; the runtime measures the rest)")
def record_kpi(caller: Caller, name: str, body: KpiReadingIn) -> Any:
    return caller.record_kpi(name, body.value, source=body.source)


@router.get("/audit", response_model=AuditPage, tags=["audit"],
            summary="Audit events, oldest first (needs read on the whole company)")
def audit_log(caller: Caller, cursor: str | None = None,
              task_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None, principal: str | None = None,
              action: str | None = None,
              limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100) -> Any:
    found = caller.audit_log(after_seq=cursor_id(cursor), task_id=task_id, principal=principal, action=action,
                             limit=limit + 1)
    return page(found, limit, lambda event: event.seq)


@router.get("/audit/verify", response_model=VerifyOut, tags=["audit"], summary="Walk the hash chain")
def verify(caller: Caller) -> Any:
    count, broken = caller.verify_audit()
    return {"events": count, "intact": broken is None, "first_bad_seq": broken[0] if broken else None,
            "reason": broken[1] if broken else None}
