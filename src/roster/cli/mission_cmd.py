"""``roster mission [show|hold|edit|release]``: an agent's mission and the versioned plan its reflection
runs write, and a human's hold, edit and release of that plan."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from roster.cli.context import console, emit_json, reports_errors, workspace
from roster.errors import UsageError

if TYPE_CHECKING:
    from roster.store.plans import PlanVersion

app = typer.Typer(help="Missions: an agent's plan, revised by its reflection runs, held and edited by humans.",
                  no_args_is_help=True)

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
AGENT = Annotated[str, typer.Argument(help="The agent whose mission it is.")]
NOTE = Annotated[str, typer.Option("--note", help="Why: kept on the audit trail.")]


def _label(v: PlanVersion) -> str:
    run = f", run {v.run_id}" if v.run_id else ""
    return f"v{v.version} by {v.author} at {v.created_at[:19]} UTC{run}: {v.reason}"


@app.command("show")
@reports_errors
def show(ctx: typer.Context, agent: AGENT,
         history: Annotated[int, typer.Option("--history", min=0, max=1000, help="Earlier versions to list, "
                                              "each with its diff against the one before.")] = 5,
         as_json: JSON = False) -> None:
    """AGENT's mission, reflection schedule and current plan, then its history: each version's author,
    reason and diff."""
    from roster.kernel.plans import reflection_cron
    from roster.store.plans import version_diff

    session = workspace(ctx).session()
    versions = session.plan_history(agent, limit=history + 1)
    me = session.spec().agents.get(agent)
    mission = me.mission if me else ""
    cron = reflection_cron(mission, me.reflect) if me else None
    if as_json:
        emit_json({"agent": agent, "mission": mission, "reflect_cron": cron,
                   "versions": [{**v.to_dict(), "diff": version_diff(versions[i + 1] if i + 1 < len(versions) else None,
                                                                     v)} for i, v in enumerate(versions)]})
        return
    console.print(f"mission of {agent}: {mission or '(none)'}", highlight=False, markup=False)
    console.print(f"reflects: {f'on cron {cron!r} (UTC)' if cron else 'never'}", highlight=False)
    if not versions:
        console.print(f"no plan yet: its first reflection writes one (`roster reflect {agent} --now`)",
                      highlight=False)
        return
    console.print(f"\nplan {_label(versions[0])}\n", highlight=False, markup=False)
    console.print(versions[0].text, highlight=False, markup=False)
    if history:
        console.print("history, newest first:", highlight=False)
    for i, v in enumerate(versions if history else []):
        older = versions[i + 1] if i + 1 < len(versions) else None
        if older is None and v.version > 1:
            console.print(f"  {_label(v)}", highlight=False, markup=False)
            continue
        console.print(f"  {_label(v)}", highlight=False, markup=False)
        console.print(version_diff(older, v) or "(no change)", highlight=False, markup=False)


@app.command("hold")
@reports_errors
def hold(ctx: typer.Context, agent: AGENT,
         hours: Annotated[float, typer.Option("--hours", min=0.01, max=168.0, help="How long to hold it.")] = 8.0,
         note: NOTE = "") -> None:
    """Hold AGENT's plan to edit it: nobody else revises it, and its reflection waits, until you release it."""
    held = workspace(ctx).session().hold_plan(agent, ttl=hours * 3600, note=note)
    console.print(f"plan of {agent} held by {held.holder} until {held.expires_at}; edit it with `roster mission edit "
                  f"{agent} --file plan.yaml --reason ...`, then `roster mission release {agent}`", highlight=False)


@app.command("edit")
@reports_errors
def edit(ctx: typer.Context, agent: AGENT,
         file: Annotated[Path, typer.Option("--file", exists=True, dir_okay=False, readable=True,
                                            help="The new plan, YAML or JSON: priorities, goals (objective, kpi), "
                                                 "stop_doing, no_kpi_goal_because. `roster mission show --json` "
                                                 "prints the current one.")],
         reason: Annotated[str, typer.Option("--reason", help="Why it changes: the agent's next reflection reads "
                                             "it with the diff.")],
         as_json: JSON = False) -> None:
    """Save a new version of AGENT's plan. It obeys the plan contract like any other version."""
    import yaml

    from roster.kernel.plans import Plan

    try:
        content = yaml.safe_load(file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"{file} is not YAML or JSON: {exc}") from None
    if isinstance(content, dict) and isinstance(content.get("plan"), dict):
        content = content["plan"]  # a version as `roster mission show --json` prints it
    saved = workspace(ctx).session().revise_plan(agent, Plan.parse(content), reason=reason)
    if as_json:
        emit_json(saved.to_dict())
        return
    console.print(f"plan {_label(saved)}", highlight=False, markup=False)


@app.command("release")
@reports_errors
def release(ctx: typer.Context, agent: AGENT, note: NOTE = "") -> None:
    """Give back your hold on AGENT's plan: its reflection may revise it again, and sees your edits."""
    workspace(ctx).session().release_plan(agent, note=note)
    console.print(f"plan of {agent} released", highlight=False)
