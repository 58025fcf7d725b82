"""Ruff and git, as the agency lane's workers use them: real subprocesses, parsed output, clear errors.

Functions raise :class:`~roster.errors.UsageError` when a tool is missing (naming how to install it) and
:class:`~roster.errors.RunnerExit` when it fails in a way the worker cannot use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from roster.errors import RunnerExit, UsageError
from roster.runtime.processes import run_in_session

RULES = ("F401", "F841", "E711", "E712", "E713", "E714", "E721", "E741", "W291", "W293", "I001", "UP")
"""The documented rule selection of the lane: unused imports and variables, comparisons to None/True,
`not in`/`is not`, type comparisons, ambiguous names, trailing whitespace, import order, and pyupgrade.
Ruff can fix most of them, but not all (E741, E721 need a person or a model): those reach the inbox."""

GIT_ENV = {"GIT_AUTHOR_NAME": "roster", "GIT_AUTHOR_EMAIL": "roster@localhost",
           "GIT_COMMITTER_NAME": "roster", "GIT_COMMITTER_EMAIL": "roster@localhost"}


def ruff_command() -> list[str]:
    """How to run ruff: the ``ruff`` next to this Python (installed with Roster) or on PATH."""
    beside = Path(sys.executable).parent / "ruff"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("ruff")
    if found:
        return [found]
    raise UsageError("ruff is not installed: install it with `pip install ruff` (Roster's requirements.lock "
                     "includes it)")


TOOL_TIMES = "ROSTER_TOOL_TIMES"
"""An environment variable naming a file: when set, each tool call appends ``<tool> <seconds>`` to it
(``bench/lane.py`` uses it to separate time in ruff, git and pytest from Roster's own)."""


def run_tool(tool: str, argv: list[str], *, timeout: float, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run one external tool in a session of its own (so a timeout kills what it started too), with its
    output decoded as text; timed when :data:`TOOL_TIMES` is set. Raises :class:`subprocess.TimeoutExpired`
    after ``timeout`` seconds, :class:`OSError` when it cannot start."""
    started = time.perf_counter()
    try:
        done = run_in_session(argv, cwd=cwd, timeout=timeout, env=env)
        return subprocess.CompletedProcess(argv, done.returncode, done.stdout.decode(errors="replace"),
                                           done.stderr.decode(errors="replace"))
    finally:
        if log := os.environ.get(TOOL_TIMES):
            with open(log, "a", encoding="utf-8") as out:
                out.write(f"{tool} {time.perf_counter() - started:.6f}\n")


def findings(root: Path, *, select: tuple[str, ...] | list[str] = RULES, paths: list[str] | None = None,
             fix: bool = False) -> list[dict[str, Any]]:
    """Ruff's findings under ``root`` (JSON records: code, filename relative to root, location, message,
    fix), after applying fixes when ``fix``."""
    argv = [*ruff_command(), "check", "--output-format", "json", "--exit-zero", "--no-cache", "--isolated",
            "--select", ",".join(select), *(["--fix"] if fix else []), *(paths or ["."])]
    done = run_tool("ruff", argv, cwd=root, timeout=600)
    if done.returncode not in (0, 1):
        raise RunnerExit(f"ruff failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    records = json.loads(done.stdout or "[]")
    for record in records:
        record["filename"] = os.path.relpath(record["filename"], root)
    return records


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``git`` in ``repo`` with Roster as author; raises :class:`RunnerExit` on failure when ``check``."""
    if shutil.which("git") is None:
        raise UsageError("git is not installed: install it (e.g. `apt-get install git`)")
    done = run_tool("git", ["git", "-C", str(repo), *args], timeout=600, env={**os.environ, **GIT_ENV})
    if check and done.returncode != 0:
        raise RunnerExit(f"git {' '.join(args[:2])} failed: {done.stderr.strip()[-500:] or done.stdout.strip()[-500:]}")
    return done
