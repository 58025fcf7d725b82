"""Batch merging (``roster demo --batch-merge``): every verified fix goes onto one review branch, and main
takes the branch in one merge with one approval, instead of one approval and one merge per fix.

With ``--batch`` the merger (``python -m roster.agency.workers merger --batch``, run with ``token: true``)
works two workflows of the spec:

- A **verified** ``lint-fix`` task: its branch is added to :data:`REVIEW_BRANCH` by git's own merge
  machinery (``git merge-tree --write-tree``, then ``commit-tree`` and a compare-and-swap ``update-ref``:
  neither main's checkout nor any worktree is touched), and the task moves to ``batched``. A branch that
  conflicts with main or with the review branch goes back to the builder as on any conflict
  (:func:`~roster.agency.merger.conflict`; the N-th conflict escalates).
- A **review** task, filed once the lane is idle with ``branch``, ``head`` (the review branch's commit
  the approval is about: 40 hex digits) and ``tasks`` (the ids of the batched tasks on it). In ``open`` it
  asks a human to approve the merge (``request_merge``), saying whether ``head`` merges cleanly onto main
  now and what ruff counts on it. In ``approved`` it merges exactly ``head`` into main (``--no-ff``), then
  lands every task of the review (``batched`` -> ``merged``, a transition the runtime never offers:
  ``offered: false``) as itself, through its run token, with its rights and each task's contract, and
  finally takes the review's own ``merge``. Run again after a crash, it finds ``head`` already in main
  and lands what is left.

A review is refused (a judgment failure, so the escalation ladder takes it to a human) when ``head``
conflicts with main, or when one of its tasks is no longer ``batched`` (a human rejected it after it was
batched: its change is on the review branch, so merging would merge it anyway).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roster.agency.lint import findings, git, rule_findings
from roster.agency.merger import MergeCheck, conflict, merge_check
from roster.agency.worktrees import prune_base_trees, remove_worktree, scratch_tree
from roster.errors import Unauthenticated, UsageError
from roster.specfile import nearest_spec, spec_company

if TYPE_CHECKING:
    from collections.abc import Iterator

    from roster.store import Session

REVIEW_BRANCH = "roster/review"
"""The branch every batched fix is added to; the review task's ``head`` pins which commit of it is merged."""
REVIEW_WORKFLOW = "review"
NO_COMMIT = "0" * 40


def batch(brief: dict[str, Any], repo: Path, max_conflicts: int) -> dict[str, Any]:
    """One merger run on a ``verified`` lint-fix task in batch mode: its branch onto :data:`REVIEW_BRANCH`
    and the task to ``batched``, or back to the builder on a conflict (see the module docstring)."""
    task = brief["task"]
    branch = task["fields"]["branch"]
    check = merge_check(repo, branch)
    if check.clean is False:
        return conflict(repo, task, max_conflicts, check.main, check.files,
                        f"{check.note} (git merge-tree, before adding it to {REVIEW_BRANCH})")
    added = add_to_review(repo, branch, f"Add {branch} (roster task {task['id']})")
    if added.clean is False:
        return conflict(repo, task, max_conflicts, check.main, added.files, added.note)
    return {"transition": "batch", "writes": {"review": REVIEW_BRANCH},
            "rationale": f"QA verified {branch}; {check.note}; {added.note}. It merges into main with the review, "
                         "on one approval"}


def add_to_review(repo: Path, branch: str, message: str) -> MergeCheck:
    """Merge ``branch`` into :data:`REVIEW_BRANCH` without a checkout: a merge commit of the two (the review
    branch starts at main's HEAD when it does not exist or main already holds all of it). Returns the
    outcome as a :class:`~roster.agency.merger.MergeCheck` whose ``main`` is the review branch's new
    commit (or its old one on a conflict). Raises :class:`~roster.errors.RunnerExit` when git fails
    otherwise, or when the review branch moved under it."""
    main = git(repo, "rev-parse", "HEAD").stdout.strip()
    old = git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{REVIEW_BRANCH}", check=False).stdout.strip()
    base = old if old and not _contains(repo, main, old) else main
    done = git(repo, "merge-tree", "--write-tree", "--name-only", "--no-messages", base, branch, check=False)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode == 1 and lines:
        files = tuple(dict.fromkeys(lines[1:]))
        return MergeCheck(base, False, files, f"{branch} conflicts with {REVIEW_BRANCH} {base[:12]} in "
                                              f"{', '.join(files) or '(paths not named)'}")
    if done.returncode != 0 or not lines:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()[:1]
        raise UsageError(f"git merge-tree could not add {branch} to {REVIEW_BRANCH} (it needs git 2.38 or newer): "
                         f"{' '.join(said) or 'no message'}")
    commit = git(repo, "commit-tree", lines[0], "-p", base, "-p", branch, "-m", message).stdout.strip()
    git(repo, "update-ref", f"refs/heads/{REVIEW_BRANCH}", commit, old or NO_COMMIT)
    return MergeCheck(commit, True, (), f"added to {REVIEW_BRANCH}, now at {commit[:12]}")


def _contains(repo: Path, ancestor_of: str, commit: str) -> bool:
    """Whether ``commit`` is in the history of ``ancestor_of`` (``git merge-base --is-ancestor``)."""
    return git(repo, "merge-base", "--is-ancestor", commit, ancestor_of, check=False).returncode == 0


def review(brief: dict[str, Any], repo: Path,
           session: Callable[[], AbstractContextManager[Session]] | None = None) -> dict[str, Any]:
    """One merger run on a review task (``brief["task"]``: ``id``, ``state`` ``open`` or ``approved``,
    ``fields`` with ``head`` and ``tasks``): ask for the merge, or merge ``head`` and land the review's
    tasks through ``session`` (default :func:`run_session`: the run's own token). Returns the worker's
    result."""
    task = brief["task"]
    head, ids = task["fields"]["head"], [int(i) for i in task["fields"]["tasks"]]
    with (session or run_session)() as acting:
        gone = [(t.id, t.state) for t in (acting.get_task(i) for i in ids) if t.state not in ("batched", "merged")]
        if gone:
            listed = ", ".join(f"task {i} is {state}" for i, state in gone)
            return {"failure": {"category": "judgment", "reason": (
                f"review {task['id']} cannot merge {head[:12]}: {listed}, yet its change is on the review branch, so "
                "merging would merge it anyway. Reject this review (roster task move "
                f"{task['id']} reject), move its other tasks back or reject them, and batch again")}}
        if task["state"] == "open":
            return _request(task, repo, head, ids)
        return _merge(task, repo, head, ids, acting)


def _request(task: dict[str, Any], repo: Path, head: str, ids: list[int]) -> dict[str, Any]:
    check = merge_check(repo, head)
    if check.clean is False:
        return {"failure": {"category": "judgment", "reason": (
            f"review {task['id']}: {check.note}; main moved outside the review. Resolve it by hand (git merge "
            f"{head[:12]} in the repository) or reject the review")}}
    on_main = len(rule_findings(findings(repo)))
    with scratch_tree(repo, head, f"review-{task['id']}") as tree:
        on_head = len(rule_findings(findings(tree)))
    return {"transition": "request_merge",
            "rationale": f"{len(ids)} verified fix(es) on {REVIEW_BRANCH} at {head[:12]} (tasks "
                         f"{', '.join(map(str, ids))}); {check.note}; lint_findings on main {on_main} -> {on_head} "
                         "expected (ruff on the review's head). One approval merges them all"}


def _merge(task: dict[str, Any], repo: Path, head: str, ids: list[int], acting: Session) -> dict[str, Any]:
    main = git(repo, "rev-parse", "HEAD").stdout.strip()
    before = len(rule_findings(findings(repo)))
    if not _contains(repo, main, head):  # else a run before this one merged it and stopped short of landing
        merged = git(repo, "merge", "--no-ff", "-m", f"Merge review {task['id']}: {len(ids)} lint fix(es) "
                                                      f"(roster tasks {', '.join(map(str, ids))})", head, check=False)
        if merged.returncode != 0:
            git(repo, "merge", "--abort", check=False)
            said = merged.stdout.strip().splitlines()[-1:] or merged.stderr.strip().splitlines()[-1:]
            return {"failure": {"category": "judgment", "reason": (
                f"merging review {task['id']} ({head[:12]}) into main {main[:12]} conflicts; nothing was merged "
                f"({' '.join(said)}). Resolve it by hand or reject the review")}}
    after = len(rule_findings(findings(repo)))
    for task_id in ids:
        current = acting.get_task(task_id)
        if current.state == "batched":
            acting.transition(task_id, "land", expected_version=current.version, writes={"findings_after": after},
                              rationale=f"merged into main with review {task['id']} ({head[:12]})")
        remove_worktree(repo, task_id)
    tip = git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{REVIEW_BRANCH}", check=False).stdout.strip()
    if tip == head:  # nothing was batched after this review was filed: the branch is all in main
        git(repo, "branch", "-D", REVIEW_BRANCH)
    prune_base_trees(repo)
    return {"transition": "merge", "writes": {"findings_after": after},
            "rationale": f"merged review {task['id']} ({head[:12]}, {len(ids)} fix(es)) into main in one merge and "
                         f"landed its tasks; lint findings on main {before} -> {after}"}


@contextmanager
def run_session() -> Iterator[Session]:
    """The run's own :class:`~roster.store.Session`, from ``ROSTER_TOKEN`` (the runner's ``token: true``), on
    the workspace the command runs in, found as the CLI finds it: the spec ``ROSTER_SPEC``, else the nearest
    ``roster.yaml`` here or above; the store ``ROSTER_DB``, else ``.roster/roster.db`` beside the spec; the
    company ``ROSTER_COMPANY``, else the spec's ``company`` key, which the token must belong to. Raises
    :class:`~roster.errors.UsageError` without a token or a spec, and what authentication raises."""
    from roster.store import open_session  # the store only for runs that act through it
    from roster.store.engine import sqlite_url

    token = os.environ.get("ROSTER_TOKEN", "").strip()
    if not token:
        raise UsageError("the merger lands a review's fixes as itself and needs a token of its own for the run: give "
                         "its runner 'token: true' in the spec (roster demo --batch-merge does)")
    given = os.environ.get("ROSTER_SPEC", "").strip()
    spec = Path(given) if given else nearest_spec(Path.cwd(), hint="and ROSTER_SPEC is not set")
    state_dir = spec.resolve().parent / ".roster"
    url = os.environ.get("ROSTER_DB", "").strip() or sqlite_url(state_dir / "roster.db")
    with open_session(url, token, state_dir=state_dir, lock_timeout=30.0) as session:
        company = os.environ.get("ROSTER_COMPANY", "").strip() or spec_company(spec, hint="set ROSTER_COMPANY")
        if session.principal.company != company:
            raise Unauthenticated(f"this token belongs to company '{session.principal.company}', not '{company}'")
        yield session
