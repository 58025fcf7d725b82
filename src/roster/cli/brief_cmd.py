"""``roster context TASK --as AGENT``: exactly the brief that agent would be given now, and its size."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from roster.cli.context import console, emit_json, reports_errors, workspace
from roster.errors import NotFound

JSON = Annotated[bool, typer.Option("--json", help="Print the brief alone, as JSON.")]


def register(app: typer.Typer) -> None:
    app.command("context")(context)


@reports_errors
def context(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(help="The task id.")],
    agent: Annotated[str, typer.Option("--as", help="The agent whose view to assemble.")],
    as_json: JSON = False,
) -> None:
    """Print the brief AGENT would see for TASK at its next wake-up, and its size in tokens. Humans may
    preview any agent's brief; an agent only its own. Nothing is recorded as seen."""
    session = workspace(ctx).session()
    task = session.get_task(task_id)  # the caller must be able to read the task
    company = session.company_for("brief.preview", f"principal:{agent}")  # humans any; an agent its own
    if agent not in session.spec().agents:
        raise NotFound(f"no agent '{agent}' in company '{session.principal.company}'")
    from roster.runtime.context import ContextAssembler, Wakeup  # the runtime only here

    brief = ContextAssembler(company).brief(agent, task, Wakeup("preview", task.fencing_token or None))
    if as_json:
        emit_json(brief.data)
        return
    console.print_json(json.dumps(brief.data, sort_keys=True, default=str))
    report = brief.data["context"]
    left = ", ".join(f"{name} ({n})" for name, n in report["left_out"].items()) or "nothing"
    console.print(f"{report['tokens']} tokens of a {report['budget']}-token budget ({report['estimate']}); "
                  f"left out: {left}")
