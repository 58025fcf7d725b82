"""``roster init``, ``roster validate`` and ``roster apply``: from a spec file to a store."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from roster.cli.context import (
    STATE_DIR,
    Workspace,
    console,
    emit_json,
    operator_handle,
    reports_errors,
    workspace,
)
from roster.defaults import MAX_TOKEN_LIFETIME, SPEC_NAME
from roster.errors import UsageError

if TYPE_CHECKING:  # the spec parser and the store load only when a command runs (`roster --help` stays fast)
    from roster.store import ApplyResult, CompanyStore

JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("validate")(validate)
    app.command("apply")(apply)


@reports_errors
def init(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Where to create the workspace.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing roster.yaml.")] = False,
    as_json: JSON = False,
) -> None:
    """Scaffold a workspace: a commented example roster.yaml and its store, with the spec applied."""
    directory.mkdir(parents=True, exist_ok=True)
    spec_path = directory / SPEC_NAME
    if spec_path.exists() and not force:
        raise UsageError(f"{spec_path} already exists; edit it and run 'roster apply', or pass --force")
    operator = operator_handle()
    template = resources.files("roster").joinpath("templates/roster.yaml").read_text(encoding="utf-8")
    spec_path.write_text(template.replace("__OPERATOR__", operator), encoding="utf-8")
    (directory / STATE_DIR).mkdir(exist_ok=True)
    (directory / STATE_DIR / ".gitignore").write_text("*\n", encoding="utf-8")
    result = apply_file(workspace(ctx), spec_path)
    if as_json:
        emit_json({"spec": str(spec_path), "company": result.company, "revision": result.revision,
                   "operator": operator})
        return
    console.print(f"Created {spec_path} (company [bold]{result.company}[/], you are human '[bold]{operator}[/]').")
    console.print(f"Store: {workspace(ctx).db_url(spec_path)}; your token is in {STATE_DIR}/credentials.json.")
    console.print("Next: edit roster.yaml, then 'roster apply'; try 'roster task create fix-lint --title ... "
                  "--set rule=E501'.")


@reports_errors
def validate(
    file: Annotated[Path | None, typer.Argument(help="The spec (default: ./roster.yaml).")] = None,
    as_json: JSON = False,
) -> None:
    """Check a spec. Exits 3 and lists every problem (file, line, key, what was expected) if it is invalid.
    A valid spec may still have warnings (agents that can never run): they are printed, and it exits 0."""
    path = _existing(file or Path(SPEC_NAME))
    from roster.specfile import load_spec_with_warnings

    spec, warnings = load_spec_with_warnings(path)
    if as_json:
        emit_json({"valid": True, "company": spec.company, "workflows": sorted(spec.workflows),
                   "agents": sorted(spec.agents), "humans": sorted(spec.humans),
                   "warnings": [{"file": w.file, "line": w.line, "key": w.key, "message": w.message}
                                for w in warnings]})
        return
    console.print(f"{path}: valid - company '{spec.company}', {len(spec.workflows)} workflow(s), "
                  f"{len(spec.agents)} agent(s), {len(spec.humans)} human(s), {len(spec.tools)} tool(s), "
                  f"{len(spec.kpis)} KPI(s)")
    if warnings:
        console.print(f"{len(warnings)} warning(s):", style="yellow", highlight=False)
        for warning in warnings:
            console.print(f"  warning: {warning}", style="yellow", highlight=False, soft_wrap=True)


@reports_errors
def apply(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help="The spec (default: the workspace's roster.yaml).")] = None,
    as_json: JSON = False,
) -> None:
    """Load a spec into the store. Idempotent; refuses changes that would orphan live tasks (exit 7)."""
    ws = workspace(ctx)
    result = apply_file(ws, _existing(file) if file else ws.spec_path)
    if as_json:
        emit_json({"company": result.company, "revision": result.revision, "changed": result.changed,
                   "changes": result.changes})
    elif not result.changed:
        console.print(f"company '{result.company}': unchanged (revision {result.revision})")
    else:
        console.print(f"company '{result.company}': applied revision {result.revision}")
        for change in result.changes:
            console.print(f"  {change}", highlight=False)


def apply_file(ws: Workspace, path: Path) -> ApplyResult:
    """Apply the spec at ``path``. A company's first apply is its bootstrap: the local operator becomes
    a human principal (if the spec does not already name them) and gets a token, saved for this
    workspace. Every later apply is made by the authenticated principal, who needs ``admin``."""
    from roster.specfile import load_spec

    spec = load_spec(path)
    store = ws.store(path)
    if spec.company not in store.companies():
        result = store.apply(spec, applied_by=operator_handle())
        _bootstrap_operator(ws, path, store.company(spec.company))
        return result
    session = ws.session(spec.company, path)
    return store.apply(spec, applied_by=session.principal.handle)


def _bootstrap_operator(ws: Workspace, path: Path, company: CompanyStore) -> None:
    operator = operator_handle()
    if operator not in {p.handle for p in company.list_principals()}:
        company.add_principal(operator, kind="human", actor=None, display_name=f"{operator} (local operator)")
    issued = company.issue_token(operator, actor=None, name="local operator (roster init)",
                                 lifetime=MAX_TOKEN_LIFETIME)
    ws.save_token(path, company.company, issued.token)


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise UsageError(f"no spec file at {path}; run 'roster init' to create one")
    return path
