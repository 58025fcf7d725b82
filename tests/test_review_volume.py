"""Review volume (issue 17, item 4): per approval edge, the requests made in a window and how they were
decided, judged over-reviewed (nearly always approved: is the edge needed?), weak upstream (keeps
rejecting: the contract before it lets problems through), ok, or too few to judge, with the thresholds of
the spec's ``fitness.review``. Requests are made the way users make them: an agent moves a task on an
approval edge (``ApprovalPending``) and a human approves or rejects it. Through the store, the session,
``roster approvals stats`` and ``GET /api/v1/approvals/stats``, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from test_api import check_problem_shape, problem

from roster.api import create_app
from roster.errors import ApprovalPending, UsageError
from roster.kernel.review import review_verdict
from roster.kernel.spec import ReviewVolume
from roster.specfile import parse_spec
from roster.store import Store

SPEC = """\
company: acme
workflows:
  release:
    states: [draft, live]
    initial: draft
    transitions:
      ship: {from: draft, to: live, by: [shipper], approval: {by: [human]}}
  hotfix:
    states: [open, done]
    initial: open
    transitions:
      apply: {from: open, to: done, by: [shipper], approval: {by: [human]}}
agents:
  shipper: {tier: high-impact-executor}
humans:
  alice: {}
  bob: {}
"""
FIVE_DECIDE = SPEC + "fitness:\n  review: {min_requests: 5, weak_upstream_at: 0.5}\n"
EDGES = {"release.ship": ("release", "ship"), "hotfix.apply": ("hotfix", "apply")}
OVER = "over-reviewed, is this edge needed?"
WEAK = "the upstream contract lets problems through"
API = "/api/v1"


def ask(company, edge: str) -> int:
    """A new task on ``edge``'s workflow; the shipper moves it and gets a request. Returns its id."""
    workflow, transition = EDGES[edge]
    task, _ = company.create_task(workflow=workflow, title=f"{edge} task", actor="alice")
    with pytest.raises(ApprovalPending) as asked:
        company.transition(task.id, transition, actor="shipper", expected_version=task.version)
    return asked.value.request_id


def decide(company, edge: str, *, approved: int = 0, rejected: int = 0, pending: int = 0) -> None:
    """Make ``approved + rejected + pending`` requests on ``edge``; bob approves or rejects (with a note)
    the first ones and leaves ``pending`` undecided."""
    for _ in range(approved):
        company.approve_request(ask(company, edge), actor="bob")
    for _ in range(rejected):
        company.reject_request(ask(company, edge), actor="bob", note="the release notes are missing")
    for _ in range(pending):
        ask(company, edge)


def entry(stats: list[dict], edge: str) -> dict:
    [found] = [s for s in stats if s["edge"] == edge]
    return found


# -- the pure judgement ----------------------------------------------------------------------------


def test_the_verdict_needs_min_requests_decided_and_then_reads_the_rates():
    defaults = ReviewVolume()
    assert review_verdict(48, 0, window_days=30, settings=defaults) == (
        "over-reviewed", f"48 of 48 approved in 30 days: {OVER}")
    assert review_verdict(11, 9, window_days=30, settings=defaults) == (
        "weak-upstream", f"9 of 20 rejected in 30 days: {WEAK}")
    assert review_verdict(2, 1, window_days=30, settings=defaults) == (
        "too-few", "3 decided in 30 days: too few to judge (20 needed)")
    assert review_verdict(18, 2, window_days=7, settings=defaults) == (
        "ok", "18 of 20 approved in 7 days: neither over-reviewed nor a weak upstream")
    # the thresholds are inclusive: 49 of 50 is 98%, 5 of 20 is 25%
    assert review_verdict(49, 1, window_days=30, settings=defaults)[0] == "over-reviewed"
    assert review_verdict(48, 2, window_days=30, settings=defaults)[0] == "ok"
    assert review_verdict(15, 5, window_days=30, settings=defaults)[0] == "weak-upstream"
    assert review_verdict(16, 4, window_days=30, settings=defaults)[0] == "ok"
    assert review_verdict(19, 0, window_days=30, settings=defaults)[0] == "too-few"
    # over-reviewed is judged first when generous settings make both hold
    both = ReviewVolume(min_requests=2, over_reviewed_at=0.5, weak_upstream_at=0.5)
    assert review_verdict(1, 1, window_days=1, settings=both) == (
        "over-reviewed", f"1 of 2 approved in 1 day: {OVER}")
    # the window in its largest whole unit
    assert review_verdict(0, 0, window_days=0.5, settings=defaults)[1] == (
        "0 decided in 12 hours: too few to judge (20 needed)")
    assert "in 45 minutes" in review_verdict(0, 0, window_days=45 / 1440, settings=defaults)[1]
    for bad in (lambda: review_verdict(-1, 0, window_days=30, settings=defaults),
                lambda: review_verdict(1, 0, window_days=0, settings=defaults)):
        with pytest.raises(ValueError):
            bad()


# -- the store -------------------------------------------------------------------------------------


def test_twenty_of_twenty_approved_is_over_reviewed(opened):
    acme = opened(SPEC)
    decide(acme, "release.ship", approved=20)

    assert acme.approval_stats() == [
        {"edge": "release.ship", "requested": 20, "approved": 20, "rejected": 0, "expired": 0, "stale": 0,
         "pending": 0, "decided": 20, "approval_rate": 1.0, "verdict": "over-reviewed",
         "summary": f"20 of 20 approved in 30 days: {OVER}"}]


def test_six_rejected_of_twenty_is_a_weak_upstream_and_each_edge_is_judged_on_its_own(opened):
    acme = opened(SPEC)
    decide(acme, "hotfix.apply", approved=14, rejected=6)
    decide(acme, "release.ship", approved=18, rejected=2)

    stats = acme.approval_stats()

    assert [s["edge"] for s in stats] == ["hotfix.apply", "release.ship"]
    hotfix = entry(stats, "hotfix.apply")
    assert (hotfix["decided"], hotfix["rejected"], hotfix["approval_rate"]) == (20, 6, 0.7)
    assert (hotfix["verdict"], hotfix["summary"]) == ("weak-upstream", f"6 of 20 rejected in 30 days: {WEAK}")
    release = entry(stats, "release.ship")
    assert (release["verdict"], release["approval_rate"]) == ("ok", 0.9)
    assert release["summary"] == "18 of 20 approved in 30 days: neither over-reviewed nor a weak upstream"


def test_too_few_decided_is_not_judged_and_undecided_requests_are_no_evidence(opened):
    acme = opened(SPEC)
    decide(acme, "release.ship", approved=2, rejected=1, pending=30)

    [release] = acme.approval_stats()

    assert (release["requested"], release["pending"], release["decided"]) == (33, 30, 3)
    assert release["approval_rate"] == pytest.approx(2 / 3)
    assert (release["verdict"], release["summary"]) == (
        "too-few", "3 decided in 30 days: too few to judge (20 needed)")


def test_requests_older_than_the_window_are_left_out(opened, clock):
    acme = opened(SPEC)
    decide(acme, "release.ship", approved=20)
    clock.advance(days=30)  # made exactly 30 days ago: still in the window
    assert entry(acme.approval_stats(), "release.ship")["verdict"] == "over-reviewed"
    clock.advance(seconds=1)
    decide(acme, "release.ship", approved=2, rejected=1)

    assert acme.approval_stats() == [
        {"edge": "release.ship", "requested": 3, "approved": 2, "rejected": 1, "expired": 0, "stale": 0,
         "pending": 0, "decided": 3, "approval_rate": pytest.approx(2 / 3), "verdict": "too-few",
         "summary": "3 decided in 30 days: too few to judge (20 needed)"}]
    [wide] = acme.approval_stats(window_seconds=31 * 86400)
    assert (wide["decided"], wide["verdict"]) == (23, "ok")
    assert wide["summary"] == "22 of 23 approved in 31 days: neither over-reviewed nor a weak upstream"
    assert acme.approval_stats(window_seconds=3600)[0]["requested"] == 3
    clock.advance(hours=2)
    assert acme.approval_stats(window_seconds=3600) == []  # no edge had a request in the last hour
    # a window reaching past the calendar's start counts every request
    assert acme.approval_stats(window_seconds=10**12)[0]["requested"] == 23


def test_the_spec_fitness_review_settings_set_the_thresholds(opened):
    acme = opened(SPEC)
    decide(acme, "release.ship", approved=5)
    decide(acme, "hotfix.apply", approved=3, rejected=2)
    assert {s["edge"]: s["verdict"] for s in acme.approval_stats()} == {
        "hotfix.apply": "too-few", "release.ship": "too-few"}

    acme = opened(FIVE_DECIDE)  # a new revision: five decided requests suffice, half rejected is weak

    stats = acme.approval_stats()
    assert entry(stats, "release.ship")["summary"] == f"5 of 5 approved in 30 days: {OVER}"
    assert (entry(stats, "hotfix.apply")["verdict"], entry(stats, "hotfix.apply")["summary"]) == (
        "ok", "3 of 5 approved in 30 days: neither over-reviewed nor a weak upstream")
    decide(acme, "hotfix.apply", rejected=1)
    assert entry(acme.approval_stats(), "hotfix.apply")["summary"] == f"3 of 6 rejected in 30 days: {WEAK}"
    assert entry(acme.approval_stats(), "hotfix.apply")["verdict"] == "weak-upstream"
    with pytest.raises(Exception, match="min_requests"):
        parse_spec(SPEC + "fitness:\n  review: {min_requests: 0}\n")


def test_a_window_under_a_second_is_refused_and_every_principal_sees_the_same_volume(opened):
    acme = opened(SPEC)
    decide(acme, "release.ship", approved=1)
    for bad in (0, -86400):
        with pytest.raises(UsageError, match="at least one second"):
            acme.approval_stats(window_seconds=bad)
    store = acme.store
    for handle in ("bob", "shipper"):  # a human and the requesting agent: counts, no request's content
        session = store.session(acme.issue_token(handle, actor="alice").token)
        assert session.approval_stats() == acme.approval_stats()
        assert session.approval_stats(window_seconds=60) == acme.approval_stats(window_seconds=60)


# -- the CLI ---------------------------------------------------------------------------------------


def test_roster_approvals_stats_prints_the_verdict_and_its_summary(cli, db_url, tmp_path):
    (cli.workspace / "roster.yaml").write_text(FIVE_DECIDE, encoding="utf-8")

    def roster(*args: str, token: str | None = None):
        return cli("--db", db_url, *(("--token", token) if token else ()), *args)

    assert roster("apply").exit_code == 0
    shipper = json.loads(roster("token", "issue", "shipper", "--json").stdout)["token"]
    store = Store.open(db_url, artifact_root=tmp_path / "art")  # the real clock, as the CLI's
    try:
        decide(store.company("acme"), "release.ship", approved=5)
        decide(store.company("acme"), "hotfix.apply", approved=1, rejected=1)
    finally:
        store.close()

    result = roster("approvals", "stats", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert [(s["edge"], s["verdict"], s["summary"]) for s in stats] == [
        ("hotfix.apply", "too-few", "2 decided in 30 days: too few to judge (5 needed)"),
        ("release.ship", "over-reviewed", f"5 of 5 approved in 30 days: {OVER}")]
    assert json.loads(roster("approvals", "stats", "--window", "12h", "--json").stdout)[1]["summary"] == (
        f"5 of 5 approved in 12 hours: {OVER}")
    assert json.loads(roster("approvals", "stats", "--json", token=shipper).stdout) == stats  # open to all

    table = " ".join(roster("approvals", "stats", "--window", "7d").stdout.split())
    assert "approval requests made in the last 7d" in table
    assert "5 5 0 0 0 0 100%" in table and "2 1 1 0 0 0 50%" in table  # an edge may be cut at 80 columns
    assert f"release.ship over-reviewed 5 of 5 approved in 7 days: {OVER}" in table
    assert "hotfix.apply too-few 2 decided in 7 days: too few to judge (5 needed)" in table

    for bad in ("x", "30", "0d", "30 days", "-1d"):
        refused = roster("approvals", "stats", "--window", bad)
        assert refused.exit_code == UsageError.exit_code == 2, refused.output
        assert f"--window {bad!r} is not a duration: use a whole number and d, h or m" in " ".join(
            refused.stderr.split())
        assert refused.stdout == ""


# -- REST ------------------------------------------------------------------------------------------


@pytest.fixture
def served(opened, tmp_path):
    """The acme company (FIVE_DECIDE) and a client of the real app on its store, with tokens by handle."""
    acme = opened(FIVE_DECIDE)
    client = TestClient(create_app(acme.store, workdir=tmp_path))
    client.event_hooks = {"request": [], "response": [check_problem_shape]}
    tokens = {h: acme.issue_token(h, actor="alice").token for h in ("alice", "shipper")}
    with client:
        yield acme, client, lambda handle: {"Authorization": f"Bearer {tokens[handle]}"}


def test_get_approvals_stats_answers_the_volume_and_verdicts(served, clock):
    acme, api, auth = served
    decide(acme, "hotfix.apply", approved=2, rejected=3)
    clock.advance(days=2)
    decide(acme, "release.ship", approved=1)

    response = api.get(f"{API}/approvals/stats", headers=auth("alice"))

    assert response.status_code == 200, response.text
    assert response.json() == acme.approval_stats()
    assert [(s["edge"], s["verdict"], s["summary"]) for s in response.json()] == [
        ("hotfix.apply", "weak-upstream", f"3 of 5 rejected in 30 days: {WEAK}"),
        ("release.ship", "too-few", "1 decided in 30 days: too few to judge (5 needed)")]
    recent = api.get(f"{API}/approvals/stats", params={"window": "1d"}, headers=auth("shipper"))
    assert recent.status_code == 200, recent.text
    assert recent.json() == [{"edge": "release.ship", "requested": 1, "approved": 1, "rejected": 0, "expired": 0,
                              "stale": 0, "pending": 0, "decided": 1, "approval_rate": 1.0, "verdict": "too-few",
                              "summary": "1 decided in 1 day: too few to judge (5 needed)"}]
    everything = api.get(f"{API}/approvals/stats", params={"window": "999999d"}, headers=auth("alice"))
    assert [s["decided"] for s in everything.json()] == [5, 1]  # a window past the calendar's start: all


def test_get_approvals_stats_refuses_a_malformed_window_as_a_problem(served):
    _acme, api, auth = served
    for bad in ("x", "30", "0d", "30 days", "1w"):
        body = problem(api.get(f"{API}/approvals/stats", params={"window": bad}, headers=auth("alice")), 400, "usage")
        assert body["detail"] == (f"window {bad!r} is not a duration: use a whole number and d, h or m, "
                                  "e.g. 30d (at most 6 digits)")
    problem(api.get(f"{API}/approvals/stats", params={"window": "1" * 20 + "d"}, headers=auth("alice")), 422,
            "validation")
    problem(api.get(f"{API}/approvals/stats"), 401, "unauthenticated")
