"""The merger of the agency lane: asks a human to approve a verified branch, then merges it into main.

On a verified task it asks for the merge (an approval edge: a human decides) and says what the merge
would do to the KPI; on an approved one it merges the branch into main (``--no-ff``; a conflict is
aborted, never half-merged, and the task goes back to the builder with the conflict) and reports the
finding count after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from roster.agency.lint import findings, git


def merger(brief: dict[str, Any], repo: Path) -> dict[str, Any]:
    task = brief["task"]
    branch = task["fields"]["branch"]
    if task["state"] == "verified":  # the approver sees the patch and QA's checks; this says the KPI effect
        rule, filename = task["fields"]["rule"], task["fields"]["file"]
        found = findings(repo)  # one ruff run: the task's findings are among them (the scout found them so)
        on_main, removed = len(found), sum(1 for r in found if r["code"] == rule and r["filename"] == filename)
        return {"transition": "request_merge",
                "rationale": f"QA verified {branch}; merging it removes the {removed} {rule} finding(s) in {filename}: "
                             f"lint_findings on main {on_main} -> {on_main - removed} expected. It needs a human's "
                             "approval"}
    before = len(findings(repo))
    merged = git(repo, "merge", "--no-ff", "-m", f"Merge {branch} (roster task {task['id']})", branch, check=False)
    if merged.returncode != 0:
        git(repo, "merge", "--abort", check=False)
        return {"transition": "conflict", "rationale": f"merging {branch} conflicts with main; nothing was "
                                                       f"merged: {merged.stdout.strip()[-300:]}"}
    after = len(findings(repo))
    return {"transition": "merge", "writes": {"findings_after": after},
            "rationale": f"merged {branch}; lint findings on main {before} -> {after}"}
