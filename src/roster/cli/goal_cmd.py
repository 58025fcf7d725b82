"""``roster goal [add|list|show|pause|resume|abandon]``: an agent's goals, their checks, spend and state."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from roster.cli.context import console, emit_json, reports_errors, workspace
from roster.errors import UsageError

if TYPE_CHECKING:
    from roster.store.goals import Goal

app = typer.Typer(help="Goals: an agent's objective, a check a program decides, a budget, and its state.",
                  no_args_is_help=True)

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
GOAL_ID = Annotated[int, typer.Argument(help="The goal's id (see 'roster goal list').", min=1, max=2**31 - 1)]
NOTE = Annotated[str, typer.Option("--note", help="Why: kept with the goal and on the audit trail.")]


def _seconds(text: str, what: str) -> int:
    """``30m``, ``12h``, ``3d`` (or a number of seconds) in seconds. Raises :class:`UsageError`."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    try:
        return int(text) if text.isdigit() else int(text[:-1]) * units[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise UsageError(f"{what} is a duration such as 30m, 12h or 3d; not '{text}'") from None


def goal_json(goal: Goal) -> dict[str, Any]:
    """A goal as JSON (``roster goal show --json``, ``roster goal list --json``)."""
    return {"id": goal.id, "agent": goal.agent, "objective": goal.objective, "state": goal.state,
            "reason": goal.reason, "check": goal.check.model_dump(exclude_none=True),
            "budget": goal.budget.model_dump(exclude_none=True), "spend": goal.spend.model_dump(),
            "every_seconds": goal.every_seconds, "stall_after": goal.stall_after, "deadline_at": goal.deadline_at,
            "idle_runs": goal.idle_runs, "last_check": goal.last_check, "checked_at": goal.checked_at,
            "created_by": goal.created_by, "created_at": goal.created_at, "updated_at": goal.updated_at,
            "version": goal.version}


def _spend(goal: Goal) -> str:
    budget, spend = goal.budget, goal.spend
    parts = []
    if budget.usd is not None:
        parts.append(f"{spend.usd_text()} of ${budget.usd:g}")
    if budget.tokens is not None:
        parts.append(f"{spend.tokens} of {budget.tokens} tokens")
    if budget.runs is not None:
        parts.append(f"{spend.runs} of {budget.runs} runs")
    if budget.seconds is not None:
        parts.append(f"{spend.seconds:.0f} of {budget.seconds:g} s")
    return ", ".join(parts)


def _print(goal: Goal, as_json: bool) -> None:
    if as_json:
        emit_json(goal_json(goal))
        return
    console.print(f"goal {goal.id} of {goal.agent}: {goal.state}" + (f" ({goal.reason})" if goal.reason else ""),
                  highlight=False)
    console.print(f"  objective: {goal.objective}", highlight=False)
    console.print(f"  check:     {goal.check.describe()}", highlight=False)
    console.print(f"  spend:     {_spend(goal)}", highlight=False)
    if goal.last_check is not None:
        verdict = "passed" if goal.last_check.get("passed") else "not met"
        detail = goal.last_check.get("error") or goal.last_check.get("output") or ""
        if goal.last_check.get("kind") == "kpi":
            detail = f"{goal.check.kpi} = {goal.last_check.get('value')}"
        console.print(f"  last check ({(goal.checked_at or '')[:19]} UTC): {verdict}"
                      + (f": {str(detail).splitlines()[-1][:200]}" if detail else ""), highlight=False)


@app.command("add")
@reports_errors
def add(ctx: typer.Context,
        agent: Annotated[str, typer.Argument(help="The agent the goal belongs to.")],
        objective: Annotated[str, typer.Argument(help="What it should achieve, in a sentence.")],
        check: Annotated[str | None, typer.Option("--check", help="A command that exits 0 when the goal is met "
                                                  "(run in the spec's folder; humans only).")] = None,
        kpi: Annotated[str | None, typer.Option("--kpi", help="A KPI target instead, e.g. lint_findings<=5.")] = None,
        budget_usd: Annotated[float | None, typer.Option("--budget-usd", min=0.0, help="USD it may spend.")] = None,
        budget_tokens: Annotated[int | None, typer.Option("--budget-tokens", min=1, help="Model tokens.")] = None,
        budget_runs: Annotated[int | None, typer.Option("--budget-runs", min=1, help="Goal runs.")] = None,
        budget_time: Annotated[str | None, typer.Option("--budget-time", help="Wall time of its runs, e.g. 2h.")] = None,
        every: Annotated[str, typer.Option("--every", help="Its cadence: how often the agent is woken for it.")] = "15m",
        stall_after: Annotated[int, typer.Option("--stall-after", min=1, help="Goal runs in a row that may change "
                                                 "nothing before it stalls.")] = 3,
        deadline: Annotated[str | None, typer.Option("--deadline", help="When it is due, from now: e.g. 3d.")] = None,
        timeout: Annotated[float, typer.Option("--timeout", min=1.0, max=3600.0, help="Seconds a check may "
                                               "run.")] = 300.0,
        as_json: JSON = False) -> None:
    """Set a goal for AGENT, checked at once: a check that already passes meets it at once."""
    from roster.kernel.goals import GoalBudget, GoalCheck
    from roster.runtime.goal_checks import check_goal  # the runtime only for this command

    if (check is None) == (kpi is None):
        raise UsageError("give the goal exactly one check: --check CMD (exits 0 when met) or --kpi NAME<=VALUE")
    goal_check = GoalCheck(command=check, timeout=timeout) if check is not None else GoalCheck.parse_kpi(
        kpi or "", timeout=timeout)
    seconds = _seconds(budget_time, "--budget-time") if budget_time is not None else None
    if all(v is None for v in (budget_usd, budget_tokens, budget_runs, seconds)):
        raise UsageError("give the goal a budget: --budget-usd, --budget-tokens, --budget-runs or --budget-time; "
                         "without one nothing stops an agent that loops on it")
    budget = GoalBudget(usd=budget_usd or None, tokens=budget_tokens, runs=budget_runs, seconds=seconds)
    ws = workspace(ctx)
    session = ws.session()
    deadline_at = None
    if deadline is not None:
        from roster.store.store import format_ts

        deadline_at = format_ts(ws.store().clock() + timedelta(seconds=_seconds(deadline, "--deadline")))
    goal = session.set_goal(agent, objective, check=goal_check, budget=budget, every_seconds=_seconds(every, "--every"),
                            stall_after=stall_after, deadline_at=deadline_at)
    company = session.company_for("goal.set", f"principal:{agent}")  # the check is recorded by the runtime
    _print(check_goal(company, goal, workdir=ws.spec_path.resolve().parent), as_json)


@app.command("list")
@reports_errors
def list_goals(ctx: typer.Context,
               agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's goals.")] = None,
               state: Annotated[str | None, typer.Option("--state", help="Only goals in this state.")] = None,
               limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100, as_json: JSON = False) -> None:
    """Goals, newest first: yours and those you set, or every goal if you oversee the company."""
    found = workspace(ctx).session().list_goals(agent=agent, state=state, limit=limit)
    if as_json:
        emit_json([goal_json(g) for g in found])
        return
    table = Table("#", "agent", "state", "objective", "check", "spend", box=None)
    for g in found:
        table.add_row(str(g.id), g.agent, g.state, g.objective[:60], g.check.describe()[:40], _spend(g))
    console.print(table if found else "no goals")


@app.command("show")
@reports_errors
def show(ctx: typer.Context, goal_id: GOAL_ID, as_json: JSON = False) -> None:
    """One goal: its check and the evidence of the last one, its spend against budget, and its state."""
    _print(workspace(ctx).session().get_goal(goal_id), as_json)


def _mover(verb: str, doc: str) -> None:
    @reports_errors
    def moved(ctx: typer.Context, goal_id: GOAL_ID, note: NOTE = "", as_json: JSON = False) -> None:
        _print(workspace(ctx).session().move_goal(goal_id, verb, note=note), as_json)

    moved.__doc__ = doc
    app.command(verb)(moved)


_mover("pause", "Pause a goal: its agent is not woken for it until it is resumed.")
_mover("resume", "Resume a paused or stalled goal (its count of runs that changed nothing starts again).")
_mover("abandon", "Give a goal up, with a note saying why. It is closed for good.")
