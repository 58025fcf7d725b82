"""How long the ``roster`` command takes to start: ``roster --help``, ``roster task list``, ``roster status``.

Each command runs as a real subprocess (``python -m roster ...``) in a workspace made by ``roster init``
with one task, ``--runs`` times (default 15), the commands taking turns so that they share the machine's
noise. Alongside, in the same rounds: ``python -c pass`` (the interpreter's own start) and ``python -c
"import sqlalchemy"`` (the floor for any command that opens the store). Reports per command the median
wall time, its spread (min - max), the median CPU time (user + system) of the child, and the ratio of the
median to the interpreter's start.

With ``--baseline-rev REV`` the same commands also run from a git worktree of REV (``PYTHONPATH`` set to
its ``src``, in a workspace that REV's own ``roster init`` made), interleaved with the current tree's, and
the ratio current / baseline is printed per command. Bytecode is cached (``PYTHONDONTWRITEBYTECODE`` is
dropped for the children), as on a user's machine. The target of issue 14: under 0.5 s for ``--help``
and ``task list``.

Usage: python bench/cli_start.py [--runs 15] [--baseline-rev REV]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "import sqlalchemy": ["-c", "import sqlalchemy"],
    "roster --help": ["-m", "roster", "--help"],
    "roster task list": ["-m", "roster", "task", "list"],
    "roster status": ["-m", "roster", "status"],
}
REFERENCES = ("python -c pass", "import sqlalchemy")


class Tree:
    """A source tree to run ``roster`` from (the current one, or a worktree of a baseline revision), with
    a workspace of its own."""

    def __init__(self, label: str, src: Path, workspace: Path) -> None:
        self.label = label
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTER_")}
        self.env["PYTHONPATH"] = str(src)
        self.env["COLUMNS"] = "120"
        # Bytecode is cached as on any user's machine (a sandbox may set PYTHONDONTWRITEBYTECODE, which makes
        # every start compile Roster's sources again): the set-up commands below write it.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.workspace = workspace
        workspace.mkdir(parents=True)
        self.run_ok(["-m", "roster", "init"])
        self.run_ok(["-m", "roster", "task", "create", "fix-lint", "--title", "E501 in app.py", "--set", "rule=E501"])

    def run_ok(self, args: list[str]) -> None:
        proc = subprocess.run([sys.executable, *args], cwd=self.workspace, env=self.env, capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{self.label}: python {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")

    def time(self, args: list[str]) -> tuple[float, float]:
        """Wall and CPU (user + system) seconds of one run of ``python ARGS``."""
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *args], cwd=self.workspace, env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{self.label}: python {' '.join(args)} exited {proc.returncode}")
        return wall, usage.ru_utime + usage.ru_stime


def worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev], check=True,
                   capture_output=True)
    return where / "src"


def measure(trees: list[Tree], runs: int) -> dict[tuple[str, str], tuple[list[float], list[float]]]:
    """Every command of every tree, ``runs`` rounds, each round every (tree, command) once in turn."""
    samples: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for tree in trees:  # one unmeasured round: warm the page cache and the .pyc files
        for args in COMMANDS.values():
            tree.time(args)
    for _ in range(runs):
        for name, args in COMMANDS.items():
            for tree in trees:
                if name in REFERENCES and tree is not trees[0]:
                    continue  # the references do not depend on the tree
                wall, cpu = tree.time(args)
                walls, cpus = samples.setdefault((tree.label, name), ([], []))
                walls.append(wall)
                cpus.append(cpu)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="Rounds (each command once per round).")
    parser.add_argument("--baseline-rev", help="A git revision to compare with, run from a worktree.")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="roster-cli-start-"))
    try:
        trees = [Tree("current", ROOT / "src", scratch / "ws-current")]
        if args.baseline_rev:
            src = worktree(args.baseline_rev, scratch / "baseline")
            trees.append(Tree(args.baseline_rev, src, scratch / "ws-baseline"))
        samples = measure(trees, args.runs)
    finally:
        if args.baseline_rev and (scratch / "baseline").exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(scratch / "baseline")],
                           check=False, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)

    start = statistics.median(samples[("current", "python -c pass")][0])
    print(f"{args.runs} runs each, Python {sys.version.split()[0]}; medians, spread min - max")
    print(f"{'tree':>12} {'command':<18} {'wall':>8} {'spread':>15} {'CPU':>8} {'/ python start':>15}")
    for (label, name), (walls, cpus) in samples.items():
        wall = statistics.median(walls)
        print(f"{label:>12} {name:<18} {wall * 1000:6.0f} ms {min(walls) * 1000:5.0f} - {max(walls) * 1000:4.0f} ms "
              f"{statistics.median(cpus) * 1000:5.0f} ms {wall / start:14.1f}x")
    if args.baseline_rev:
        print(f"current / {args.baseline_rev} (median wall, median CPU):")
        for name in COMMANDS:
            if name in REFERENCES:
                continue
            now, then = samples[("current", name)], samples[(args.baseline_rev, name)]
            print(f"  {name:<18} {statistics.median(now[0]) / statistics.median(then[0]):.2f}x wall, "
                  f"{statistics.median(now[1]) / statistics.median(then[1]):.2f}x CPU")


if __name__ == "__main__":
    main()
