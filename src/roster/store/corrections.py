"""Corrections: the events that undo or catch an agent's transition within the settle window.

Fitness counts a run's transition as a success only if it *stuck* (see docs/fitness.md). What un-sticks
it is recorded here, inside the transaction of the audited action that caused it, so the record can never
disagree with the audit:

- ``rework``: a move *back* (to a state fewer steps from the initial one, e.g. QA's ``rework``), by
  anyone, into the state the transition left. The one run corrected is the latest whose transition
  leaves that state.
- ``rejected``: the approval request the run's transition opened was rejected.
- ``reverted``: a human, under a hold, edited a field the transition writes (by the spec's ``writes``)
  or saved a new version of an artifact the run saved.
- ``check_failed``: another principal recorded a failed check while the task sat where the run's
  transition put it.

A correction counts only within the settle window (the spec's ``fitness.settle``) of the run's end;
older runs have settled and are left alone. Each correction is one row of ``corrections`` (the burden
counts them by kind) and stamps the run's ``corrected_at`` once (it did not stick). These helpers run
inside their caller's write transaction and cost one indexed read of the task's runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, insert, select, update

from roster.kernel.spec import CompanySpec, Workflow, duration_seconds
from roster.store.schema import corrections, runs
from roster.store.store import format_ts

CORRECTION_KINDS = ("rework", "rejected", "reverted", "check_failed")
"""What can correct a transition, in the order reports list them."""

_APPLIED = ("succeeded", "waiting")
"""Run outcomes whose transition was made, or asked for on an approval edge."""


def settle_cutoff(spec: CompanySpec, now: str) -> str:
    """The earliest run end (ISO 8601 UTC) still inside the settle window at ``now``."""
    return format_ts(datetime.fromisoformat(now) - timedelta(seconds=duration_seconds(spec.fitness.settle)))


def _latest_run(conn: Connection, company: str, task_id: int, transitions: list[str], cutoff: str,
                not_by: str | None = None, once: str | None = None) -> object | None:
    """The latest run on the task that made (or asked for) one of ``transitions`` and ended since
    ``cutoff``; not ``not_by``'s; with ``once``, not one already corrected by that kind (a transition is
    undone once: this keeps two runs ending in the same microsecond apart)."""
    if not transitions:
        return None
    query = (select(runs.c.id, runs.c.agent).where(
        runs.c.company_id == company, runs.c.task_id == task_id, runs.c.transition.in_(transitions),
        runs.c.outcome.in_(_APPLIED), runs.c.ended_at >= cutoff)
        .order_by(runs.c.ended_at.desc()).limit(1))
    if not_by is not None:
        query = query.where(runs.c.agent != not_by)
    if once is not None:
        query = query.where(runs.c.id.not_in(select(corrections.c.run_id).where(
            corrections.c.company_id == company, corrections.c.task_id == task_id, corrections.c.kind == once)))
    return conn.execute(query).first()


def _record(conn: Connection, company: str, run: object, *, workflow: str, task_id: int, kind: str, by: str,
            detail: str, now: str) -> None:
    conn.execute(insert(corrections), {"company_id": company, "run_id": run.id, "agent": run.agent,  # type: ignore[attr-defined]
                                       "workflow": workflow, "task_id": task_id, "kind": kind, "by": by,
                                       "detail": detail, "at": now})
    conn.execute(update(runs).where(runs.c.company_id == company, runs.c.id == run.id,  # type: ignore[attr-defined]
                                    runs.c.corrected_at.is_(None)), {"corrected_at": now})


def record_return_txn(conn: Connection, company: str, spec: CompanySpec, *, workflow: str, task_id: int,
                      left: str, entered: str, by: str, transition: str, now: str) -> None:
    """The task moved from ``left`` into ``entered`` (by ``by``'s ``transition``). A move *back* (``entered``
    is fewer steps from the initial state than ``left``: :func:`steps_from_initial`) reworks the latest run
    whose transition leaves ``entered``; a move forward or within its state corrects nothing."""
    if workflow not in spec.workflows:
        return
    flow = spec.workflows[workflow]
    steps = steps_from_initial(flow)
    if steps.get(entered, _FAR) >= steps.get(left, _FAR):
        return
    leaving = [n for n, t in flow.transitions.items() if entered in t.from_]
    run = _latest_run(conn, company, task_id, leaving, settle_cutoff(spec, now), once="rework")
    if run is not None:
        _record(conn, company, run, workflow=workflow, task_id=task_id, kind="rework", by=by,
                detail=f"'{transition}' by {by} moved the task back from '{left}' to '{entered}'", now=now)


_FAR = 1 << 30


def steps_from_initial(flow: Workflow) -> dict[str, int]:
    """Each state's fewest transitions from the workflow's initial state (unreachable states are left
    out): what makes a move one *back*."""
    steps = {flow.initial: 0}
    frontier = [flow.initial]
    while frontier:
        nxt = []
        for state in frontier:
            for t in flow.transitions.values():
                if state in t.from_ and t.to not in steps:
                    steps[t.to] = steps[state] + 1
                    nxt.append(t.to)
        frontier = nxt
    return steps


def record_rejection_txn(conn: Connection, company: str, spec: CompanySpec, *, request_id: int, workflow: str,
                         task_id: int, by: str, note: str, now: str) -> None:
    """Approval request ``request_id`` was rejected by ``by``: the run that opened it is corrected."""
    run = conn.execute(select(runs.c.id, runs.c.agent, runs.c.ended_at).where(
        runs.c.company_id == company, runs.c.approval_id == request_id)).first()
    if run is not None and run.ended_at is not None and run.ended_at >= settle_cutoff(spec, now):
        _record(conn, company, run, workflow=workflow, task_id=task_id, kind="rejected", by=by,
                detail=f"request {request_id} rejected by {by}: {note}", now=now)


def record_revert_txn(conn: Connection, company: str, spec: CompanySpec, *, workflow: str, task_id: int,
                      fields: list[str], by: str, now: str) -> None:
    """Human ``by`` edited ``fields`` of the task under a hold: the latest run (of another principal)
    whose transition writes one of them is reverted."""
    if workflow not in spec.workflows:
        return
    writing = [n for n, t in spec.workflows[workflow].transitions.items() if set(fields) & set(t.writes)]
    run = _latest_run(conn, company, task_id, writing, settle_cutoff(spec, now), not_by=by)
    if run is not None:
        _record(conn, company, run, workflow=workflow, task_id=task_id, kind="reverted", by=by,
                detail=f"{by} edited {', '.join(sorted(fields))} under a hold", now=now)


def record_artifact_revert_txn(conn: Connection, company: str, spec: CompanySpec, *, workflow: str, task_id: int,
                               run_id: str | None, name: str, by: str, now: str) -> None:
    """Human ``by`` saved a new version of artifact ``name`` under a hold, over a version run ``run_id``
    saved: that run is reverted, if it ended within the settle window."""
    if run_id is None:
        return
    run = conn.execute(select(runs.c.id, runs.c.agent, runs.c.ended_at).where(
        runs.c.company_id == company, runs.c.id == run_id, runs.c.agent != by)).first()
    if run is not None and run.ended_at is not None and run.ended_at >= settle_cutoff(spec, now):
        _record(conn, company, run, workflow=workflow, task_id=task_id, kind="reverted", by=by,
                detail=f"{by} saved a new version of artifact '{name}' under a hold", now=now)


def record_failed_check_txn(conn: Connection, company: str, spec: CompanySpec, *, workflow: str, task_id: int,
                            state: str, check: str, by: str, now: str) -> None:
    """``by`` recorded a failed ``check`` on the task, which sits in ``state``: the latest run of another
    principal whose transition put it there is corrected."""
    if workflow not in spec.workflows:
        return
    arriving = [n for n, t in spec.workflows[workflow].transitions.items() if t.to == state]
    run = _latest_run(conn, company, task_id, arriving, settle_cutoff(spec, now), not_by=by)
    if run is not None:
        _record(conn, company, run, workflow=workflow, task_id=task_id, kind="check_failed", by=by,
                detail=f"check '{check}' failed, recorded by {by}", now=now)
