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

from roster.cli.context import console, operator_handle
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
    directory: Annotated[Path | None, typer.Argument(help="Where to create the demo workspace "
                                                     "(default: a new temporary folder).")] = None,
) -> None:
    """Run the main job: create a workspace and walk one task through the example workflow."""
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
