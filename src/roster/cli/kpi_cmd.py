"""``roster kpi [list|history|measure|record]``: the KPIs the company exists to move, with their readings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from roster.cli.context import console, emit_json, reports_errors, workspace
from roster.errors import NotFound

if TYPE_CHECKING:
    from roster.store.kpis import KpiReading

app = typer.Typer(help="KPIs and their readings: before -> after, history, measure now.", no_args_is_help=True)

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _stamp(reading: KpiReading | None) -> str:
    return "-" if reading is None else f"{reading.value:g} ({reading.measured_at[:19].replace('T', ' ')})"


@app.command("list")
@reports_errors
def list_kpis(ctx: typer.Context, as_json: JSON = False) -> None:
    """Each KPI: its first and latest readings (before -> after), the change and the target."""
    session = workspace(ctx).session()
    spec = session.spec()
    summaries = session.kpi_summaries()
    if as_json:
        emit_json([{"name": name, **spec.kpis[name].model_dump(mode="json"), "readings": s.readings,
                    "first": s.first.__dict__ if s.first else None, "latest": s.latest.__dict__ if s.latest else None,
                    "change": s.change} for name, s in summaries.items()])
        return
    table = Table("KPI", "unit", "better", "target", "first (UTC)", "latest (UTC)", "change", "readings", box=None)
    for name, s in summaries.items():
        kpi = spec.kpis[name]
        table.add_row(name, kpi.unit or "-", kpi.direction, "-" if kpi.target is None else f"{kpi.target:g}",
                      _stamp(s.first), _stamp(s.latest), "-" if s.change is None else f"{s.change:+g}",
                      str(s.readings))
    console.print(table if summaries else "no KPIs in the spec")


@app.command("history")
@reports_errors
def history(ctx: typer.Context, name: Annotated[str, typer.Argument(help="A KPI the spec defines.")],
            limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100, as_json: JSON = False) -> None:
    """A KPI's readings, oldest first: when, the value, who recorded it and what prompted it."""
    readings = workspace(ctx).session().kpi_readings(name, limit=limit)
    if as_json:
        emit_json([r.__dict__ for r in readings])
        return
    table = Table("#", "measured (UTC)", "value", "by", "source", box=None)
    for r in readings:
        table.add_row(str(r.id), r.measured_at[:19].replace("T", " "), f"{r.value:g}", r.recorded_by, r.source)
    console.print(table if readings else f"no readings of {name} yet")


@app.command("measure")
@reports_errors
def measure(ctx: typer.Context, name: Annotated[str, typer.Argument(help="A KPI with a measure program.")],
            as_json: JSON = False) -> None:
    """Run the KPI's measure program now and record the value as yours."""
    ws = workspace(ctx)
    session = ws.session()
    kpi = session.spec().kpis.get(name)
    if kpi is None:
        raise NotFound(f"no KPI '{name}' in the spec; see 'roster kpi list'")
    if kpi.measure is None:
        raise NotFound(f"KPI '{name}' has no measure program; add 'measure: {{command: ...}}' to it in the spec, "
                       f"or record a value with 'roster kpi record {name} VALUE'")
    from roster.runtime.kpis import measure_value  # the runtime only for this command

    value = measure_value(kpi, workdir=ws.spec_path.resolve().parent)
    _print(session.record_kpi(name, value, source="measured by hand"), as_json)


@app.command("record")
@reports_errors
def record(ctx: typer.Context, name: Annotated[str, typer.Argument(help="A KPI the spec defines.")],
           value: Annotated[float, typer.Argument(help="The value, in the KPI's unit.")],
           note: Annotated[str, typer.Option("--note", help="Where the value comes from.")] = "recorded by hand",
           as_json: JSON = False) -> None:
    """Record a reading you measured yourself (humans only: agents never report their own KPIs)."""
    _print(workspace(ctx).session().record_kpi(name, value, source=note), as_json)


def _print(reading: KpiReading, as_json: bool) -> None:
    if as_json:
        emit_json(reading.__dict__)
    else:
        console.print(f"recorded {reading.kpi} = {reading.value:g} at {reading.measured_at[:19].replace('T', ' ')} "
                      f"({reading.source})")
