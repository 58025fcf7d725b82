"""``roster msg send|inbox|thread``: messages between the company's humans and agents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from roster.cli.context import console, emit_json, reports_errors, workspace

if TYPE_CHECKING:
    from roster.store import Message

app = typer.Typer(help="Send and read messages; agents wake to read theirs.", no_args_is_help=True)

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _show(found: list[Message], as_json: bool) -> None:
    if as_json:
        emit_json([m.to_dict() for m in found])
        return
    table = Table("id", "thread", "sent (UTC)", "from", "to", "task", "message", "read", box=None)
    for m in found:
        table.add_row(str(m.id), str(m.thread_id), m.created_at[:19].replace("T", " "), m.sender, m.recipient,
                      str(m.task_id or "-"), m.body, "yes" if m.read_at else "no")
    console.print(table if found else "no messages")


@app.command("send")
@reports_errors
def send(ctx: typer.Context, to: Annotated[str, typer.Argument(help="A principal of your company.")],
         body: Annotated[str, typer.Argument(help="The message.")],
         task: Annotated[int | None, typer.Option("--task", help="The task it is about.")] = None,
         thread: Annotated[int | None, typer.Option("--thread", help="Reply in this thread.")] = None,
         as_json: JSON = False) -> None:
    """Send a message (an agent addressee wakes to read it)."""
    message = workspace(ctx).session().send_message(to, body, task_id=task, thread_id=thread)
    if as_json:
        emit_json(message.to_dict())
    else:
        console.print(f"sent message {message.id} to {message.recipient} (thread {message.thread_id})")


@app.command("inbox")
@reports_errors
def inbox(ctx: typer.Context, unread: Annotated[bool, typer.Option("--unread", help="Only unread ones.")] = False,
          limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50, as_json: JSON = False) -> None:
    """Messages to you, newest first."""
    _show(workspace(ctx).session().message_inbox(unread_only=unread, limit=limit), as_json)


@app.command("thread")
@reports_errors
def thread(ctx: typer.Context, thread_id: Annotated[int, typer.Argument(help="The thread id.")],
           as_json: JSON = False) -> None:
    """A whole thread, oldest first; reading it marks your messages in it as read."""
    session = workspace(ctx).session()
    found = session.thread(thread_id)
    session.mark_read([m.id for m in found if m.recipient == session.principal.handle])
    _show(found, as_json)
