"""Checking a goal: a program decides, never the agent's word.

:func:`check_goal` runs a goal's check and records its result on the goal (a pass meets it):

- a **command** runs in the spec's folder, in a process session of its own (killed with its whole group
  at the check's ``timeout``); it passes when it exits 0. Its exit status, the tail of its output and
  its duration are the evidence. A command that cannot be started or runs past its timeout is recorded
  with the error, and the goal is not met.
- a **KPI** check compares the KPI's latest reading with the target (``lint_findings <= 5``); with no
  reading yet it does not pass. The reading's value and time are the evidence.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roster.runtime.processes import run_in_session

if TYPE_CHECKING:
    from roster.kernel.goals import GoalCheck
    from roster.store import CompanyStore
    from roster.store.goals import Goal

OUTPUT_TAIL_CHARS = 2000
"""How much of a check command's output (stdout, then stderr) the evidence keeps: its end."""


def evaluate(check: GoalCheck, *, company: CompanyStore, workdir: Path) -> tuple[bool, dict[str, Any]]:
    """Run ``check`` and return whether it passed, and its evidence (a JSON object: ``kind``, then for a
    command ``command``, ``exit_code`` (None when it did not finish), ``output`` (the tail), ``seconds``
    and ``error`` (why it did not run to the end); for a KPI ``kpi``, ``op``, ``target``, ``value`` and
    ``measured_at`` (None when there is no reading yet))."""
    if check.command is not None:
        return _run_command(check, workdir)
    assert check.kpi is not None
    readings = company.kpi_readings(check.kpi, limit=1, actor=None)
    latest = readings[-1] if readings else None
    return check.kpi_evidence(latest.value if latest else None, latest.measured_at if latest else None)


def check_goal(company: CompanyStore, goal: Goal, *, workdir: Path) -> Goal:
    """Check ``goal`` now and record the result (``goal.check``; ``goal.met`` on a pass). Returns the goal
    as recorded."""
    passed, evidence = evaluate(goal.check, company=company, workdir=workdir)
    return company.record_goal_check(goal.id, passed=passed, evidence=evidence)


def _run_command(check: GoalCheck, workdir: Path) -> tuple[bool, dict[str, Any]]:
    assert check.command is not None
    evidence: dict[str, Any] = {"kind": "command", "command": check.command, "exit_code": None, "output": "",
                                "seconds": 0.0, "error": None}
    started = time.monotonic()
    try:
        done = run_in_session(shlex.split(check.command), cwd=workdir, timeout=check.timeout, stdout_tail=65536)
    except (OSError, ValueError) as exc:  # not found, not executable; a command line shlex cannot split
        evidence["error"] = f"cannot start '{check.command}': {exc}"
    except subprocess.TimeoutExpired:
        evidence["error"] = f"'{check.command}' ran past the check's timeout of {check.timeout:g} s and was killed"
    else:
        output = (done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")).strip()
        evidence.update(exit_code=done.returncode, output=output[-OUTPUT_TAIL_CHARS:])
    evidence["seconds"] = round(time.monotonic() - started, 3)
    return evidence["exit_code"] == 0, evidence
