"""The merger of the agency lane: asks a human to approve a verified branch, then merges it into main.

On a verified task it first asks git whether the branch merges cleanly onto main's current HEAD
(:func:`merge_check`, ``git merge-tree --write-tree``: nothing is touched). Clean: it asks for the merge
(an approval edge: a human decides), saying which main it checked and what the merge would do to the
KPI. Conflicting: it asks no one and sends the task back (``conflict``) at once.

On an approved task it merges the branch into main (``--no-ff``); a conflict is aborted, never
half-merged, and the task goes back (``conflict``). Either way a conflict discards the stale branch and
its worktree, so the builder rebuilds the fix from the current main; the ``conflict`` transition counts
it in the task's ``conflicts`` field. The ``max_conflicts``-th conflict (default :data:`MAX_CONFLICTS`)
is not sent round again: the run fails with a judgment failure naming the conflicting files, and the
escalation ladder takes it to a human. After a merge the task's worktree and branch are removed, and
QA's base trees no branch needs any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roster.agency.lint import findings, git, rule_findings, task_rules
from roster.agency.worktrees import prune_base_trees, remove_worktree
from roster.errors import UsageError

MAX_CONFLICTS = 2
"""Conflicts after which a task escalates to a human instead of being rebuilt again (the N-th conflict
escalates: with 2, a task is rebuilt from main once)."""

MERGE_TREE_GIT = "2.38"
"""The first git with ``git merge-tree --write-tree``."""


@dataclass(frozen=True)
class MergeCheck:
    """Whether a branch merges cleanly onto main now, by ``git merge-tree --write-tree``.

    ``main``: main's HEAD commit (40 hex digits) the branch was checked against; ``clean``: ``True``,
    ``False`` (conflicts), or ``None`` when git cannot tell (older than 2.38); ``files``: the conflicting
    paths, relative to the repository; ``note``: one sentence saying all of it, for a rationale."""

    main: str
    clean: bool | None
    files: tuple[str, ...]
    note: str


def merge_check(repo: Path, branch: str) -> MergeCheck:
    """Would merging ``branch`` into ``repo``'s checked-out main conflict now? Git decides
    (``merge-tree --write-tree``, the same merge machinery as ``git merge``), touching neither the
    index nor the working tree. Raises :class:`~roster.errors.RunnerExit` when main has no commit."""
    main = git(repo, "rev-parse", "HEAD").stdout.strip()
    done = git(repo, "merge-tree", "--write-tree", "--name-only", "--no-messages", main, branch, check=False)
    if done.returncode == 0:
        return MergeCheck(main, True, (), f"{branch} merges cleanly onto main {main[:12]} (git merge-tree)")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode == 1 and lines:
        files = tuple(dict.fromkeys(lines[1:]))  # the merged tree's id, then each conflicting path
        return MergeCheck(main, False, files,
                          f"{branch} conflicts with main {main[:12]} in {', '.join(files) or '(paths not named)'}")
    version = git(repo, "--version", check=False).stdout.strip() or "git"
    said = (done.stderr.strip() or done.stdout.strip()).splitlines()[:1]
    return MergeCheck(main, None, (),
                      f"whether {branch} merges cleanly onto main {main[:12]} was not checked: `git merge-tree "
                      f"--write-tree` needs git {MERGE_TREE_GIT} or newer ({version}: {' '.join(said) or 'failed'}); "
                      "upgrade git to have it checked before approval (the merge itself still aborts on a conflict)")


def merger(brief: dict[str, Any], repo: Path, max_conflicts: int = MAX_CONFLICTS) -> dict[str, Any]:
    """One merger run on a ``verified`` or ``approved`` task (``brief["task"]``: ``id``, ``state``,
    ``fields`` with ``branch`` and optionally ``rule``, ``file``, ``conflicts``) in ``repo`` (main
    checked out). Returns the worker's result: ``request_merge``, ``merge`` or ``conflict``, or a
    judgment failure at the ``max_conflicts``-th conflict. Raises :class:`~roster.errors.UsageError`
    when ``max_conflicts`` is below 1."""
    if max_conflicts < 1:
        raise UsageError(f"max_conflicts must be 1 or more (got {max_conflicts}): it is how many conflicts a "
                         f"task may have before it escalates to a human (default {MAX_CONFLICTS})")
    task = brief["task"]
    branch = task["fields"]["branch"]
    if task["state"] == "verified":  # the approver sees the patch and QA's checks; this says the base and the KPI
        check = merge_check(repo, branch)
        if check.clean is False:  # asking a human to approve what cannot merge wastes everyone's time
            return conflict(repo, task, max_conflicts, check.main, check.files,
                             f"{check.note} (git merge-tree, before asking for approval)")
        rule, filename = task["fields"]["rule"], task["fields"]["file"]
        found = rule_findings(findings(repo))  # one ruff run, counted as the KPI counts
        codes = task_rules(rule)
        on_main, removed = len(found), sum(1 for r in found if r["code"] in codes and r["filename"] == filename)
        return {"transition": "request_merge",
                "rationale": f"QA verified {branch}; {check.note}; merging it removes the {removed} {rule} "
                             f"finding(s) in {filename}: lint_findings on main {on_main} -> {on_main - removed} "
                             "expected. It needs a human's approval"}
    before = len(rule_findings(findings(repo)))
    main = git(repo, "rev-parse", "HEAD").stdout.strip()
    merged = git(repo, "merge", "--no-ff", "-m", f"Merge {branch} (roster task {task['id']})", branch, check=False)
    if merged.returncode != 0:
        unmerged = git(repo, "diff", "--name-only", "--diff-filter=U", check=False).stdout.split()
        git(repo, "merge", "--abort", check=False)
        said = merged.stdout.strip().splitlines()[-1:] or merged.stderr.strip().splitlines()[-1:]
        return conflict(repo, task, max_conflicts, main, tuple(unmerged),
                         f"merging {branch} conflicts with main {main[:12]} in "
                         f"{', '.join(unmerged) or '(paths not named)'}; nothing was merged ({' '.join(said)})")
    after = len(rule_findings(findings(repo)))
    remove_worktree(repo, task["id"])  # merged: the branch is in main, its worktree is of no more use
    prune_base_trees(repo)
    return {"transition": "merge", "writes": {"findings_after": after},
            "rationale": f"merged {branch}; lint findings on main {before} -> {after}; its worktree and branch "
                         "are removed"}


def conflict(repo: Path, task: dict[str, Any], max_conflicts: int, main: str, files: tuple[str, ...],
              what: str) -> dict[str, Any]:
    """The task's branch conflicts with main: back to the builder with the stale branch discarded, or, at
    the ``max_conflicts``-th conflict, a judgment failure for the escalation ladder (the branch is kept
    for the person who looks)."""
    count = int(task["fields"].get("conflicts") or 0) + 1
    branch = task["fields"]["branch"]
    if count >= max_conflicts:
        return {"failure": {"category": "judgment", "reason": (
            f"{what}. This is conflict {count} of at most {max_conflicts} (max_conflicts), so it is not rebuilt "
            f"again: resolve it by hand (git merge {branch} in the repository, fix "
            f"{', '.join(files) or 'the conflicting files'}, commit; then resolve this escalation and the "
            "merger records the merge) or reject the task")}}
    remove_worktree(repo, task["id"])  # never built on again: the builder starts from the current main
    return {"transition": "conflict", "writes": {"conflicts": count, "branch": None},
            "rationale": f"{what}. Conflict {count} of at most {max_conflicts}: the stale branch and its worktree "
                         f"are removed, and the builder rebuilds the fix from main"}
