"""QA of the agency lane: the ground truth on the branch, never the builder's report.

- ``findings_gone``: the task's findings are gone from its file on the branch;
- ``no_new_findings``: no new ruff finding anywhere, against the commit the branch started from;
- ``tests_pass``: the repository's tests fail no more on the branch than on that base.

All pass: ``verify``; otherwise ``rework``.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from roster.agency.lint import findings, run_tool
from roster.agency.worktrees import base_tree, worktree


def _failing_tests(root: Path, command: str | None) -> set[str] | None:
    """Test ids failing under ``command`` (default ``pytest -q`` when a tests folder exists), or ``None``
    when the repository has no tests."""
    if command is None:
        if not any((root / name).is_dir() for name in ("tests", "test")):
            return None
        command = f"{sys.executable} -m pytest -q -rf -p no:cacheprovider"
    done = run_tool("pytest", command.split(), cwd=root, timeout=1800)
    if done.returncode == 5:  # no tests collected
        return set()
    return {line.split(" ", 2)[1] for line in done.stdout.splitlines() if line.startswith("FAILED ")}


def _key(record: dict[str, Any]) -> tuple[str, str, str]:
    """A finding, independent of where lines moved: rule, file and message."""
    return record["code"], record["filename"], record["message"]


def qa(brief: dict[str, Any], repo: Path, tests: str | None = None) -> dict[str, Any]:
    task = brief["task"]
    rule, filename = task["fields"]["rule"], task["fields"]["file"]
    path, branch = worktree(repo, task["id"])
    left = findings(path, select=[rule], paths=[filename])
    base = base_tree(repo, path)  # what the branch started from: main may have moved on since
    on_base, on_branch = findings(base), findings(path)
    new = Counter(_key(r) for r in on_branch) - Counter(_key(r) for r in on_base)
    baseline, now = _failing_tests(base, tests), _failing_tests(path, tests)
    new_failures = sorted((now or set()) - (baseline or set()))
    checks = [
        {"name": "findings_gone", "passed": not left,
         "detail": f"{len(left)} {rule} finding(s) left in {filename} on {branch}"},
        {"name": "no_new_findings", "passed": not new,
         "detail": (f"new on the branch: {', '.join(f'{c} in {f}' for c, f, _ in sorted(new))}" if new else
                    f"ruff findings: base {len(on_base)}, branch {len(on_branch)}, none new")},
        {"name": "tests_pass", "passed": not new_failures,
         "detail": ("no tests in the repository" if now is None else
                    f"newly failing: {', '.join(new_failures)}" if new_failures else
                    f"no test fails that did not fail on the base ({len(baseline or ())} failed there already)")},
    ]
    passed = all(c["passed"] for c in checks)
    return {"checks": checks, "transition": "verify" if passed else "rework",
            "rationale": "every check passed on the branch" if passed else
            "; ".join(c["detail"] for c in checks if not c["passed"])}
