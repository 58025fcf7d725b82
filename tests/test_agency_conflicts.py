"""Conflicts in the agency lane resolve or escalate, and worktrees are cleaned up: real git repositories,
real ruff, the lane's workers called directly and driven by the dispatcher (issue 13, deliverables 4-5).

Two tasks conflict when their fixes edit the same line: ``class A(object):   `` has both UP004 (the
``object`` base) and W291 (the trailing spaces)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_agency import GIT_ENV, committed_repo, drive, git, open_lane

from roster.agency.merger import merge_check, merger
from roster.agency.workers import builder
from roster.agency.worktrees import (
    base_tree,
    fresh_worktree,
    prune_base_trees,
    remove_stale_worktrees,
    worktree,
    worktrees_dir,
)
from roster.errors import UsageError

SAME_LINE = "class A(object):   \n    pass\n"  # UP004 and W291 on one line: their fixes conflict


def make_repo(repo: Path, files: dict[str, str]) -> Path:
    return committed_repo(repo, files)


def commit_on_main(repo: Path, name: str, text: str) -> str:
    """Someone else's change on main; returns main's new HEAD."""
    (repo / name).write_text(text)
    git(repo, "commit", "-q", "-am", f"main changes {name}")
    return git(repo, "rev-parse", "HEAD").strip()


def has_branch(repo: Path, branch: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
                          capture_output=True, env=GIT_ENV, check=False).returncode == 0


def is_ancestor(repo: Path, commit: str, of: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, of],
                          capture_output=True, env=GIT_ENV, check=False).returncode == 0


def brief(task_id: int, state: str, rule: str, filename: str, **fields: Any) -> dict[str, Any]:
    return {"task": {"id": task_id, "title": f"{rule} in {filename}", "state": state,
                     "fields": {"rule": rule, "file": filename, "spec": f"Fix {rule} in {filename} with ruff's fix.",
                                **fields}},
            "events": []}


def test_a_conflicting_branch_is_discarded_and_rebuilt_from_the_current_main(tmp_path):
    repo = make_repo(tmp_path / "repo", {"c.py": SAME_LINE})
    assert builder(brief(1, "planned", "UP004", "c.py"), repo)["transition"] == "build"
    assert builder(brief(2, "planned", "W291", "c.py"), repo)["transition"] == "build"
    stale = git(repo, "rev-parse", "roster/task-2").strip()

    # before approval, each merges cleanly onto today's main, and the request says onto which commit
    first = git(repo, "rev-parse", "HEAD").strip()
    asked = merger(brief(1, "verified", "UP004", "c.py", branch="roster/task-1"), repo)
    assert asked["transition"] == "request_merge"
    assert f"roster/task-1 merges cleanly onto main {first[:12]} (git merge-tree)" in asked["rationale"]
    merged = merger(brief(1, "approved", "UP004", "c.py", branch="roster/task-1"), repo)
    assert merged["transition"] == "merge"
    main_now = git(repo, "rev-parse", "HEAD").strip()

    # task 2 now conflicts: it is sent back at once, without asking anyone, and its branch is discarded
    back = merger(brief(2, "verified", "W291", "c.py", branch="roster/task-2"), repo)
    assert back["transition"] == "conflict"
    assert back["writes"] == {"conflicts": 1, "branch": None}
    assert f"roster/task-2 conflicts with main {main_now[:12]} in c.py" in back["rationale"]
    assert not has_branch(repo, "roster/task-2") and not (worktrees_dir(repo) / "task-2").exists()
    assert git(repo, "rev-parse", "HEAD").strip() == main_now and git(repo, "status", "--porcelain") == ""

    # the builder gets the task without a branch and builds a new one from main as it is now
    rebuilt = builder(brief(2, "planned", "W291", "c.py", conflicts=1), repo)
    assert rebuilt["transition"] == "build" and "fixed 1 of 1 W291" in rebuilt["rationale"]
    new = git(repo, "rev-parse", "roster/task-2").strip()
    assert new != stale
    assert git(repo, "merge-base", "roster/task-2", "HEAD").strip() == main_now
    assert not is_ancestor(repo, stale, new)  # nothing of the stale branch is in the new one
    asked = merger(brief(2, "verified", "W291", "c.py", branch="roster/task-2", conflicts=1), repo)
    assert f"merges cleanly onto main {main_now[:12]}" in asked["rationale"]
    assert merger(brief(2, "approved", "W291", "c.py", branch="roster/task-2", conflicts=1), repo)["transition"] == "merge"
    assert (repo / "c.py").read_text() == "class A:\n    pass\n"


def test_the_nth_conflict_escalates_with_the_conflicting_files_and_leaves_main_untouched(tmp_path):
    repo = make_repo(tmp_path / "repo", {"c.py": "x = 1   \n"})
    assert builder(brief(7, "planned", "W291", "c.py"), repo)["transition"] == "build"
    head = commit_on_main(repo, "c.py", "x = 2   \n")
    branch_tip = git(repo, "rev-parse", "roster/task-7").strip()

    failed = merger(brief(7, "approved", "W291", "c.py", branch="roster/task-7", conflicts=1), repo)
    assert set(failed) == {"failure"} and failed["failure"]["category"] == "judgment"
    reason = failed["failure"]["reason"]
    assert f"merging roster/task-7 conflicts with main {head[:12]} in c.py" in reason
    assert "conflict 2 of at most 2 (max_conflicts)" in reason and "reject the task" in reason
    assert git(repo, "rev-parse", "HEAD").strip() == head and git(repo, "status", "--porcelain") == ""
    # the branch is kept for the person who resolves it
    assert git(repo, "rev-parse", "roster/task-7").strip() == branch_tip

    # the limit is a setting: with room for one more, it goes round again
    again = merger(brief(7, "approved", "W291", "c.py", branch="roster/task-7", conflicts=1), repo, max_conflicts=3)
    assert again["transition"] == "conflict" and again["writes"] == {"conflicts": 2, "branch": None}
    assert "Conflict 2 of at most 3" in again["rationale"]
    with pytest.raises(UsageError, match="max_conflicts must be 1 or more"):
        merger(brief(7, "approved", "W291", "c.py", branch="roster/task-8"), repo, max_conflicts=0)


def test_merge_check_names_the_conflicting_files_and_the_base_and_touches_nothing(tmp_path):
    repo = make_repo(tmp_path / "repo", {"c.py": "x = 1\n", "d.py": "y = 1\n", "e.py": "z = 1\n"})
    git(repo, "checkout", "-q", "-b", "side")
    for name in ("c.py", "d.py"):
        (repo / name).write_text("side = 1\n")
    git(repo, "commit", "-q", "-am", "side")
    git(repo, "checkout", "-q", "main")
    clean = merge_check(repo, "side")
    assert clean.clean is True and clean.files == ()
    for name in ("c.py", "d.py", "e.py"):
        (repo / name).write_text("main = 1\n")
    git(repo, "commit", "-q", "-am", "main")
    head = git(repo, "rev-parse", "HEAD").strip()
    check = merge_check(repo, "side")
    assert (check.main, check.clean, check.files) == (head, False, ("c.py", "d.py"))
    assert check.note == f"side conflicts with main {head[:12]} in c.py, d.py"
    assert git(repo, "status", "--porcelain") == "" and git(repo, "rev-parse", "HEAD").strip() == head


def test_two_conflicting_tasks_and_a_third_all_merge_through_the_lane_and_no_worktree_is_left(tmp_path):
    company, dispatcher, repo = open_lane(tmp_path, {"c.py": SAME_LINE, "a.py": "import os\nimport sys\n\nprint(sys.argv)\n"})
    drive(company, dispatcher, cycles=40)

    tasks = {t.title: t for t in company.list_tasks()}
    assert set(tasks) == {"UP004 in c.py", "W291 in c.py", "F401 in a.py"}
    assert {t.state for t in tasks.values()} == {"merged"}, {n: t.state for n, t in tasks.items()}
    assert (repo / "c.py").read_text() == "class A:\n    pass\n" and "import os" not in (repo / "a.py").read_text()
    # exactly one of the pair conflicted, once, and was rebuilt: no loop, nobody starved
    conflicted = [t for t in tasks.values() if t.fields.get("conflicts")]
    assert len(conflicted) == 1 and conflicted[0].fields["conflicts"] == 1
    [conflict] = [e for e in company.history(conflicted[0].id)
                  if e.action == "task.transition" and e.data["transition"] == "conflict"]
    assert "conflicts with main" in conflict.data["rationale"] and "in c.py" in conflict.data["rationale"]
    builds = [e for e in company.history(conflicted[0].id)
              if e.action == "task.transition" and e.data["transition"] == "build"]
    assert len(builds) == 2 and all("fixed 1 of 1" in e.data["rationale"] for e in builds)
    assert len(company.list_requests(status="approved")) == 3 + (conflict.data["from"] == "approved")
    assert company.list_escalations() == []
    # the rebuilt fix started from main as it was after its rival's merge
    merges = git(repo, "log", "--merges", "--format=%H %s").splitlines()
    tip = {subject.split()[1]: sha for sha, subject in (line.split(" ", 1) for line in merges)}
    rebuilt = git(repo, "rev-parse", f"{tip[f'roster/task-{conflicted[0].id}']}^2").strip()
    rival = next(t for t in tasks.values() if t.title.endswith("c.py") and t is not conflicted[0])
    rival_merge = tip[f"roster/task-{rival.id}"]
    assert is_ancestor(repo, rival_merge, rebuilt)
    # merged tasks leave nothing behind: no task worktree, no task branch, no base tree
    assert list(worktrees_dir(repo).iterdir()) == []
    assert git(repo, "branch", "--list", "roster/*") == ""
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_a_task_that_keeps_conflicting_reaches_the_human_inbox_and_the_task_behind_it_merges(tmp_path):
    company, dispatcher, repo = open_lane(tmp_path, {"c.py": "x = 1   \n", "d.py": "y = 1   \n"})
    moved = []
    for _ in range(40):  # before each approval of c.py's fix, someone else changes the same line on main
        ran = dispatcher.cycle()
        for request in company.inbox(actor="op"):
            if company.get_task(request.task_id).fields["file"] == "c.py":
                moved.append(commit_on_main(repo, "c.py", f"x = {len(moved) + 2}   \n"))
            company.approve_request(request.id, actor="op")
        if not ran and not company.inbox(actor="op"):
            break

    tasks = {t.fields["file"]: t for t in company.list_tasks()}
    task = tasks["c.py"]
    assert task.id < tasks["d.py"].id  # the older task is the one that conflicts ...
    assert tasks["d.py"].state == "merged" and (repo / "d.py").read_text() == "y = 1\n"  # ... and none waits on it
    assert task.state == "approved" and task.fields["conflicts"] == 1 and len(moved) == 2
    [escalation] = company.list_escalations()
    assert (escalation.task_id, escalation.to) == (task.id, "human")
    assert f"conflicts with main {moved[-1][:12]} in c.py" in escalation.reason
    assert "conflict 2 of at most 2" in escalation.reason
    # the first conflict was rebuilt from the main of that time, and each request said which main it checked
    requests = sorted((r for r in company.list_requests(status="approved") if r.task_id == task.id),
                      key=lambda r: r.id)
    assert len(requests) == 2 and "merges cleanly onto main" in requests[1].evidence["rationale"]
    checked = re.search(r"merges cleanly onto main ([0-9a-f]{12})", requests[1].evidence["rationale"]).group(1)
    assert is_ancestor(repo, moved[0], checked)  # the main of after the first conflict, not the stale base
    assert git(repo, "status", "--porcelain") == ""
    assert is_ancestor(repo, moved[-1], "HEAD") and (repo / "c.py").read_text() == "x = 3   \n"  # no half-merge
    # a person can still reject it from where it stopped
    company.transition(task.id, "reject", actor="op", expected_version=company.get_task(task.id).version)
    assert company.get_task(task.id).state == "rejected"


def test_fresh_worktree_starts_over_from_main_and_stale_worktrees_and_bases_are_removed(tmp_path):
    repo = make_repo(tmp_path / "repo", {"c.py": "x = 1\n", "d.py": "y = 1\n"})
    path, branch = worktree(repo, 3)
    (path / "c.py").write_text("x = 3\n")
    git(path, "commit", "-q", "-am", "task 3's old work")
    (path / "scratch.txt").write_text("uncommitted")
    old = git(repo, "rev-parse", branch).strip()
    old_base = base_tree(repo, path)
    head = commit_on_main(repo, "d.py", "y = 2\n")

    again, same = fresh_worktree(repo, 3)
    assert (again, same) == (path, branch)
    assert git(repo, "rev-parse", branch).strip() == head  # a new branch at main's HEAD, nothing of the old
    assert not (path / "scratch.txt").exists() and (path / "c.py").read_text() == "x = 1\n"
    assert not is_ancestor(repo, old, branch)
    # the old base is needed by no branch now; the current one is kept
    new_base = base_tree(repo, path)
    assert prune_base_trees(repo) == [old_base] and new_base.exists() and not old_base.exists()

    other, _ = worktree(repo, 4)
    removed = remove_stale_worktrees(repo, live={4})  # task 3 is merged or rejected: not live
    assert removed == ["roster/task-3"]  # the base is task 4's too (it started from the same main)
    assert not path.exists() and not has_branch(repo, "roster/task-3")
    assert other.exists() and has_branch(repo, "roster/task-4") and new_base.exists()
    assert remove_stale_worktrees(repo, live=()) == ["roster/task-4", str(new_base)]
    assert list(worktrees_dir(repo).iterdir()) == []
