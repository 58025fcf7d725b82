"""``roster demo``: the main job until the agency lane lands - ``roster init`` and a scripted walk
through the example workflow, each step a real ``roster`` process, printed as it runs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from roster.cli.context import console, operator_handle, reports_errors
from roster.errors import ApprovalPending

PATCH = """--- a/app.py
+++ b/app.py
@@ -1 +1,2 @@
-import os, sys
+import json
import os
import shlex
+import sys
"""

# (who acts: None for you, the operator, or an agent's handle; the command; whether it must be refused:
# the walk shows contracts and rights refusing bad moves)
STEPS: list[tuple[str | None, str, bool]] = [
    (None, "init .", False),
    (None, "validate", False),
    (None, "principal list", False),
    (None, "task create fix-lint --title 'E401 in app.py' --set rule=E401 --set file=app.py --key ruff:E401:app.py",
     False),
    (None, "task create fix-lint --title 'E401 in app.py' --set rule=E401 --set file=app.py --key ruff:E401:app.py",
     False),
    ("builder", "task move 1 plan --set spec='Split the multiple imports on line 1 into one per line.'", True),
    ("planner", "task move 1 plan --set spec='Split the multiple imports on line 1 into one per line.'", False),
    ("builder", "task move 1 build --set branch=fix/e401-app", True),
    ("builder", "task attach 1 patch fix.patch --reason 'ruff --fix output'", False),
    ("builder", "task move 1 build --set branch=fix/e401-app", False),
    ("qa", "task move 1 verify", True),
    ("qa", "task check 1 lint_clean --pass --detail 'ruff check app.py: 0 findings'", False),
    ("qa", "task move 1 verify", False),
    ("merger", "task move 1 merge --rationale 'QA verified on the branch; lint_clean passed.'", True),
    ("merger", "approve 1", True),
    (None, "inbox", False),
    (None, "approve 1 --note 'Looks right.'", False),
    (None, "task list", False),
    (None, "rights explain builder transition:merge task:1", False),
    (None, "pause builder", False),
    ("builder", "task list", True),
    (None, "resume builder", False),
    (None, "task show 1", False),
    (None, "audit verify", False),
]


def _issue_token(where: Path, env: dict[str, str], handle: str) -> str:
    """Issue a token for ``handle`` as the operator, the way a user would: ``roster token issue``."""
    result = subprocess.run([sys.executable, "-m", "roster", "token", "issue", handle, "--expires-in", "1d",
                             "--name", "roster demo", "--json"], cwd=where, env=env, check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout)["token"]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    directory: Annotated[Path | None, typer.Argument(help="Where to create the demo workspace (default: a new "
                                                     "temporary folder); with --lane: the git repository to work "
                                                     "on (default: a scratch one).")] = None,
    lane: Annotated[bool, typer.Option("--lane", help="Run the agency lane (in progress: it becomes the default "
                                       "once finished).")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="With --lane: approve merges as you.")] = False,
    workspace_dir: Annotated[Path | None, typer.Option("--workspace", help="With --lane: the workspace; run "
                                                       "again on it to continue.")] = None,
) -> None:
    """Run the main job: create a workspace and walk one task through the example workflow."""
    if lane:
        lane_demo(directory, workspace_dir, yes)
        return
    where = directory or Path(tempfile.mkdtemp(prefix="roster-demo-"))
    where.mkdir(parents=True, exist_ok=True)
    (where / "fix.patch").write_text(PATCH, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTER_")}
    console.print(f"[bold]Roster demo[/] in {where}. You act as human '{operator_handle()}' with the token "
                  "'roster init' saves; each agent acts with its own token (roster token issue). No model is used: "
                  "every step is a real roster command.\n")
    tokens: dict[str, str] = {}
    for actor, command, refused in STEPS:
        step_env = dict(env)
        if actor is not None:
            if actor not in tokens:
                tokens[actor] = _issue_token(where, env, actor)
            step_env["ROSTER_TOKEN"] = tokens[actor]
        prefix = f"ROSTER_TOKEN=<{actor}'s token> " if actor else ""
        console.print(f"[bold cyan]$ {prefix}roster {command}[/]", highlight=False)
        result = subprocess.run([sys.executable, "-m", "roster", *shlex.split(command)], cwd=where, env=step_env,
                                check=False)
        if refused and result.returncode == 0:
            console.print("[red]demo failed: this step should have been refused[/]")
            raise typer.Exit(1)
        if not refused and result.returncode != 0:
            console.print(f"[red]demo failed at this step (exit {result.returncode})[/]")
            raise typer.Exit(result.returncode)
        if refused and result.returncode == ApprovalPending.exit_code:
            console.print(f"[dim](exit {result.returncode}, as expected: nothing ran; the approval request waits "
                          "in the inbox)[/]")
        elif refused:
            console.print(f"[dim](refused as expected, exit {result.returncode}: nothing changed, and the attempt "
                          "is in the audit log)[/]")
        console.print()
    console.print(f"[bold green]Done.[/] The workspace is in {where}; try 'roster audit log' there.")


@reports_errors
def lane_demo(repo_path: Path | None, workspace_dir: Path | None, yes: bool) -> None:
    """The agency lane on a copy of ``repo_path`` (or a scratch repository), in ``workspace_dir``."""
    from roster.agency import demo as lane  # noqa: PLC0415 - loads ruff/git helpers only for the lane
    from roster.agency.lint import findings, ruff_command
    from roster.cli.context import Settings, Workspace
    from roster.cli.spec_cmd import _apply_file

    ruff_command()  # a clear message now, not from every worker later
    where = (workspace_dir or Path(tempfile.mkdtemp(prefix="roster-lane-"))).resolve()
    spec_path = where / lane.SPEC_NAME
    operator = operator_handle()
    ws = Workspace(Settings(spec_path, None, None, None, 30.0))
    resuming = spec_path.exists()
    if resuming:
        console.print(f"[bold]Roster demo[/] continues in {where}: nothing done before is redone.")
    else:
        where.mkdir(parents=True, exist_ok=True)
        for line in lane.prepare_repository(repo_path, where / "repo"):
            console.print(line, highlight=False)
        spec_path.write_text(lane.spec_text(operator), encoding="utf-8")
        (where / ".roster").mkdir(exist_ok=True)
        _apply_file(ws, spec_path)
        (where / ".roster" / "kpi-before").write_text(str(len(findings(where / "repo"))))
    company = ws.store().company("agency")
    console.print("The planner is the offline [bold]scripted[/] model (no network): what it writes says so.",
                  highlight=False)
    result = lane.run_lane(company, where, operator=operator, approve=yes,
                           say=lambda line: console.print(line, highlight=False))
    if result["waiting"]:
        console.print(f"\n{len(result['waiting'])} merge(s) wait for your approval. Approve with:", highlight=False)
        for request in result["waiting"]:
            console.print(f"  roster --spec {spec_path} approve {request.id}", highlight=False)
        console.print(f"then continue with: roster demo --lane --workspace {where}  (or add --yes)", highlight=False)
    before = int((where / ".roster" / "kpi-before").read_text())
    for line in lane.report(company, where / "repo", before):
        console.print(line, highlight=False)
    console.print(f"\nThe workspace is {where}. Inspect it with: roster --spec {spec_path} status | task show ID | "
                  "audit log", highlight=False)
