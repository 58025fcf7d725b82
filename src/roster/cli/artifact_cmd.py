"""``roster artifact show|diff|history``: the versions of a task's artifacts."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from roster.cli.context import console, emit_json, reports_errors, workspace

app = typer.Typer(help="Read a task's artifacts: their content, versions and diffs.", no_args_is_help=True)

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
TASK = Annotated[int, typer.Argument(help="The task id.")]
NAME = Annotated[str, typer.Argument(help="The artifact's name on the task (`roster task show` lists them).")]


@app.command("show")
@reports_errors
def show(ctx: typer.Context, task_id: TASK, name: NAME,
         version: Annotated[int | None, typer.Option("--version", "-v", help="Default: the latest.")] = None,
         as_json: JSON = False) -> None:
    """Print one version's content (verified against its SHA-256) to stdout."""
    record, content = workspace(ctx).session().artifact(task_id, name, version)
    if as_json:
        emit_json({**record.to_dict(), "content": content.decode(errors="replace")})
        return
    sys.stdout.buffer.write(content)
    sys.stdout.flush()


@app.command("diff")
@reports_errors
def diff(ctx: typer.Context, task_id: TASK, name: NAME,
         from_version: Annotated[int | None, typer.Option("--from", help="Default: the parent of --to.")] = None,
         to_version: Annotated[int | None, typer.Option("--to", help="Default: the latest.")] = None,
         as_json: JSON = False) -> None:
    """A unified diff between two versions (default: the latest against its parent)."""
    text = workspace(ctx).session().artifact_diff(task_id, name, from_version, to_version)
    if as_json:
        emit_json({"task_id": task_id, "name": name, "diff": text})
    else:
        sys.stdout.write(text)


@app.command("history")
@reports_errors
def history(ctx: typer.Context, task_id: TASK, name: NAME, as_json: JSON = False) -> None:
    """Every version: who saved it, in which run, why, and its parent."""
    versions = workspace(ctx).session().artifact_history(task_id, name)
    if as_json:
        emit_json([v.to_dict() for v in versions])
        return
    table = Table("version", "saved (UTC)", "by", "run", "size", "sha256", "reason", box=None)
    for v in versions:
        table.add_row(str(v.version), v.created_at[:19].replace("T", " "), v.created_by, v.run_id or "-",
                      str(v.size), v.sha256[:12], v.reason)
    console.print(table)
