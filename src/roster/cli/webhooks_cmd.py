"""``roster webhooks [log|replay|secret]``: the webhook delivery log, re-queueing deliveries, and a fresh
signing secret. Hooks are configured in the spec (``webhooks:``; docs/webhooks.md); ``roster up`` delivers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from roster.cli.context import console, emit_json, reports_errors, workspace
from roster.errors import UsageError

if TYPE_CHECKING:
    from roster.store.webhooks import WebhookDelivery

app = typer.Typer(help="Webhooks: the delivery log, replays, and a fresh signing secret.", no_args_is_help=True)

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _when(ts: str | None) -> str:
    return "-" if not ts else ts[:19].replace("T", " ")


@app.command("log")
@reports_errors
def log(ctx: typer.Context,
        hook: Annotated[str | None, typer.Option("--hook", help="Only this hook's deliveries.")] = None,
        status: Annotated[str | None, typer.Option("--status", help="pending, delivered or failed.")] = None,
        limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50, as_json: JSON = False) -> None:
    """The delivery log, newest first: each event sent to each hook, its attempts and the last answer."""
    deliveries = workspace(ctx).session().webhook_deliveries(hook=hook, status=status, limit=limit)
    if as_json:
        emit_json([d.as_dict() for d in deliveries])
        return
    table = Table("id", "hook", "event", "seq", "status", "attempts", "last", "next / delivered (UTC)", "error",
                  box=None)
    for d in deliveries:
        table.add_row(str(d.id), d.hook, d.event, str(d.seq), d.status, str(d.attempts),
                      "-" if d.last_status is None else str(d.last_status), _row_time(d), d.last_error or "-")
    console.print(table if deliveries else "no webhook deliveries" + (f" with status {status}" if status else ""))


def _row_time(delivery: WebhookDelivery) -> str:
    if delivery.status == "delivered":
        return _when(delivery.delivered_at)
    return _when(delivery.next_attempt_at) if delivery.status == "pending" else "-"


@app.command("replay")
@reports_errors
def replay(ctx: typer.Context,
           delivery_ids: Annotated[list[int] | None, typer.Argument(help="Delivery ids (roster webhooks log).")]
           = None,
           failed: Annotated[bool, typer.Option("--failed", help="Every failed delivery.")] = False,
           as_json: JSON = False) -> None:
    """Queue deliveries again (same body, same webhook-id), due now: those named, or every failed one.
    Needs admin on the company; roster up sends them."""
    if not delivery_ids and not failed:
        raise UsageError("name the deliveries to replay (roster webhooks log lists them), or pass --failed")
    ids = workspace(ctx).session().replay_webhooks(delivery_ids or None, failed=failed)
    if as_json:
        emit_json({"replayed": ids})
        return
    console.print(f"queued again: {', '.join(map(str, ids))}" if ids else "nothing to replay")


@app.command("secret")
def secret() -> None:
    """Print a new signing secret (whsec_ and base64) to put in the variable a hook's secret_env names."""
    from roster.kernel.webhooks import new_secret

    console.print(new_secret(), highlight=False)
