"""``roster audit log`` and ``roster audit verify``: read and check the hash-chained audit trail."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from roster.cli.context import console, emit_json, reports_errors, workspace
from roster.errors import AuditChainBroken

app = typer.Typer(help="Read and verify the audit trail.", no_args_is_help=True)

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.command("log")
@reports_errors
def log(
    ctx: typer.Context,
    principal: Annotated[str | None, typer.Option("--principal", "-p", help="Only this principal's events.")] = None,
    task: Annotated[int | None, typer.Option("--task", help="Only this task's events.")] = None,
    action: Annotated[str | None, typer.Option("--action", "-a", help="Only this action; 'task.*' for a prefix.")]
    = None,
    since: Annotated[str | None, typer.Option("--since", help="From this UTC time (ISO 8601), inclusive.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Before this UTC time (ISO 8601).")] = None,
    after: Annotated[int, typer.Option("--after", help="Cursor: events with seq above this one.")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 200,
    as_json: JSON = False,
) -> None:
    """List audit events, oldest first, filtered."""
    events = workspace(ctx).session().audit_log(principal=principal, task_id=task, action=action, since=since,
                                                until=until, after_seq=after, limit=limit)
    if as_json:
        emit_json([asdict(e) for e in events])
        return
    table = Table("seq", "time (UTC)", "principal", "action", "subject", "data", box=None)
    for e in events:
        table.add_row(str(e.seq), e.ts, e.principal, e.action, e.subject,
                      json.dumps(e.data, sort_keys=True)[:120])
    console.print(table if events else "no events")


@app.command("verify")
@reports_errors
def verify(ctx: typer.Context, as_json: JSON = False) -> None:
    """Walk the company's audit chain. Exits 9 and names the first bad sequence number if it was tampered with."""
    session = workspace(ctx).session()
    company = session.company
    checked, broken = session.verify_audit()
    if broken is not None:
        raise AuditChainBroken(company.company, *broken)
    if as_json:
        emit_json({"company": company.company, "events": checked, "valid": True})
    else:
        console.print(f"audit chain of company '{company.company}' verifies: {checked} events, no break")
