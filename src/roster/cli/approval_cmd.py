"""``roster inbox``, ``roster approve``, ``roster reject`` and ``roster approvals``: the approval edges."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from roster.cli.context import console, emit_json, reports_errors, workspace
from roster.store.approvals import ApprovalRequest

approvals_app = typer.Typer(help="Approval requests: list, show, and the volume per edge.", no_args_is_help=True)

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    app.command("inbox")(inbox)
    app.command("approve")(approve)
    app.command("reject")(reject)
    app.add_typer(approvals_app, name="approvals")


def _table(requests: list[ApprovalRequest], title: str) -> Table:
    table = Table("id", "edge", "task", "asked by", "status", "expires", "change", "rationale", box=None,
                  title=title, title_justify="left")
    for r in requests:
        diff = r.evidence.get("fields_diff") or r.evidence.get("arguments") or {}
        change = ", ".join(sorted(diff)) or "-"
        table.add_row(str(r.id), r.edge, str(r.task_id or "-"), r.requested_by, r.status, r.expires_at[:16],
                      change, r.rationale or "-")
    return table


@reports_errors
def inbox(ctx: typer.Context, as_json: JSON = False) -> None:
    """Pending approval requests you may decide (never your own)."""
    session = workspace(ctx).session()
    requests = session.inbox()
    escalated = [e for e in session.list_escalations() if e.to == ("human" if session.principal.kind == "human"
                                                                   else session.principal.handle)]
    if as_json:
        emit_json([asdict(r) for r in requests] + [{"escalation": asdict(e)} for e in escalated])
        return
    if not requests and not escalated:
        console.print("inbox: nothing waits for you")
    if requests:
        console.print(_table(requests, "approval requests"))
    if escalated:
        table = Table("id", "task", "from", "category", "reason", box=None, title="escalations",
                      title_justify="left")
        for e in escalated:
            table.add_row(str(e.id), str(e.task_id), e.from_agent, e.category, e.reason)
        console.print(table)


@reports_errors
def approve(
    ctx: typer.Context,
    request_id: Annotated[int, typer.Argument(help="The request's id, from 'roster inbox'.")],
    note: Annotated[str, typer.Option("--note", help="A note for the record.")] = "",
    as_json: JSON = False,
) -> None:
    """Approve a request: its transition runs now, atomically, with you recorded as the approver."""
    request = workspace(ctx).session().approve_request(request_id, note=note)
    if as_json:
        emit_json(asdict(request))
    else:
        ran = f"; task {request.task_id} took {request.transition}" if request.kind == "transition" else ""
        console.print(f"request {request.id} ({request.edge}) approved{ran}")


@reports_errors
def reject(
    ctx: typer.Context,
    request_id: Annotated[int, typer.Argument(help="The request's id, from 'roster inbox'.")],
    note: Annotated[str, typer.Option("--note", help="Why: the requester sees it.")],
    as_json: JSON = False,
) -> None:
    """Reject a request with a note for the requester; nothing runs and the task is unchanged."""
    request = workspace(ctx).session().reject_request(request_id, note=note)
    if as_json:
        emit_json(asdict(request))
    else:
        console.print(f"request {request.id} ({request.edge}) rejected: {request.note}")


@approvals_app.command("list")
@reports_errors
def approvals_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="pending, approved, rejected, expired, stale, used")]
    = None,
    as_json: JSON = False,
) -> None:
    """Approval requests (agents see their own), oldest first."""
    requests = workspace(ctx).session().list_requests(status=status)
    if as_json:
        emit_json([asdict(r) for r in requests])
    else:
        console.print(_table(requests, "approval requests") if requests else "no approval requests")


@approvals_app.command("show")
@reports_errors
def approvals_show(ctx: typer.Context, request_id: int, as_json: JSON = False) -> None:
    """One request with its evidence and decision."""
    request = workspace(ctx).session().get_request(request_id)
    if as_json:
        emit_json(asdict(request))
        return
    console.print(f"[bold]request {request.id}[/]: {request.edge}, {request.status}", highlight=False)
    console.print(f"  asked by {request.requested_by} at {request.created_at}; expires {request.expires_at}",
                  highlight=False)
    if request.decided_by:
        console.print(f"  decided by {request.decided_by} at {request.decided_at}: {request.note or '-'}",
                      highlight=False)
    evidence = dict(request.evidence)
    checks = evidence.pop("checks", [])
    shown = evidence.pop("artifacts", [])
    console.print_json(json.dumps(evidence))
    for check in checks:  # what the checks found, then each artifact as text (a patch reads as a patch)
        console.print(f"  check {check['name']}: {'passed' if check['passed'] else 'FAILED'}"
                      + (f" ({check['detail']})" if check["detail"] else ""), highlight=False)
    for artifact in shown:
        console.print(f"\n[bold]{artifact['name']}[/] ({artifact['kind']}, version {artifact['version']}, "
                      f"{artifact['size']} bytes)", highlight=False)
        if "preview" in artifact:
            console.out(artifact["preview"], highlight=False)
            if artifact.get("truncated"):
                console.print(f"  ... cut; all of it: roster artifact show {request.task_id} {artifact['name']}",
                              highlight=False)


@approvals_app.command("stats")
@reports_errors
def approvals_stats(ctx: typer.Context, as_json: JSON = False) -> None:
    """Requests per approval edge and how they were decided: an edge that is nearly always approved may
    not be worth a human's time."""
    stats = workspace(ctx).session().company.approval_stats()  # any principal of the company may see counts
    if as_json:
        emit_json(stats)
        return
    table = Table("edge", "requested", "approved", "rejected", "expired", "stale", "pending", "approval rate",
                  box=None)
    for entry in stats:
        decided = entry["approved"] + entry["rejected"]
        rate = f"{entry['approved'] / decided:.0%}" if decided else "-"
        table.add_row(entry["edge"], *(str(entry[k]) for k in ("requested", "approved", "rejected", "expired",
                                                               "stale", "pending")), rate)
    console.print(table if stats else "no approval requests yet")
