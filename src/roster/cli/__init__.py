"""The ``roster`` command line: a thin adapter over the store. Exit codes are listed in docs/cli.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from roster.cli import (
    approval_cmd,
    artifact_cmd,
    audit_cmd,
    brief_cmd,
    demo_cmd,
    kpi_cmd,
    memory_cmd,
    msg_cmd,
    principal_cmd,
    runtime_cmd,
    serve_cmd,
    spec_cmd,
    task_cmd,
)
from roster.cli.context import Settings
from roster.store.engine import DEFAULT_LOCK_TIMEOUT

app = typer.Typer(
    name="roster",
    help="Roster: the workplace where AI agents and humans do real work together, under contract and on the record.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    spec: Annotated[Path | None, typer.Option("--spec", envvar="ROSTER_SPEC",
                                              help="The spec file (default: nearest roster.yaml upwards).")] = None,
    db: Annotated[str | None, typer.Option("--db", envvar="ROSTER_DB",
                                           help="Database URL (default: SQLite .roster/roster.db beside the spec).")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="ROSTER_TOKEN",
                                              help="API token to act with (default: the local operator's, "
                                              "saved by 'roster init').")] = None,
    company: Annotated[str | None, typer.Option("--company", envvar="ROSTER_COMPANY",
                                                help="Company id (default: the spec's 'company').")] = None,
    lock_timeout: Annotated[float, typer.Option("--lock-timeout", envvar="ROSTER_LOCK_TIMEOUT",
                                                help="Seconds to wait for a database locked by another process.")]
    = DEFAULT_LOCK_TIMEOUT,
) -> None:
    ctx.obj = Settings(spec, db, token, company, lock_timeout)


spec_cmd.register(app)
demo_cmd.register(app)
principal_cmd.register(app)
approval_cmd.register(app)
runtime_cmd.register(app)
brief_cmd.register(app)
serve_cmd.register(app)
app.add_typer(task_cmd.app, name="task")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(artifact_cmd.app, name="artifact")
app.add_typer(memory_cmd.app, name="memory")
app.add_typer(msg_cmd.app, name="msg")
app.add_typer(kpi_cmd.app, name="kpi")


def main() -> None:
    app()
