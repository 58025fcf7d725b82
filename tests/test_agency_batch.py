"""Batch merging (``roster demo --batch-merge``): every verified fix on one review branch, merged into main
with one approval. Real git, ruff and pytest on generated repositories; the demo through the CLI, and the
lane driven by the dispatcher where a person acts between cycles."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import js, ok
from test_agency import FILES, committed_repo, git, open_lane

from roster.agency import demo
from roster.errors import Unauthenticated
from roster.runtime.dispatcher import Dispatcher
from roster.specfile import parse_spec
from roster.store import Store

# Three fixes ruff makes safely (two F401, one W291) and one it cannot (E741), with a test.
BATCH_FILES = {**FILES, "d.py": "import json\n\ny = 2\n"}


def merges_on_main(repo: Path) -> list[str]:
    return git(repo, "log", "--first-parent", "--merges", "--format=%s", "main").splitlines()


def test_batch_merge_lands_every_fix_with_one_approval_and_one_merge_commit(cli, tmp_path):
    repo = committed_repo(tmp_path / "src", BATCH_FILES)
    ws = tmp_path / "ws"
    result = cli("demo", str(repo), "--yes", "--batch-merge", "--workspace", str(ws))
    assert result.exit_code == 0, result.output
    compact = "".join(result.output.split())
    assert "Batchmerge:verifiedfixesgoontoonereviewbranch" in compact
    assert "filedreviewtask" in compact and "3batchedfix(es)onroster/review" in compact
    spec = str(ws / "roster.yaml")
    # One approval request, about the review task, and one merge commit on main carrying all three fixes.
    requests = js(cli("--spec", spec, "approvals", "list", "--json"))
    assert len(requests) == 1, requests
    shown = js(cli("--spec", spec, "task", "show", str(requests[0]["task_id"]), "--json"))
    review = shown["task"]
    assert review["workflow"] == "review" and review["state"] == "merged"
    tasks = ", ".join(map(str, review["fields"]["tasks"]))
    assert merges_on_main(ws / "repo") == [f"Merge review {review['id']}: 3 lint fix(es) (roster tasks {tasks})"]
    for name in ("a.py", "c.py", "d.py"):  # each fix is on main
        assert "import os" not in (ws / "repo" / name).read_text() and "   \n" not in (ws / "repo" / name).read_text()
    # Each fix went verified -> batched -> merged, the landing taken by the merger through its own run token.
    for task_id in review["fields"]["tasks"]:
        history = js(cli("--spec", spec, "task", "show", str(task_id), "--json"))["history"]
        moves = [(e["data"].get("transition"), e["principal"]) for e in history if e["action"] == "task.transition"]
        assert moves[-2:] == [("batch", "merger"), ("land", "merger")], moves
    assert "KPIlint_findings:4->1findings" in compact and "reviews(batchmerge)bystate:merged1" in compact
    assert "tasksbystate:merged3,planned1" in compact and "intact" in compact
    # The run tokens were revoked when each run ended; the review branch and the fixes' worktrees are gone.
    tokens = js(cli("--spec", spec, "token", "list", "--principal", "merger", "--json"))
    assert tokens and all(t["revoked_at"] for t in tokens)
    assert "roster/review" not in git(ws / "repo", "branch", "--list")
    assert not any(p.name.startswith("task-") and p.name != "task-2" for p in (ws / ".roster" / "worktrees").iterdir())


def test_without_yes_the_batch_waits_on_one_approval_then_a_rerun_merges_it(cli, tmp_path):
    repo = committed_repo(tmp_path / "src", BATCH_FILES)
    ws = tmp_path / "ws"
    spec = str(ws / "roster.yaml")
    first = cli("demo", str(repo), "--batch-merge", "--workspace", str(ws))
    assert first.exit_code == 0, first.output
    compact = "".join(first.output.split())
    assert "1merge(s)waitforyourapproval" in compact and f"roster--spec{spec}approve1" in compact
    assert merges_on_main(ws / "repo") == []  # nothing merged before the approval
    shown = cli("--spec", spec, "approvals", "show", "1")
    flat = " ".join(shown.output.split())
    assert "3 verified fix(es) on roster/review" in flat and "merges cleanly onto main" in flat
    assert "lint_findings on main 4 -> 1 expected" in flat
    ok(cli("--spec", spec, "approve", "1"))
    again = cli("demo", "--workspace", str(ws))
    assert again.exit_code == 0, again.output
    assert len(merges_on_main(ws / "repo")) == 1
    assert "tasksbystate:merged3,planned1" in "".join(again.output.split())


def test_continuing_a_workspace_made_without_batch_merge_with_it_is_refused(cli, tmp_path):
    company, dispatcher, _repo = open_lane(tmp_path)  # a workspace whose merger asks fix by fix
    dispatcher.close()
    company.store.close()
    ws = tmp_path / "ws"
    again = cli("demo", "--batch-merge", "--workspace", str(ws))
    assert again.exit_code == 2 and "made without --batch-merge" in " ".join(again.output.split())


def batch_lane(tmp_path: Path):
    """The lane's workspace in batch mode, driven by a dispatcher: ``(company, dispatcher, repo)``."""
    return open_lane(tmp_path, BATCH_FILES, demo.spec_text("op", batch_merge=True))


def idle(dispatcher: Dispatcher, cycles: int = 30) -> None:
    for _ in range(cycles):
        if not dispatcher.cycle():
            return
    raise AssertionError("the lane did not go idle")


def test_a_fix_rejected_after_it_was_batched_stops_the_review_from_merging(tmp_path):
    company, dispatcher, repo = batch_lane(tmp_path)
    try:
        idle(dispatcher)
        batched = company.list_tasks(workflow="lint-fix", state="batched")
        assert len(batched) == 3
        # Batched fixes are offered to no one: a cycle starts no run for them.
        assert dispatcher.cycle() == []
        review = demo.file_review(company, repo, "op")
        assert review is not None and review.fields["tasks"] == [t.id for t in batched]
        assert demo.file_review(company, repo, "op") is None  # one review at a time
        dropped = batched[0]
        company.transition(dropped.id, "reject", actor="op", expected_version=dropped.version, rationale="not this one")
        outcomes = dispatcher.cycle()
        assert [(o.task_id, o.outcome) for o in outcomes] == [(review.id, "failed")]
        assert f"task {dropped.id} is rejected" in outcomes[0].failure.message
        assert company.get_task(review.id).state == "open" and company.list_requests() == []
        assert merges_on_main(repo) == []
        assert [e.task_id for e in company.list_escalations()][-1] == review.id
    finally:
        dispatcher.close()


def test_a_crash_after_the_merge_is_repaired_by_the_next_run_landing_what_is_left(tmp_path):
    company, dispatcher, repo = batch_lane(tmp_path)
    try:
        idle(dispatcher)
        review = demo.file_review(company, repo, "op")
        dispatcher.cycle()  # the merger asks for the review's merge
        (request,) = company.inbox(actor="op")
        company.approve_request(request.id, actor="op")
        # A run merged the head into main and died before landing anything.
        git(repo, "merge", "--no-ff", "-m", "merged by a run that then died", review.fields["head"])
        outcomes = [o for o in dispatcher.cycle() if o.task_id is not None]  # the scout rescans the new main
        assert [(o.task_id, o.transition) for o in outcomes] == [(review.id, "merge")]
        assert merges_on_main(repo) == ["merged by a run that then died"]  # not merged twice
        assert {t.state for t in (company.get_task(i) for i in review.fields["tasks"])} == {"merged"}
    finally:
        dispatcher.close()


def test_a_program_runner_with_token_acts_as_its_agent_and_its_token_dies_with_the_run(tmp_path, db_url,
                                                                                       monkeypatch):
    """``token: true`` (any program command, either backend): the run's token authenticates as its agent,
    which takes a transition the runtime never offers (``offered: false``) on another task; the token is
    revoked once the run ends."""
    script = tmp_path / "closer.py"
    script.write_text(
        "import json, os, sys\n"
        "from roster.store import Store\n"
        "brief = json.load(sys.stdin)\n"
        "store = Store.open(os.environ['TEST_DB'])\n"
        "session = store.session(os.environ['ROSTER_TOKEN'])\n"
        "other = session.get_task(brief['task']['fields']['other'])\n"
        "session.transition(other.id, 'close_with', expected_version=other.version, rationale='with its pair')\n"
        "open(os.environ['TEST_OUT'], 'w').write(os.environ['ROSTER_TOKEN'])\n"
        "store.close()\n"
        "print(json.dumps({'transition': 'close', 'rationale': 'closed both'}))\n")
    spec = f"""
company: acme
workflows:
  pair:
    states: [open, done]
    initial: open
    fields: {{other: {{type: integer}}}}
    transitions:
      close: {{from: open, to: done, by: [closer]}}
  follower:
    states: [open, done]
    initial: open
    transitions:
      close_with: {{from: open, to: done, by: [closer], offered: false}}
agents:
  closer:
    tier: bounded-mutator
    runner: {{kind: program, command: "{sys.executable} {script}", token: true}}
humans:
  op: {{}}
"""
    monkeypatch.setenv("TEST_DB", db_url)
    monkeypatch.setenv("TEST_OUT", str(tmp_path / "token"))
    store = Store.open(db_url)
    try:
        store.apply(parse_spec(spec), applied_by="op")
        company = store.company("acme")
        follower, _ = company.create_task(workflow="follower", title="follower", actor="op")
        first, _ = company.create_task(workflow="pair", title="first", actor="op", fields={"other": follower.id})
        dispatcher = Dispatcher(company, workdir=tmp_path)
        try:
            outcomes = dispatcher.cycle()
            assert dispatcher.cycle() == []  # nothing else was offered: the follower only through the token
        finally:
            dispatcher.close()
        assert [(o.task_id, o.transition, o.outcome) for o in outcomes] == [(first.id, "close", "succeeded")]
        moved = [e for e in company.history(follower.id, actor="op") if e.action == "task.transition"]
        assert [(e.principal, e.data["transition"]) for e in moved] == [("closer", "close_with")]
        with pytest.raises(Unauthenticated, match="revoked"):
            store.session((tmp_path / "token").read_text())
    finally:
        store.close()


def test_offered_false_transitions_start_no_run_even_with_work_waiting(tmp_path, db_url):
    spec = """
company: acme
workflows:
  follower:
    states: [open, done]
    initial: open
    transitions:
      close_with: {from: open, to: done, by: [closer], offered: false}
agents:
  closer:
    tier: bounded-mutator
    runner: {kind: program, callable: "json:dumps"}
humans:
  op: {}
"""
    store = Store.open(db_url)
    try:
        store.apply(parse_spec(spec), applied_by="op")
        company = store.company("acme")
        company.create_task(workflow="follower", title="waits", actor="op")
        assert company.candidates_many(["closer"]) == {}
        dispatcher = Dispatcher(company, workdir=tmp_path)
        try:
            assert dispatcher.cycle() == []
        finally:
            dispatcher.close()
    finally:
        store.close()
