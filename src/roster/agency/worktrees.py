"""The lane's git worktrees: one per task (its branch), and one per base commit QA compares against.

Builders and QA run in parallel, each in a process of its own, so every change to the repository's
worktree list happens under one lock file (:func:`worktrees_locked`).

Life cycle (docs/agency.md, "Conflicts and clean-up"):

- :func:`worktree`: the task's worktree and branch, created from main's HEAD on first use and reused
  after QA's ``rework``;
- :func:`fresh_worktree`: the old worktree and branch removed, both created anew from main's HEAD: a
  branch that conflicted with main is never built on again;
- :func:`remove_worktree`: the task's worktree and branch removed (the merger, once merged; the merger
  also discards a branch that conflicted);
- :func:`prune_base_trees`: QA's base trees that no task branch starts from any more, removed;
- :func:`remove_stale_worktrees`: everything of tasks that are no longer live (merged, rejected),
  removed, for whoever knows which tasks are live (the store).

Git failures raise :class:`~roster.errors.RunnerExit` with git's own message.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from roster.agency.lint import git

BRANCH_PREFIX = "roster/task-"
TASK_TREE_PREFIX = "task-"
BASE_TREE_PREFIX = "base-"


def worktrees_dir(repo: Path) -> Path:
    """Where the lane keeps its worktrees: ``<workspace>/.roster/worktrees`` (beside ``repo``)."""
    return (repo.parent / ".roster" / "worktrees").resolve()


def task_branch(task_id: int) -> str:
    """The task's branch name, ``roster/task-<id>`` (the workflow's ``branch`` field pattern)."""
    return f"{BRANCH_PREFIX}{task_id}"


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
    """The task's worktree and branch, created from main's HEAD on first use (an existing branch is
    checked out again). Returns ``(absolute worktree path, branch name)``."""
    branch = task_branch(task_id)
    path = worktrees_dir(repo) / f"{TASK_TREE_PREFIX}{task_id}"
    with worktrees_locked(repo):
        if not path.exists():
            exists = _branch_exists(repo, branch)
            git(repo, "worktree", "add", *([str(path), branch] if exists else ["-b", branch, str(path), "HEAD"]))
    return path, branch


def fresh_worktree(repo: Path, task_id: int) -> tuple[Path, str]:
    """The task's worktree and branch made anew from main's HEAD (``repo``'s checked-out commit): the old
    worktree (with any uncommitted change in it) and the old branch (with its commits) are removed first,
    so nothing of an earlier build is reused. Returns ``(absolute worktree path, branch name)``; the
    branch's merge base with main is main's HEAD."""
    branch = task_branch(task_id)
    path = worktrees_dir(repo) / f"{TASK_TREE_PREFIX}{task_id}"
    with worktrees_locked(repo):
        _remove_task(repo, task_id)
        git(repo, "worktree", "add", "-b", branch, str(path), "HEAD")
    return path, branch


def remove_worktree(repo: Path, task_id: int) -> bool:
    """Remove the task's worktree and branch. Returns whether there was anything to remove."""
    with worktrees_locked(repo):
        return _remove_task(repo, task_id)


@contextmanager
def scratch_tree(repo: Path, commit: str, name: str) -> Iterator[Path]:
    """A detached worktree of ``commit`` at ``<worktrees>/<name>`` for the block (made anew, removed after,
    also on failure): e.g. to count findings on a commit no branch checks out."""
    path = worktrees_dir(repo) / name
    with worktrees_locked(repo):
        _remove_tree(repo, path)
        git(repo, "worktree", "add", "--detach", str(path), commit)
    try:
        yield path
    finally:
        with worktrees_locked(repo):
            _remove_tree(repo, path)


def prune_base_trees(repo: Path) -> list[Path]:
    """Remove QA's base trees (``base-<commit>``) that no task branch starts from any more: a base is
    kept while some ``roster/task-*`` branch's merge base with main's HEAD is its commit. Returns the
    removed paths."""
    with worktrees_locked(repo):
        return _prune_bases(repo)


def remove_stale_worktrees(repo: Path, live: Iterable[int]) -> list[str]:
    """Remove the worktree and branch of every task whose id is not in ``live`` (the ids of the tasks
    still in a non-terminal state: pass them all, since any other task's branch is deleted), then the
    base trees no remaining branch needs. Returns what was removed (branch names and base tree paths)."""
    keep = set(live)
    removed: list[str] = []
    with worktrees_locked(repo):
        ids = {int(b[len(BRANCH_PREFIX):]) for b in _task_branches(repo) if b[len(BRANCH_PREFIX):].isdigit()}
        root = worktrees_dir(repo)
        if root.is_dir():
            ids |= {int(p.name[len(TASK_TREE_PREFIX):]) for p in root.iterdir()
                    if p.name.startswith(TASK_TREE_PREFIX) and p.name[len(TASK_TREE_PREFIX):].isdigit()}
        for task_id in sorted(ids - keep):
            if _remove_task(repo, task_id):
                removed.append(task_branch(task_id))
        removed += [str(p) for p in _prune_bases(repo)]
    return removed


def base_tree(repo: Path, branch_tree: Path) -> Path:
    """A worktree of the commit the branch started from (its merge base with main), kept detached under
    ``.roster/worktrees/base-<commit>``: QA judges the branch against where it began, not against a main
    that other merges have moved since. One per commit, never checked out again, so QA runs in parallel
    share it read-only."""
    main_head = git(repo, "rev-parse", "HEAD").stdout.strip()
    base = git(branch_tree, "merge-base", "HEAD", main_head).stdout.strip()
    path = worktrees_dir(repo) / f"{BASE_TREE_PREFIX}{base[:12]}"
    with worktrees_locked(repo):
        if not path.exists():
            git(repo, "worktree", "add", "--detach", str(path), base)
    return path


# -- under the lock ---------------------------------------------------------------------------------


def _branch_exists(repo: Path, branch: str) -> bool:
    return git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False).returncode == 0


def _task_branches(repo: Path) -> list[str]:
    listed = git(repo, "for-each-ref", "--format=%(refname:short)", f"refs/heads/{BRANCH_PREFIX}*").stdout
    return [line for line in listed.splitlines() if line]


def _remove_tree(repo: Path, path: Path) -> None:
    """Unregister and delete one worktree (uncommitted changes in it are discarded)."""
    if path.exists():
        git(repo, "worktree", "remove", "--force", "--force", str(path), check=False)
        if path.exists():  # not a registered worktree (a half-made one): just a folder
            shutil.rmtree(path)
    git(repo, "worktree", "prune")


def _remove_task(repo: Path, task_id: int) -> bool:
    path = worktrees_dir(repo) / f"{TASK_TREE_PREFIX}{task_id}"
    branch = task_branch(task_id)
    found = path.exists()
    _remove_tree(repo, path)
    if _branch_exists(repo, branch):
        git(repo, "branch", "-D", branch)
        found = True
    return found


def _prune_bases(repo: Path) -> list[Path]:
    root = worktrees_dir(repo)
    if not root.is_dir():
        return []
    head = git(repo, "rev-parse", "HEAD").stdout.strip()
    needed = set()
    for branch in _task_branches(repo):
        base = git(repo, "merge-base", branch, head, check=False).stdout.strip()
        if base:
            needed.add(base[:12])
    removed = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(BASE_TREE_PREFIX) and path.name[len(BASE_TREE_PREFIX):] not in needed:
            _remove_tree(repo, path)
            removed.append(path)
    return removed
