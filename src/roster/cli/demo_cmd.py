"""``roster demo``: the main job. The agency lane (:mod:`roster.agency`) works a copy of a git
repository, from the scout's findings to merges a human approved, and reports what happened."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated

import typer

from roster.cli.context import console, operator_handle, reports_errors
from roster.cli.serve_cmd import DEFAULT_HOST, DEFAULT_PORT, PORT
from roster.errors import UsageError

if TYPE_CHECKING:
    from roster.cli.context import Workspace


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    path: Annotated[Path | None, typer.Argument(help="A git repository, or a folder inside one, to work on: a copy "
                                                "of its committed HEAD (default: a scratch repository of "
                                                "standard-library modules).")]
    = None,
    yes: Annotated[bool, typer.Option("--yes", help="Approve the merges as you (the local human principal); "
                                      "without it the demo stops at the approval edge.")] = False,
    workspace_dir: Annotated[Path | None, typer.Option("--workspace", help="The workspace, outside the repository "
                                                       "(default: a new temporary folder); run again on it to "
                                                       "continue.")] = None,
    plan: Annotated[bool, typer.Option("--plan", help="Show what the lane would file (tasks, totals, the expected "
                                       "KPI change) and stop, changing nothing.")] = False,
    batch_merge: Annotated[bool, typer.Option("--batch-merge", help="Put every verified fix on one review branch, "
                                              "merged into main with one approval, instead of one approval and "
                                              "one merge per fix.")] = False,
    serve: Annotated[bool, typer.Option("--serve", help="After the lane, keep the dashboard up on the workspace "
                                        "and print its URL and a one-time sign-in link (Ctrl-C stops it).")] = False,
    port: PORT = DEFAULT_PORT,
) -> None:
    """The main job: the agency lane works a real git repository, from scout to merge, and reports."""
    if plan:
        plan_demo(path, workspace_dir)
    else:
        lane_demo(path, workspace_dir, yes, batch_merge, serve_port=port if serve else None)


@reports_errors
def plan_demo(repo_path: Path | None, workspace_dir: Path | None) -> None:
    """``roster demo --plan``: the scout's tasks for ``repo_path`` and the expected KPI change, from a scan of
    a scratch copy that is removed; nothing is written anywhere else. Raises :class:`UsageError` (exit 2)."""
    from roster.agency import demo as lane
    from roster.agency.lint import ruff_command

    if workspace_dir is not None:
        raise UsageError("--plan writes nothing, so it takes no --workspace; leave --workspace out (the plan of "
                         "a repository: roster demo --plan PATH)")
    ruff_command()
    for line in lane.plan(repo_path):
        console.print(line, highlight=False, markup=False)


@reports_errors
def lane_demo(repo_path: Path | None, workspace_dir: Path | None, yes: bool, batch_merge: bool = False,
              serve_port: int | None = None) -> None:
    """The agency lane on a copy of ``repo_path`` (or a scratch repository), in ``workspace_dir``.

    Bad input (see :func:`roster.agency.demo.find_source` and :func:`~roster.agency.demo.check_workspace`) is
    refused before anything is written; a failure while the workspace is being made removes what this run
    created (the temporary folder too), so only a workspace whose lane started is left to continue. With
    ``serve_port``, the dashboard stays up on the workspace afterwards (:func:`_serve_dashboard`)."""
    from roster.agency import demo as lane  # loads ruff/git helpers only for the lane
    from roster.agency.lint import ruff_command
    from roster.cli.context import Settings, Workspace

    ruff_command()  # a clear message now, not from every worker later
    where = workspace_dir.expanduser().resolve() if workspace_dir is not None else None
    resuming = where is not None and (where / lane.SPEC_NAME).exists()
    source = lane.find_source(repo_path) if repo_path is not None and not resuming else None
    if where is not None:
        lane.check_workspace(where, source)
    ours = where is None  # a temporary folder made here: a failure before the lane starts removes all of it
    if where is None:
        where = Path(tempfile.mkdtemp(prefix="roster-lane-")).resolve()
    spec_path = where / lane.SPEC_NAME
    operator = operator_handle()
    ws = Workspace(Settings(spec_path, None, None, None, 30.0))
    try:
        if resuming:
            console.print(f"[bold]Roster demo[/] continues in {where}: nothing done before is redone.")
            if repo_path is not None:
                console.print(f"(PATH {repo_path} is not copied again: the workspace already has its repository.)",
                              highlight=False, markup=False)
            if batch_merge and not lane.batch_mode(ws.store().company("agency")):
                raise UsageError(f"the workspace {where} was made without --batch-merge, and its merges are asked "
                                 "one by one; continue without --batch-merge, or start a new workspace with it")
        else:
            with lane.undone_on_failure(where, ours=ours):
                try:
                    _make_workspace(lane, ws, repo_path, where, operator, batch_merge)
                except BaseException:
                    ws.close()  # the store's files go with the half-made workspace
                    raise
        _run(lane, ws, where, operator, yes)
        if serve_port is not None:
            _serve_dashboard(ws, serve_port)
    finally:
        ws.close()


def _serve_dashboard(ws: Workspace, port: int) -> None:
    """Serve the dashboard (and the REST API) on the lane's store at 127.0.0.1:``port`` until Ctrl-C, with a
    one-time sign-in link for the local human."""
    from roster.api.server import ApiServer  # the web stack only when it is served
    from roster.store.dashboard_sessions import open_link

    server = ApiServer(ws.store(), host=DEFAULT_HOST, port=port, skills_dir=ws.spec_path.parent / "skills")
    url = server.start()
    link, expires = open_link(ws.store(), ws.session())
    console.print(f"\nThe dashboard is at {url}/ ; sign in once, until {expires[:19].replace('T', ' ')} UTC, with:",
                  highlight=False)
    console.print(f"{url}/sign-in?link={link}", highlight=False, soft_wrap=True)
    console.print("Ctrl-C stops it.", highlight=False)
    server.wait()


def _make_workspace(lane: ModuleType, ws: Workspace, repo_path: Path | None, where: Path, operator: str,
                    batch_merge: bool) -> None:
    """Copy the repository into ``where/repo``, write the spec and the skills, and apply the spec."""
    from roster.cli.spec_cmd import apply_file

    spec_path = where / lane.SPEC_NAME
    where.mkdir(parents=True, exist_ok=True)
    for line in lane.prepare_repository(repo_path, where / "repo"):
        console.print(line, highlight=False, markup=False)
    model = os.environ.get("ROSTER_MODEL", "").strip() or None
    builder_agent = os.environ.get("ROSTER_BUILDER_AGENT", "").strip() or None
    spec_path.write_text(lane.spec_text(operator, model, builder_agent, batch_merge), encoding="utf-8")
    shutil.copytree(Path(lane.__file__).parent / "skills", where / "skills")  # the agents' SKILL.md briefs
    (where / ".roster").mkdir(exist_ok=True)
    apply_file(ws, spec_path)


def _run(lane: ModuleType, ws: Workspace, where: Path, operator: str, yes: bool) -> None:
    """Run the lane in the workspace at ``where`` and print the report."""
    spec_path = where / lane.SPEC_NAME
    company = ws.store().company("agency")
    planner = company.spec().agents["planner"].runner
    model = (planner.model_dump().get("model") if planner else None) or "offline"
    console.print("The planner is the offline [bold]scripted[/] model (no network): what it writes says so."
                  if model == "offline" else f"The planner is the model {model}.", highlight=False)
    builder = company.spec().agents["builder"].runner
    command = (builder.model_dump().get("command") if builder else None) or ""
    if " --agent " in command:
        console.print(f"The builder hands what ruff cannot fix to the agent CLI {command.split(' --agent ', 1)[1]}.",
                      highlight=False)
    console.print(lane.rules_line(where / "repo"), highlight=False, markup=False)
    if lane.batch_mode(company):
        console.print("Batch merge: verified fixes go onto one review branch, merged into main with one approval.",
                      highlight=False)
    result = lane.run_lane(company, where, operator=operator, approve=yes,
                           say=lambda line: console.print(line, highlight=False, markup=False))
    if result["stopped"]:
        console.print(f"\nStopped. Continue with: roster demo --workspace {where}", highlight=False)
    if result["waiting"]:
        console.print(f"\n{len(result['waiting'])} merge(s) wait for your approval. Approve with:", highlight=False)
        for request in result["waiting"]:
            console.print(f"  roster --spec {spec_path} approve {request.id}", highlight=False)
        console.print(f"then continue with: roster demo --workspace {where}  (or add --yes)", highlight=False)
    for line in lane.report(company, where / "repo"):  # text from the store, never console markup
        console.print(line, highlight=False, markup=False)
    console.print(f"\nThe workspace is {where}. Inspect it with: roster --spec {spec_path} status | task show ID | "
                  "kpi history lint_findings | audit log", highlight=False)
