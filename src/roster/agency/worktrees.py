"""The lane's git worktrees: one per task (its branch), and one per base commit QA compares against.

Builders and QA run in parallel, each in a process of its own, so every change to the repository's
worktree list happens under one lock file (:func:`worktrees_locked`).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from roster.agency.lint import git


@contextmanager
def worktrees_locked(repo: Path) -> Iterator[None]:
    """Hold the lane's lock on the repository's worktree list while the block runs: builders and QA run in
    parallel (each its own process), and two ``git worktree add`` at once can trip over each other."""
    lock = repo.parent / ".roster" / "worktrees.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def worktree(repo: Path, task_id: int) -> tuple[Path, str]:
    """The task's worktree and branch, created from main's HEAD on first use."""
    branch = f"roster/task-{task_id}"
    path = (repo.parent / ".roster" / "worktrees" / f"task-{task_id}").resolve()
    with worktrees_locked(repo):
        if not path.exists():
            exists = git(repo, "rev-parse", "--verify", "--quiet", branch, check=False).returncode == 0
            git(repo, "worktree", "add", *([str(path), branch] if exists else ["-b", branch, str(path), "HEAD"]))
    return path, branch


def base_tree(repo: Path, branch_tree: Path) -> Path:
    """A worktree of the commit the branch started from (its merge base with main), kept detached under
    ``.roster/worktrees/base-<commit>``: QA judges the branch against where it began, not against a main
    that other merges have moved since. One per commit, never checked out again, so QA runs in parallel
    share it read-only."""
    main_head = git(repo, "rev-parse", "HEAD").stdout.strip()
    base = git(branch_tree, "merge-base", "HEAD", main_head).stdout.strip()
    path = (repo.parent / ".roster" / "worktrees" / f"base-{base[:12]}").resolve()
    with worktrees_locked(repo):
        if not path.exists():
            git(repo, "worktree", "add", "--detach", str(path), base)
    return path
