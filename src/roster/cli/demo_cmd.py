"""``roster demo``: the main job until the agency lane lands - ``roster init`` and a scripted walk
through the example workflow, each step a real ``roster`` process, printed as it runs."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from roster.cli.context import console, operator_handle

PATCH = """--- a/app.py
+++ b/app.py
@@ -1 +1,2 @@
-import os, sys
+import os
+import sys
"""

# (command, whether it is expected to be refused: the walk shows contracts refusing bad moves)
STEPS: list[tuple[str, bool]] = [
    ("init .", False),
    ("validate", False),
    ("task create fix-lint --title 'E401 in app.py' --set rule=E401 --set file=app.py --key ruff:E401:app.py", False),
    ("task create fix-lint --title 'E401 in app.py' --set rule=E401 --set file=app.py --key ruff:E401:app.py", False),
    ("--as planner task move 1 plan --set spec='Split the multiple imports on line 1 into one per line.'", False),
    ("--as builder task move 1 build --set branch=fix/e401-app", True),
    ("--as builder task attach 1 patch fix.patch --reason 'ruff --fix output'", False),
    ("--as builder task move 1 build --set branch=fix/e401-app", False),
    ("--as qa task move 1 verify", True),
    ("--as qa task check 1 lint_clean --pass --detail 'ruff check app.py: 0 findings'", False),
    ("--as qa task move 1 verify", False),
    ("--as merger task move 1 merge", True),
    ("task approve 1 merge", False),
    ("--as merger task move 1 merge", False),
    ("task show 1", False),
    ("audit verify", False),
]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    directory: Annotated[Path | None, typer.Argument(help="Where to create the demo workspace "
                                                     "(default: a new temporary folder).")] = None,
) -> None:
    """Run the main job: create a workspace and walk one task through the example workflow."""
    import shlex

    where = directory or Path(tempfile.mkdtemp(prefix="roster-demo-"))
    where.mkdir(parents=True, exist_ok=True)
    (where / "fix.patch").write_text(PATCH, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTER_")}
    console.print(f"[bold]Roster demo[/] in {where} (you act as human '{operator_handle()}'; "
                  "agents act with --as). No model is used: every step is a real roster command.\n")
    for command, refused in STEPS:
        console.print(f"[bold cyan]$ roster {command}[/]", highlight=False)
        result = subprocess.run([sys.executable, "-m", "roster", *shlex.split(command)], cwd=where, env=env,
                                check=False)
        if refused and result.returncode == 0:
            console.print("[red]demo failed: this step should have been refused by its contract[/]")
            raise typer.Exit(1)
        if not refused and result.returncode != 0:
            console.print(f"[red]demo failed at this step (exit {result.returncode})[/]")
            raise typer.Exit(result.returncode)
        if refused:
            console.print(f"[dim](refused as expected, exit {result.returncode}: the task is unchanged and the "
                          "attempt is in the audit log)[/]")
        console.print()
    console.print(f"[bold green]Done.[/] The workspace is in {where}; try 'roster audit log' there.")
