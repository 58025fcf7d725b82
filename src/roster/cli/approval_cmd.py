"""``roster inbox``, ``roster approve``, ``roster reject`` and ``roster approvals``: the approval edges."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from roster.cli.context import console, emit_json, err_console, reports_errors, workspace
from roster.errors import RosterError

if TYPE_CHECKING:
    from roster.store.approvals import ApprovalRequest

approvals_app = typer.Typer(help="Approval requests: list, show, and the volume per edge.", no_args_is_help=True)

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    app.command("inbox")(inbox)
    app.command("approve")(approve)
    app.command("reject")(reject)
    app.add_typer(approvals_app, name="approvals")


def _table(requests: list[ApprovalRequest], title: str, *, decisions: bool = False) -> Table:
    """The requests as a table; with ``decisions``, who decided each and their note (for a ``stale`` one:
    what moved its task)."""
    table = Table("id", "edge", "task", "asked by", "status", "expires", "change", "rationale", box=None,
                  title=title, title_justify="left")
    if decisions:
        table.add_column("decision")
    for r in requests:
        diff = r.evidence.get("fields_diff") or r.evidence.get("arguments") or {}
        change = ", ".join(sorted(diff)) or "-"
        row = [str(r.id), r.edge, str(r.task_id or "-"), r.requested_by, r.status, r.expires_at[:16], change,
               r.rationale or "-"]
        if decisions:
            row.append(f"{r.decided_by}: {r.note}" if r.decided_by else "-")
        table.add_row(*row)
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


IDS = Annotated[list[int], typer.Argument(help="The requests' ids, from 'roster inbox'; each is decided on its own.")]


def _decide_each(request_ids: list[int], decide: Callable[..., ApprovalRequest],
                 done: Callable[[ApprovalRequest], str], as_json: bool) -> None:
    """Decide each request on its own, in the order given: one refusal does not stop or undo the others.
    One line per request (``request N ...`` or ``request N: error: ...``); exit 0 if every decision was
    made, else the exit code of the first refusal. A single id keeps the single-request shapes: its
    request as JSON on stdout, or its error on stderr."""
    if len(request_ids) == 1:
        request = decide(request_ids[0])
        if as_json:
            emit_json(asdict(request))
        else:
            console.print(done(request), highlight=False)
        return
    results: list[dict[str, Any]] = []
    failed: RosterError | None = None
    for request_id in request_ids:
        try:
            request = decide(request_id)
        except RosterError as exc:
            failed = failed or exc
            results.append({"id": request_id, "ok": False, "error": exc.to_dict()})
            if not as_json:
                err_console.print(Text.assemble(f"request {request_id}: ", ("error: ", "bold red"), exc.message))
            continue
        results.append({"id": request_id, "ok": True, "request": asdict(request)})
        if not as_json:
            console.print(done(request), highlight=False)
    if as_json:
        emit_json(results)
    if failed is not None:
        raise typer.Exit(failed.exit_code)


@reports_errors
def approve(
    ctx: typer.Context,
    request_ids: IDS,
    note: Annotated[str, typer.Option("--note", help="A note for the record (the same for each request).")] = "",
    as_json: JSON = False,
) -> None:
    """Approve requests: each one's transition runs now, atomically, with you recorded as the approver.
    Several ids are decided one by one; the exit code is the first refusal's (0 if none)."""
    session = workspace(ctx).session()

    def done(request: ApprovalRequest) -> str:
        ran = f"; task {request.task_id} took {request.transition}" if request.kind == "transition" else ""
        return f"request {request.id} ({request.edge}) approved{ran}"

    _decide_each(request_ids, lambda rid: session.approve_request(rid, note=note), done, as_json)


@reports_errors
def reject(
    ctx: typer.Context,
    request_ids: IDS,
    note: Annotated[str, typer.Option("--note", help="Why: the requester sees it (the same for each request).")],
    as_json: JSON = False,
) -> None:
    """Reject requests with a note for each requester; nothing runs and the tasks are unchanged. Several
    ids are decided one by one; the exit code is the first refusal's (0 if none)."""
    session = workspace(ctx).session()
    _decide_each(request_ids, lambda rid: session.reject_request(rid, note=note),
                 lambda r: f"request {r.id} ({r.edge}) rejected: {r.note}", as_json)


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
        console.print(_table(requests, "approval requests", decisions=True) if requests else "no approval requests")


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
def approvals_stats(
    ctx: typer.Context,
    window: Annotated[str, typer.Option("--window", help="How far back requests count: 30d, 7d, 12h.")] = "30d",
    as_json: JSON = False,
) -> None:
    """Review volume per approval edge: the requests made in the window, how they were decided, and a
    verdict. An edge nearly always approved is over-reviewed (is it worth a human's time?); one that keeps
    rejecting has a weak upstream (the contract before it lets problems through); below the spec's
    fitness.review.min_requests decided requests it is too few to judge."""
    from roster.kernel.spec import window_seconds  # here: `roster --help` loads no kernel

    seconds = window_seconds(window)  # a UsageError naming the accepted form, before the store is opened
    stats = workspace(ctx).session().approval_stats(window_seconds=seconds)  # any principal may see counts
    if as_json:
        emit_json(stats)
        return
    if not stats:
        console.print(f"no approval requests in the last {window}", highlight=False)
        return
    counts = Table("edge", "requested", "approved", "rejected", "expired", "stale", "pending", "approval rate",
                   box=None, title=f"approval requests made in the last {window}", title_justify="left")
    verdicts = Table("edge", "verdict", "summary", box=None, title="verdicts (thresholds: the spec's fitness.review)",
                     title_justify="left")
    for entry in stats:
        rate = entry["approval_rate"]
        counts.add_row(entry["edge"], *(str(entry[k]) for k in ("requested", "approved", "rejected", "expired",
                                                                "stale", "pending")),
                       "-" if rate is None else f"{rate:.0%}")
        verdicts.add_row(entry["edge"], entry["verdict"], entry["summary"])
    console.print(counts)
    console.print(verdicts)
