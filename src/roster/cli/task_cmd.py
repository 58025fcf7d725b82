"""``roster task ...``: create, list, show and move tasks, and record the evidence contracts ask for."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from roster.cli.context import console, emit_json, reports_errors, workspace
from roster.errors import NotFound, UsageError

if TYPE_CHECKING:
    from roster.kernel.spec import CompanySpec
    from roster.store import Task

app = typer.Typer(help="Create, list, show and move tasks.", no_args_is_help=True)

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
SET = Annotated[list[str] | None, typer.Option("--set", help="Set a field: NAME=VALUE (repeatable). Values of "
                                               "non-string fields are read as JSON.")]


def parse_assignments(spec: CompanySpec, workflow: str, assignments: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs to typed values, by the field's JSON Schema: strings stay text, others are JSON."""
    schemas = spec.workflows[workflow].fields if workflow in spec.workflows else {}
    values: dict[str, Any] = {}
    for item in assignments:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--set expects NAME=VALUE, got {item!r}")
        kind = schemas.get(name, {}).get("type")
        if kind == "string" or (isinstance(kind, list) and "string" in kind and not raw.startswith(("{", "["))):
            values[name] = raw
        else:
            try:
                values[name] = json.loads(raw)
            except ValueError:
                values[name] = raw
    return values


def _task_json(task: Task) -> dict[str, Any]:
    return asdict(task)


@app.command("create")
@reports_errors
def create(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Argument(help="The workflow the task follows.")],
    title: Annotated[str, typer.Option("--title", "-t", help="A one-line title.")],
    assignments: SET = None,
    owner: Annotated[str | None, typer.Option("--owner", help="The principal who owns the task.")] = None,
    priority: Annotated[int, typer.Option("--priority", help="Higher is more urgent.")] = 0,
    parent: Annotated[int | None, typer.Option("--parent", help="Id of the parent task.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Idempotency key: reusing it returns the same task.")]
    = None,
    as_json: JSON = False,
) -> None:
    """Create a task in the workflow's initial state."""
    session = workspace(ctx).session()
    fields = parse_assignments(session.spec(), workflow, assignments or [])
    task, created = session.create_task(workflow=workflow, title=title, fields=fields, owner=owner,
                                        priority=priority, parent_id=parent, idempotency_key=key)
    if as_json:
        emit_json({**_task_json(task), "created": created})
    elif created:
        console.print(f"created task {task.id} in {task.workflow} (state {task.state}, version {task.version})")
    else:
        console.print(f"task {task.id} already exists for key {key!r}; nothing created")


@app.command("list")
@reports_errors
def list_tasks(
    ctx: typer.Context,
    workflow: Annotated[str | None, typer.Option("--workflow", "-w")] = None,
    state: Annotated[str | None, typer.Option("--state", "-s")] = None,
    owner: Annotated[str | None, typer.Option("--owner")] = None,
    after: Annotated[int, typer.Option("--after", help="Cursor: list tasks with ids above this one.")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    as_json: JSON = False,
) -> None:
    """List tasks, oldest first."""
    found = workspace(ctx).session().list_tasks(workflow=workflow, state=state, owner=owner, after_id=after,
                                               limit=limit)
    if as_json:
        emit_json([_task_json(t) for t in found])
        return
    table = Table("id", "workflow", "state", "title", "owner", "priority", "version", box=None)
    for t in found:
        table.add_row(str(t.id), t.workflow, t.state, t.title, t.owner or "-", str(t.priority), str(t.version))
    console.print(table if found else "no tasks")


@app.command("show")
@reports_errors
def show(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(help="The task id.")],
    as_json: JSON = False,
) -> None:
    """Show a task: its fields, evidence, history, and which transitions are possible now and why not."""
    session = workspace(ctx).session()
    task = session.get_task(task_id)
    actor = session.principal.handle
    options = session.options(task_id)
    history = session.history(task_id)
    saved = session.list_artifacts(task_id)
    if as_json:
        emit_json({
            "task": _task_json(task),
            "artifacts": [asdict(a) for a in saved],
            "history": [asdict(e) for e in history],
            "transitions": [{"name": o.name, "to": o.to, "by": o.by, "possible": o.possible,
                             "blocked": [asdict(v) for v in o.blocked]} for o in options],
        })
        return
    _print_task(task, saved, history, options, actor)


def _print_task(task: Task, saved, history, options, actor) -> None:  # noqa: ANN001
    console.print(f"[bold]task {task.id}[/]: {task.title}", highlight=False)
    console.print(f"  workflow {task.workflow} · state [bold]{task.state}[/] · version {task.version} · "
                  f"owner {task.owner or '-'} · priority {task.priority}"
                  + (f" · parent {task.parent_id}" if task.parent_id else "")
                  + (f" · key {task.idempotency_key}" if task.idempotency_key else ""), highlight=False)
    if task.lease_holder:
        console.print(f"  leased by {task.lease_holder} (run {task.lease_run}, fencing token {task.fencing_token}) "
                      f"until {task.lease_expires_at}", highlight=False)
    fields = Table("field", "value", box=None, title="fields", title_justify="left")
    for name, value in sorted(task.fields.items()):
        fields.add_row(name, value if isinstance(value, str) else json.dumps(value))
    console.print(fields if task.fields else "fields: (none)")
    if saved:
        arts = Table("kind", "name", "sha256", "bytes", "by", "reason", box=None, title="artifacts",
                     title_justify="left")
        for a in saved:
            arts.add_row(a.kind, a.name, a.sha256[:12], str(a.size), a.created_by, a.reason)
        console.print(arts)
    moves = Table("transition", "to", "by", "now", box=None, title="transitions"
                  + (f" (judged for {actor})" if actor else ""), title_justify="left")
    for o in options:
        status = "[green]possible[/]" if o.possible else "[red]blocked[/]: " + "; ".join(
            f"{v.clause}: {v.detail}" for v in o.blocked)
        moves.add_row(o.name, o.to, ", ".join(o.by), status)
    console.print(moves)
    events = Table("seq", "time (UTC)", "principal", "action", "detail", box=None, title="history",
                   title_justify="left")
    for e in history:
        events.add_row(str(e.seq), e.ts[:19].replace("T", " "), e.principal, e.action, _detail(e.data))
    console.print(events)


def _detail(data: Any) -> str:
    if not isinstance(data, dict):
        return json.dumps(data)
    if "error" in data:
        return data["error"].get("message", "")
    if "transition" in data and "to" in data:
        return f"{data['transition']}: {data['from']} -> {data['to']}" + (
            f" writes {', '.join(sorted(data['writes']))}" if data.get("writes") else "")
    keys = ("state", "name", "kind", "passed", "transition", "title")
    return ", ".join(f"{k}={data[k]}" for k in keys if k in data)


@app.command("move")
@reports_errors
def move(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(help="The task id.")],
    transition: Annotated[str, typer.Argument(help="The transition to take.")],
    assignments: SET = None,
    unset: Annotated[list[str] | None, typer.Option("--unset", help="Remove a field (repeatable).")] = None,
    expect_version: Annotated[int | None, typer.Option("--expect-version",
                                                       help="Fail unless the task is at this version "
                                                       "(default: the version just read).")] = None,
    rationale: Annotated[str, typer.Option("--rationale", help="Why, for the approver, on an approval edge.")]
    = "",
    as_json: JSON = False,
) -> None:
    """Take a transition. The contract is checked; a violation exits 5 and names the clause. On an
    approval edge it opens an approval request instead (exit 13): approving it runs the transition."""
    session = workspace(ctx).session()
    try:
        current = session.get_task(task_id)
    except NotFound:
        # Let the store refuse it, so the attempt is audited like every other refused move.
        session.transition(task_id, transition, expected_version=expect_version or 0,
                           writes=dict.fromkeys(unset or []))
        raise
    writes = parse_assignments(session.spec(), current.workflow, assignments or [])
    writes.update(dict.fromkeys(unset or []))
    version = current.version if expect_version is None else expect_version
    task = session.transition(task_id, transition, expected_version=version, writes=writes, rationale=rationale)
    if as_json:
        emit_json(_task_json(task))
    else:
        console.print(f"task {task.id}: {transition} -> {task.state} (version {task.version})")


@app.command("assign")
@reports_errors
def assign(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(help="The task id.")],
    owner: Annotated[str | None, typer.Option("--owner", help="The principal who will own the task.")] = None,
    priority: Annotated[int | None, typer.Option("--priority", help="Higher is more urgent.")] = None,
    as_json: JSON = False,
) -> None:
    """Route a task: set its owner and/or priority (needs the assign right: coordinators, humans)."""
    task = workspace(ctx).session().assign(task_id, owner=owner, priority=priority)
    if as_json:
        emit_json(_task_json(task))
    else:
        console.print(f"task {task.id}: owner {task.owner or '-'}, priority {task.priority} (version {task.version})")


@app.command("attach")
@reports_errors
def attach(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(help="The task id.")],
    kind: Annotated[str, typer.Argument(help="Artifact kind, as contracts name it (e.g. patch).")],
    file: Annotated[Path, typer.Argument(help="The file to save.", exists=True, dir_okay=False)],
    reason: Annotated[str, typer.Option("--reason", help="Why this version exists.")] = "",
    as_json: JSON = False,
) -> None:
    """Save a file as an artifact of the task (content kept by SHA-256 under .roster/artifacts)."""
    record = workspace(ctx).session().record_artifact(task_id, kind, file.read_bytes(), name=file.name,
                                                      reason=reason)
    if as_json:
        emit_json(asdict(record))
    else:
        console.print(f"task {task_id}: saved {kind} artifact {record.name} ({record.size} bytes, "
                      f"sha256 {record.sha256[:12]})")


@app.command("check")
@reports_errors
def check(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(help="The task id.")],
    name: Annotated[str, typer.Argument(help="The check's name, as contracts name it (e.g. lint_clean).")],
    passed: Annotated[bool, typer.Option("--pass/--fail", help="The check's result.")],
    detail: Annotated[str, typer.Option("--detail", help="What was checked and seen.")] = "",
    as_json: JSON = False,
) -> None:
    """Record the result of a named check on the task. The latest result per name counts."""
    workspace(ctx).session().record_check(task_id, name, passed=passed, detail=detail)
    if as_json:
        emit_json({"task_id": task_id, "name": name, "passed": passed})
    else:
        console.print(f"task {task_id}: check {name} {'passed' if passed else 'failed'}")


@app.command("hold")
@reports_errors
def hold(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(help="The task id.")],
    hours: Annotated[float, typer.Option("--hours", help="How long to hold it (at most 168).")] = 8.0,
    note: Annotated[str, typer.Option("--note", help="Why you take it.")] = "",
    as_json: JSON = False,
) -> None:
    """Take the task's lease yourself, so agents wait while you edit its fields and artifacts."""
    lease = workspace(ctx).session().hold(task_id, ttl=hours * 3600, note=note)
    if as_json:
        emit_json(asdict(lease))
    else:
        console.print(f"task {task_id}: held by you until {lease.expires_at} (fencing token {lease.fencing_token}); "
                      f"`roster task release {task_id} --note ...` hands it back")


@app.command("release")
@reports_errors
def release(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(help="The task id.")],
    note: Annotated[str, typer.Option("--note", help="What you changed and why: the next agent reads it.")] = "",
    as_json: JSON = False,
) -> None:
    """Hand a held task back with a note; the next brief shows the note and a diff of what you changed."""
    workspace(ctx).session().release_hold(task_id, note=note)
    if as_json:
        emit_json({"task_id": task_id, "released": True, "note": note})
    else:
        console.print(f"task {task_id}: released")


@app.command("edit")
@reports_errors
def edit(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(help="The task id.")],
    assignments: SET = None,
    unset: Annotated[list[str] | None, typer.Option("--unset", help="Remove a field (repeatable).")] = None,
    note: Annotated[str, typer.Option("--note", help="Why.")] = "",
    as_json: JSON = False,
) -> None:
    """Change fields outside a transition, while you hold the task (validated by the workflow's schema)."""
    session = workspace(ctx).session()
    current = session.get_task(task_id)
    writes = parse_assignments(session.spec(), current.workflow, assignments or [])
    writes.update(dict.fromkeys(unset or []))
    task = session.edit_fields(task_id, writes, note=note, expected_version=current.version)
    if as_json:
        emit_json(_task_json(task))
    else:
        console.print(f"task {task.id}: fields edited (version {task.version})")


@app.command("delegate")
@reports_errors
def delegate(
    ctx: typer.Context,
    parent: Annotated[int, typer.Argument(help="The task you stay accountable for.")],
    workflow: Annotated[str, typer.Argument(help="The child's workflow.")],
    title: Annotated[str, typer.Option("--title", "-t")],
    subproblem: Annotated[str, typer.Option("--subproblem", help="What the child must solve.")],
    desired_output: Annotated[str, typer.Option("--desired-output", help="What it must hand back.")],
    success_condition: Annotated[str, typer.Option("--success", help="When it is done.")] = "",
    blocking_threshold: Annotated[str, typer.Option("--blocking", help="When to give up and say so.")] = "",
    context_text: Annotated[str, typer.Option("--context", help="What you gathered so far.")] = "",
    tried: Annotated[list[str] | None, typer.Option("--tried", help="What was tried (repeatable).")] = None,
    assignments: SET = None,
    owner: Annotated[str | None, typer.Option("--owner")] = None,
    as_json: JSON = False,
) -> None:
    """Create a child task carrying a delegation packet; the parent cannot finish while it is open."""
    session = workspace(ctx).session()
    packet = {"subproblem": subproblem, "context": context_text, "tried": tried or [],
              "desired_output": desired_output, "success_condition": success_condition,
              "blocking_threshold": blocking_threshold}
    fields = parse_assignments(session.spec(), workflow, assignments or [])
    task = session.delegate(parent, workflow=workflow, title=title, packet=packet, fields=fields, owner=owner)
    if as_json:
        emit_json(_task_json(task))
    else:
        console.print(f"created task {task.id}, delegated from task {parent} (state {task.state})")


@app.command("children")
@reports_errors
def children(
    ctx: typer.Context,
    parent: Annotated[int, typer.Argument(help="The parent task id.")],
    as_json: JSON = False,
) -> None:
    """The tasks delegated from a task, and whether each is still open."""
    found = workspace(ctx).session().children(parent)
    if as_json:
        emit_json([_task_json(t) for t in found])
        return
    table = Table("id", "workflow", "state", "title", "desired output", box=None)
    for t in found:
        table.add_row(str(t.id), t.workflow, t.state, t.title, (t.packet or {}).get("desired_output", ""))
    console.print(table if found else "no children")
