"""The tasks a goal run filed toward its goal, and the wake-up when one of them finishes.

A task filed (or delegated) by a goal run is linked to the goal in ``goal_tasks``. When such a task
reaches a terminal state of its workflow, its goal, if still active, is due at once (in the same
transaction as the transition): something the goal depends on changed, so its agent looks again
without waiting for the cadence. And what the runs on such a task spend is charged to the goal too (as
each run ends): everything spent toward a goal is attributed to it. These are composition helpers: the goal verbs write the link and the
task verbs call the wake-up.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, insert, select, update

from roster.store.prepared import Prepared
from roster.store.schema import goal_tasks, goals, runs

_LINKED_GOAL = Prepared(
    select(goal_tasks.c.goal_id).where(
        goal_tasks.c.company_id == bindparam("company"),
        goal_tasks.c.task_id == select(runs.c.task_id).where(runs.c.company_id == bindparam("company"),
                                                             runs.c.id == bindparam("run_id")).scalar_subquery()))

_WAKE = Prepared(
    update(goals)
    .where(goals.c.company_id == bindparam("company"), goals.c.state == "active",
           goals.c.id == select(goal_tasks.c.goal_id).where(goal_tasks.c.company_id == bindparam("company"),
                                                            goal_tasks.c.task_id == bindparam("task_id"))
           .scalar_subquery())
    .values(due_at=bindparam("now")))


def link_goal_task_txn(conn: Connection, company: str, goal_id: int, task_id: int) -> None:
    """Link task ``task_id`` to goal ``goal_id`` (a task is linked to one goal: the first that filed it)."""
    known = conn.execute(select(goal_tasks.c.goal_id).where(goal_tasks.c.company_id == company,
                                                            goal_tasks.c.task_id == task_id)).first()
    if known is None:
        conn.execute(insert(goal_tasks), {"company_id": company, "task_id": task_id, "goal_id": goal_id})


def linked_goal_of_run_txn(conn: Connection, company: str, run_id: str) -> int | None:
    """The goal that run ``run_id``'s task was filed toward, if any (one indexed read)."""
    row = _LINKED_GOAL.first(conn, {"company": company, "run_id": run_id})
    return row.goal_id if row is not None else None


def wake_goal_of_task_txn(conn: Connection, company: str, task_id: int, now: str) -> int:
    """Make the active goal task ``task_id`` was filed toward due ``now``, as the task finished. Returns
    how many goals woke (0 or 1): one indexed statement."""
    return _WAKE.rowcount(conn, {"company": company, "task_id": task_id, "now": now})
