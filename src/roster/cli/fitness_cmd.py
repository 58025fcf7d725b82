"""``roster fitness``: each agent's fitness from the record, and two agents or models side by side."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from roster.cli.context import console, emit_json, reports_errors, workspace
from roster.errors import NotFound, UsageError

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    app.command("fitness")(fitness)
    app.command("stage")(stage)


@reports_errors
def fitness(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Argument(help="One agent: its workflows, transitions and KPIs.")] = None,
    window: Annotated[str, typer.Option("--window", help="How far back: 7d, 30d, 12h.")] = "7d",
    compare: Annotated[tuple[str, str] | None, typer.Option(
        "--compare", help="Two agents, or two models or runners, side by side: success, cost per success, "
                          "correction burden, latency.")] = None,
    as_json: JSON = False,
) -> None:
    """Fitness per agent, from the record, never self-reported: success rate (transitions that stuck
    through the settle window), cost per successful outcome in USD and tokens, correction burden by kind,
    latency p50/p95 and KPI movement after its successes (attribution, not causation). Each figure
    carries its evidence (settled outcomes); below the spec's fitness.min_outcomes it says "not enough
    evidence". Definitions: docs/fitness.md."""
    from roster.kernel.spec import window_seconds  # here: `roster --help` loads no kernel

    session = workspace(ctx).session()
    report = session.fitness(window_seconds=window_seconds(window), agent=agent if compare is None else None)
    if compare is not None:
        sides = [_side(report, name) for name in compare]
        if as_json:
            emit_json({"since": report["since"], "until": report["until"], "compare": sides})
        else:
            _print_compare(sides, window)
        return
    if agent is not None and not report["agents"]:
        if agent not in session.spec().agents:
            raise NotFound(f"no agent '{agent}' in the spec; `roster fitness` lists those with runs")
    if as_json:
        emit_json(report)
        return
    console.print(f"fitness since {report['since']} ({window}); a transition counts once it stuck for "
                  f"{report['settle']}; figures need {report['min_outcomes']} settled outcome(s)", highlight=False)
    if not report["agents"]:
        console.print("no runs in the window")
        return
    table = Table("agent", *_COLUMNS, box=None)
    for a in report["agents"]:
        table.add_row(a["agent"], *_cells(a))
    console.print(table)
    if any(not a["enough"] for a in report["agents"]):
        console.print(f"-: not enough evidence (fewer than {report['min_outcomes']} settled outcomes; "
                      "fitness.min_outcomes)", highlight=False)
    if agent is not None:
        for a in report["agents"]:
            _print_agent(a)
    if report["models"]:
        table = Table("model or runner", *_COLUMNS, box=None, title="per model or runner", title_justify="left")
        for m in report["models"]:
            table.add_row(m["model"], *_cells(m))
        console.print(table)


def _side(report: dict[str, Any], name: str) -> dict[str, Any]:
    for a in report["agents"]:
        if a["agent"] == name:
            return {"name": name, "kind": "agent", **{k: v for k, v in a.items() if k != "workflows"}}
    for m in report["models"]:
        if m["model"] == name:
            return {"name": name, "kind": "model", **m}
    known = [a["agent"] for a in report["agents"]] + [m["model"] for m in report["models"]]
    raise UsageError(f"--compare: {name!r} has no runs in the window; agents and models with runs: "
                     f"{', '.join(known) or 'none'}")


_COLUMNS = ("settled", "success", "USD/succ.", "tok/succ.", "burden", "p50/p95 s", "rep.")


def _cells(fig: dict[str, Any]) -> list[str]:
    """A grain's row: settled outcomes (and unsettled ones in brackets), success rate, costs per success,
    burden by kind, latency, reputation; ``-`` where there is not enough evidence."""
    from roster.kernel.fitness import burden_text  # here: `roster --help` loads no kernel

    burden = burden_text(fig["burden"]) or "-"
    if fig["enough"]:
        success = f"{fig['success_rate']:.0%}"
        usd = (f"{fig['usd_per_success']:.4f}" if fig["usd_per_success"] is not None
               else "unknown" if fig["unpriced_runs"] else "-")
        tokens = f"{fig['tokens_per_success']:g}" if fig["tokens_per_success"] is not None else "-"
    else:
        success, usd, tokens = "-", "-", "-"
    settled = f"{fig['evidence']}" + (f" (+{fig['unsettled']})" if fig["unsettled"] else "")
    seconds = "/".join(f"{fig[k]:.2f}" if fig[k] is not None else "-" for k in ("p50_seconds", "p95_seconds"))
    return [settled, success, usd, tokens, burden, seconds, f"{fig['reputation']:.2f}"]


def _print_agent(a: dict[str, Any]) -> None:
    for w in a["workflows"]:
        console.print(f"\n{a['agent']} on {w['workflow']}: " + " · ".join([f"success {_cells(w)[1]}"] + [
            f"{t['transition']}: {t['successes']} of {t['outcomes']} stuck (reputation {t['reputation']:.2f})"
            for t in w["transitions"]]), highlight=False)
        for kpi, moved in w["kpis"].items():
            console.print(f"  {kpi} after its successes (attribution, not causation): {moved['toward']} toward "
                          f"the target, {moved['away']} away, {moved['unchanged']} unchanged, "
                          f"{moved['unmeasured']} without a reading after", highlight=False)


def _print_compare(sides: list[dict[str, Any]], window: str) -> None:
    table = Table("", *(f"{s['name']} ({s['kind']})" for s in sides), box=None,
                  title=f"side by side, last {window}", title_justify="left")
    cells = [_cells(s) for s in sides]
    for i, label in enumerate(_COLUMNS):
        table.add_row(label, *(c[i] for c in cells))
    console.print(table)


@reports_errors
def stage(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Argument(help="One agent (default: every agent).")] = None,
    workflow: Annotated[str | None, typer.Argument(help="One workflow (with --set: default every workflow).")] = None,
    set_to: Annotated[str | None, typer.Option("--set", help="shadow, assist, bounded or autonomous.")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (required with --set; audited).")] = "",
    as_json: JSON = False,
) -> None:
    """Autonomy stages: each agent's per workflow (shadow: runs beside the owner, never applied; assist:
    every transition approved by a human; bounded: approvals at the spec's edges; autonomous: relaxable
    edges skipped while over-reviewed), where each comes from (spec, human, criteria) and why. With --set
    (humans with admin), move one; it sticks until new evidence crosses a criterion."""
    session = workspace(ctx).session()
    if set_to is not None:
        if agent is None:
            raise UsageError("--set needs the agent: roster stage AGENT [WORKFLOW] --set STAGE --reason WHY")
        if not reason.strip():
            raise UsageError("--set needs --reason: why the stage changes, for the agent's record")
        moved = session.set_stage(agent, set_to, workflow=workflow, reason=reason)
        if as_json:
            emit_json(moved)
        else:
            console.print(f"{agent} is now {moved['stage']} on {workflow or 'every workflow'} ({reason})",
                          highlight=False)
        return
    found = [s for s in session.stages(agent=agent) if workflow is None or s["workflow"] == workflow]
    if as_json:
        emit_json(found)
        return
    table = Table("agent", "workflow", "stage", "from", "since", "why", box=None)
    for s in found:
        source = s["source"] if s["source"] != "human" else f"{s['set_by']}"
        table.add_row(s["agent"], s["workflow"], s["stage"], source, (s["set_at"] or "-")[:16], s["reason"] or "-")
    console.print(table if found else "no agent may act on a workflow")
