"""Approval edges: a move or tool call on one opens a request with evidence instead of running;
approving runs it atomically as the requester, rejecting leaves it undone with a note; nobody approves
their own request; requests expire and go stale; the inbox, the per-edge counts, tenant isolation,
and every step on the audit record. Real SQLite files and the real PostgreSQL, a clock the tests move."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from conftest import FIX_LINT, GOOD_SPEC, StepClock

from roster.errors import (
    ApprovalPending,
    ApprovalStale,
    ContractViolation,
    Denied,
    NotFound,
    StaleVersion,
    UsageError,
)
from roster.specfile import parse_spec
from roster.store import Store
from roster.store.approvals import REJECTIONS_SHOWN

SPEC = """\
company: acme
workflows:
  release:
    states: [draft, live, dropped]
    initial: draft
    kpis: [uptime]
    fields:
      version: {type: string}
      notes: {type: string}
      channel: {type: string}
      team: {type: string}
    transitions:
      ship:
        from: draft
        to: live
        by: [shipper, helper]
        writes: [version, notes, channel]
        requires: {fields: [version], checks: [smoke]}
        approval: {by: [human]}
      drop: {from: draft, to: dropped, by: [human]}
  hotfix:
    states: [open, done]
    initial: open
    transitions:
      apply: {from: open, to: done, by: [shipper], approval: {by: [human], expires_in: 1h}}
  review:
    states: [open, signed]
    initial: open
    transitions:
      sign: {from: open, to: signed, by: [human], approval: {by: [human]}}
  budget:
    states: [open, spent]
    initial: open
    transitions:
      spend: {from: open, to: spent, by: [shipper], approval: {by: [finance]}}
tools:
  deploy: {command: deploy, approval: {by: [human]}}
  lint: {command: ruff check}
agents:
  shipper: {tier: high-impact-executor, kpis: [lead_time], tools: [deploy, lint]}
  helper: {tier: bounded-mutator, tools: [deploy]}
humans:
  alice: {}
  bob: {}
  carol: {roles: [finance]}
kpis:
  uptime: {direction: up}
  lead_time: {direction: down}
"""

SHIP_WRITES = {"version": "1.1", "notes": "Fixes the login bug.", "channel": None}
RATIONALE = "Smoke test passed on staging; users are waiting for the login fix."
TS = "%Y-%m-%dT%H:%M:%S.%fZ"


# -- fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def store(db_url, tmp_path, clock):
    """A store whose clock the test holds (``clock.now += ...`` moves time), on each backend."""
    opened = Store.open(db_url, clock=clock, artifact_root=tmp_path / "artifacts")
    yield opened
    opened.close()


@pytest.fixture
def acme(store):
    store.apply(parse_spec(SPEC), applied_by="alice")
    return store.company("acme")


@pytest.fixture
def lint(store):
    """The conftest fix-lint company (merge needs an approval by a human)."""
    store.apply(parse_spec(FIX_LINT), applied_by="alice")
    return store.company("acme")


def pending(call) -> ApprovalPending:
    """Run ``call``, which must open (or find) an approval request instead of acting."""
    with pytest.raises(ApprovalPending) as info:
        call()
    return info.value


def since(company, seq: int):
    return company.audit_log(after_seq=seq)


def last_seq(company) -> int:
    return company.audit_log()[-1].seq


def ts(text: str) -> datetime:
    return datetime.strptime(text, TS)


def release_task(company, title="release 1.1", fields=None):
    """A release draft with a passed smoke check (version 2), ready to ship but for the approval."""
    task, _ = company.create_task(workflow="release", title=title, actor="alice",
                                  fields={"version": "1.0", "channel": "beta", "team": "web"}
                                  if fields is None else fields)
    company.record_check(task.id, "smoke", passed=True, actor="shipper")
    return company.get_task(task.id)


def ask_ship(company, task, *, actor="shipper", writes=None, rationale=RATIONALE) -> ApprovalPending:
    return pending(lambda: company.transition(task.id, "ship", actor=actor, expected_version=task.version,
                                              writes=SHIP_WRITES if writes is None else writes,
                                              rationale=rationale))


def simple_task(company, workflow: str, title: str | None = None):
    return company.create_task(workflow=workflow, title=title or f"{workflow} task", actor="alice")[0]


def ask(company, task, transition: str, actor: str) -> ApprovalPending:
    return pending(lambda: company.transition(task.id, transition, actor=actor, expected_version=task.version))


def verified(company):
    """A fix-lint task walked to ``verified``: merge is the next move, and it needs an approval."""
    task, _ = company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"})
    task = company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    company.record_artifact(task.id, "patch", b"--- a\n+++ b\n", actor="builder")
    task = company.transition(task.id, "build", actor="builder", expected_version=task.version + 1,
                              writes={"branch": "fix/e501"})
    company.record_check(task.id, "lint_clean", passed=True, actor="qa")
    return company.transition(task.id, "verify", actor="qa", expected_version=task.version + 1)


def refused_decision(company, call, error_type, verb: str, principal: str, request_id: int):
    """``call`` must raise ``error_type`` and append exactly one ``approval.<verb>.rejected`` event."""
    before = last_seq(company)
    with pytest.raises(error_type) as info:
        call()
    [event] = since(company, before)
    assert (event.action, event.principal, event.subject) == (
        f"approval.{verb}.rejected", principal, f"approval:{request_id}")
    assert event.data["error"]["error"] == error_type.code
    return info.value, event


# -- opening a request -----------------------------------------------------------------------------


def test_a_move_on_an_approval_edge_opens_a_request_with_the_evidence(acme):
    task = release_task(acme)
    assert task.version == 2
    before = last_seq(acme)

    opened = ask_ship(acme, task)

    assert opened.created is True and opened.approvers == ["human"]
    assert opened.exit_code == 13 and f"request {opened.request_id}" in opened.message
    assert acme.get_task(task.id) == task  # nothing ran
    request = acme.get_request(opened.request_id)
    assert (request.kind, request.task_id, request.workflow, request.transition, request.tool, request.edge) == (
        "transition", task.id, "release", "ship", None, "release.ship")
    assert (request.requested_by, request.task_version, request.status) == ("shipper", 2, "pending")
    assert (request.decided_by, request.decided_at, request.note) == (None, None, "")
    assert request.payload == SHIP_WRITES
    assert request.rationale == RATIONALE
    assert ts(request.expires_at) - ts(request.created_at) == timedelta(days=7)  # the default expires_in
    assert request.evidence == {
        "requested_by": "shipper",
        "task": {"id": task.id, "title": "release 1.1", "state": "draft", "version": 2, "to": "live"},
        "fields_diff": {  # added, changed and removed fields; 'team' is unchanged and absent
            "channel": {"from": "beta", "to": None},
            "notes": {"from": None, "to": "Fixes the login bug."},
            "version": {"from": "1.0", "to": "1.1"},
        },
        "satisfied_clauses": ["from", "by", "writes", "fields", "requires.fields", "requires.checks"],
        "kpis": ["uptime"],  # the workflow's own KPIs
        "rationale": RATIONALE,
        "checks": [{"name": "smoke", "passed": True, "detail": ""}],  # the latest result of each check
        "kpi_latest": {"uptime": None},  # no reading yet
        "artifacts": [],
    }

    [event] = since(acme, before)  # one event: the request; no refusal
    assert (event.action, event.principal, event.subject) == ("approval.request", "shipper", f"task:{task.id}")
    assert event.data["request_id"] == opened.request_id
    assert event.data["edge"] == "release.ship"
    assert event.data["approvers"] == ["human"]
    assert event.data["expires_at"] == request.expires_at
    assert event.data["evidence"] == request.evidence
    assert acme.audit_log(action="task.transition*") == []
    assert acme.verify_audit()[1] is None


def test_the_evidence_links_the_requesters_kpis_when_the_workflow_has_none(acme):
    task = simple_task(acme, "hotfix")
    request = acme.get_request(ask(acme, task, "apply", "shipper").request_id)
    assert request.evidence["kpis"] == ["lead_time"]  # hotfix has no kpis: the shipper's own
    assert request.evidence["fields_diff"] == {}
    assert request.evidence["satisfied_clauses"] == ["from", "by", "writes", "fields"]
    assert request.evidence["rationale"] == "" and request.rationale == ""


def test_asking_again_reuses_the_pending_request(acme):
    task = release_task(acme)
    first = ask_ship(acme, task)
    again = ask_ship(acme, task, rationale="asking again, in other words")  # same edge, requester, version, writes
    assert (again.request_id, again.created) == (first.request_id, False)
    assert "already waiting" in again.message
    assert [r.id for r in acme.list_requests()] == [first.request_id]
    assert len(acme.audit_log(action="approval.request")) == 1
    assert acme.get_request(first.request_id).rationale == RATIONALE  # the open request is unchanged

    other_writes = ask_ship(acme, task, writes={"version": "1.2"})  # a different change is a different request
    assert other_writes.created is True and other_writes.request_id != first.request_id
    assert [r.id for r in acme.list_requests(status="pending")] == [first.request_id, other_writes.request_id]
    assert acme.get_task(task.id) == task


# -- approve ---------------------------------------------------------------------------------------


def test_approve_runs_the_transition_atomically_as_the_requester(acme):
    task = release_task(acme)
    request_id = ask_ship(acme, task).request_id
    assert [r.id for r in acme.inbox(actor="bob")] == [request_id]
    before = last_seq(acme)

    decided = acme.approve_request(request_id, actor="alice", note="Ship it.")

    assert (decided.id, decided.status, decided.decided_by, decided.note) == (request_id, "approved", "alice",
                                                                              "Ship it.")
    assert decided.decided_at is not None
    after = acme.get_task(task.id)
    assert (after.state, after.version) == ("live", task.version + 1)
    assert after.fields == {"version": "1.1", "notes": "Fixes the login bug.", "team": "web"}
    approve, moved = since(acme, before)  # the decision and the transition, nothing else
    assert (approve.action, approve.principal, approve.subject) == ("approval.approve", "alice",
                                                                     f"approval:{request_id}")
    assert approve.data.items() >= {"edge": "release.ship", "note": "Ship it."}.items()
    assert (moved.action, moved.principal, moved.subject) == ("task.transition", "shipper", f"task:{task.id}")
    assert moved.data.items() >= {"workflow": "release", "transition": "ship", "from": "draft", "to": "live",
                                  "writes": SHIP_WRITES, "version": task.version + 1, "approved_by": "alice",
                                  "approval_request": request_id}.items()
    assert [e.action for e in acme.history(task.id)][-1] == "task.transition"
    assert acme.verify_audit()[1] is None
    assert acme.inbox(actor="bob") == []

    # a decided request cannot be decided again, and saying so is on the record
    error, _ = refused_decision(acme, lambda: acme.approve_request(request_id, actor="bob"), UsageError,
                                "approve", "bob", request_id)
    assert "approved, not pending" in error.message
    assert acme.get_task(task.id) == after


def test_a_batch_move_on_an_approval_edge_opens_a_request_too(lint):
    task = verified(lint)
    with lint.batch() as unit:
        opened = pending(lambda: unit.transition(task.id, "merge", actor="merger", expected_version=task.version))
    assert lint.get_request(opened.request_id).status == "pending"
    assert lint.get_task(task.id) == task
    lint.approve_request(opened.request_id, actor="bob")
    assert lint.get_task(task.id).state == "merged"


# -- reject ----------------------------------------------------------------------------------------


def test_reject_keeps_the_task_and_the_requester_reads_the_note(acme):
    task = release_task(acme)
    request_id = ask_ship(acme, task).request_id
    before = last_seq(acme)

    decided = acme.reject_request(request_id, actor="bob", note="Not during the freeze; ask again on Monday.")

    assert (decided.status, decided.decided_by, decided.note) == (
        "rejected", "bob", "Not during the freeze; ask again on Monday.")
    assert acme.get_task(task.id) == task
    [event] = since(acme, before)
    assert (event.action, event.principal, event.subject) == ("approval.reject", "bob", f"approval:{request_id}")
    assert event.data.items() >= {"edge": "release.ship", "note": "Not during the freeze; ask again on Monday.",
                                  "task_id": task.id}.items()
    # the requester sees the decision and its note
    [mine] = acme.list_requests(actor="shipper")
    assert (mine.id, mine.status, mine.note) == (request_id, "rejected", "Not during the freeze; ask again on Monday.")
    assert acme.get_request(request_id, actor="shipper").note == "Not during the freeze; ask again on Monday."
    # it is over: approving it now is refused, and asking again needs a change (see the tests below)
    refused_decision(acme, lambda: acme.approve_request(request_id, actor="alice"), UsageError, "approve", "alice",
                     request_id)
    assert acme.get_task(task.id) == task
    acme.record_check(task.id, "smoke", passed=True, actor="shipper")  # a new version of the task
    again = ask_ship(acme, acme.get_task(task.id))
    assert again.created is True and again.request_id != request_id


def rejections(company, task_id: int, agent: str) -> list[dict]:
    with company.store.read() as conn:
        return company.rejections_txn(conn, task_id, agent)


def blocked(company, task_id: int, agent: str) -> dict[str, str]:
    with company.store.read() as conn:
        return company.ask_again_blocked_txn(conn, company.get_task(task_id), agent)


def test_the_rejection_note_reaches_the_requester_and_asking_again_needs_a_change(acme):
    task = release_task(acme)
    request_id = ask_ship(acme, task).request_id
    note = "Not during the freeze; ask again on Monday."
    decided = acme.reject_request(request_id, actor="bob", note=note)

    [rejection] = rejections(acme, task.id, "shipper")
    assert rejection == {"request_id": request_id, "transition": "ship", "note": note, "decided_by": "bob",
                         "decided_at": decided.decided_at, "task_version": task.version, "writes": SHIP_WRITES}
    assert rejections(acme, task.id, "helper") == [] and rejections(acme, task.id + 1, "shipper") == []
    [(transition, why)] = blocked(acme, task.id, "shipper").items()
    assert transition == "ship"
    assert f"request {request_id}" in why and note in why and "bob" in why
    assert f"still version {task.version}" in why and "different writes" in why

    # asking again for the same move, unchanged: refused naming the clause, audited, nothing opened
    before = last_seq(acme)
    with pytest.raises(ContractViolation) as refused:
        acme.transition(task.id, "ship", actor="shipper", expected_version=task.version, writes=SHIP_WRITES,
                        rationale="please")
    assert (refused.value.clause, refused.value.task_id) == ("approval.rejected", task.id)
    assert refused.value.detail == why and refused.value.exit_code == 5
    [event] = since(acme, before)
    assert (event.action, event.principal, event.data["error"]["clause"]) == (
        "task.transition.rejected", "shipper", "approval.rejected")
    assert [r.id for r in acme.list_requests()] == [request_id]
    with acme.batch() as unit, pytest.raises(ContractViolation):  # the batch path judges it the same way
        unit.transition(task.id, "ship", actor="shipper", expected_version=task.version, writes=SHIP_WRITES)
    assert [r.id for r in acme.list_requests()] == [request_id]

    # other writes are a change: a new request
    other = ask_ship(acme, task, writes={**SHIP_WRITES, "notes": "Ship after the freeze."})
    assert other.created and other.request_id != request_id
    # a new version of the task is a change: the rejection stays in the brief, no longer blocking
    acme.hold(task.id, actor="alice")
    acme.edit_fields(task.id, {"notes": "Freeze is over."}, actor="alice")
    acme.release_hold(task.id, actor="alice", note="go ahead")
    changed = acme.get_task(task.id)
    assert blocked(acme, task.id, "shipper") == {}
    assert [r["request_id"] for r in rejections(acme, task.id, "shipper")] == [request_id]
    again = ask_ship(acme, changed)
    assert again.created and acme.get_request(again.request_id).task_version == changed.version
    assert acme.verify_audit()[1] is None


def test_rejections_are_newest_first_and_bounded(acme, clock):
    task = release_task(acme)
    ids = []
    for n in range(7):  # seven rejected moves at one version, each with other writes
        ids.append(ask_ship(acme, task, writes={"version": f"1.{n}"}).request_id)
        clock.now += timedelta(minutes=1)
        acme.reject_request(ids[-1], actor="alice", note=f"no {n}")
    shown = rejections(acme, task.id, "shipper")
    assert [r["request_id"] for r in shown] == list(reversed(ids))[:REJECTIONS_SHOWN]
    assert [r["note"] for r in shown][:2] == ["no 6", "no 5"]
    assert "no 6" in blocked(acme, task.id, "shipper")["ship"]  # the newest rejection explains it
    for n in range(7):
        with pytest.raises(ContractViolation, match=f"no {n}"):
            acme.transition(task.id, "ship", actor="shipper", expected_version=task.version,
                            writes={"version": f"1.{n}"})


@pytest.mark.parametrize("note", ["", "   "])
def test_a_rejection_without_a_note_is_a_usage_error(acme, note):
    task = release_task(acme)
    request_id = ask_ship(acme, task).request_id
    with pytest.raises(UsageError, match="note"):
        acme.reject_request(request_id, actor="bob", note=note)
    assert acme.get_request(request_id).status == "pending"
    assert acme.audit_log(action="approval.reject") == []
    assert acme.get_task(task.id) == task


# -- who may decide --------------------------------------------------------------------------------


def test_nobody_approves_their_own_request(acme):
    task = simple_task(acme, "review")
    request_id = ask(acme, task, "sign", "alice").request_id  # a human may sign, and humans approve signing

    error, event = refused_decision(acme, lambda: acme.approve_request(request_id, actor="alice"), Denied,
                                    "approve", "alice", request_id)
    assert error.policies == ("separation-of-duties",)
    assert event.data["error"]["policies"] == ["separation-of-duties"]
    error, _ = refused_decision(acme, lambda: acme.reject_request(request_id, actor="alice", note="changed my mind"),
                                Denied, "reject", "alice", request_id)
    assert error.policies == ("separation-of-duties",)
    assert acme.get_request(request_id).status == "pending"
    assert acme.get_task(task.id) == task
    assert acme.inbox(actor="alice") == []
    assert [r.id for r in acme.inbox(actor="bob")] == [request_id]

    acme.approve_request(request_id, actor="bob")
    assert acme.get_task(task.id).state == "signed"
    [moved] = acme.audit_log(action="task.transition")
    assert (moved.principal, moved.data["approved_by"]) == ("alice", "bob")


def test_an_agent_the_edge_does_not_name_may_not_decide(acme):
    task = release_task(acme)
    request_id = ask_ship(acme, task).request_id
    for verb, call in (("approve", lambda: acme.approve_request(request_id, actor="helper")),
                       ("reject", lambda: acme.reject_request(request_id, actor="helper", note="no"))):
        error, event = refused_decision(acme, call, ContractViolation, verb, "helper", request_id)
        assert error.clause == "approval.by"
        assert event.data["error"]["clause"] == "approval.by"
    # the requester, an agent, is not an approver either
    error, _ = refused_decision(acme, lambda: acme.approve_request(request_id, actor="shipper"), ContractViolation,
                                "approve", "shipper", request_id)
    assert error.clause == "approval.by"
    assert acme.get_request(request_id).status == "pending"
    assert acme.get_task(task.id) == task


def test_an_agent_below_the_high_impact_tier_cannot_even_open_a_request(acme):
    task = release_task(acme)
    before = last_seq(acme)
    with pytest.raises(Denied) as denied:
        acme.transition(task.id, "ship", actor="helper", expected_version=task.version, writes=SHIP_WRITES)
    assert "tier:approval-gated" in denied.value.policies
    assert acme.list_requests() == []
    [event] = since(acme, before)
    assert (event.action, event.principal) == ("task.transition.rejected", "helper")
    assert event.data["error"]["error"] == "denied"
    assert acme.get_task(task.id) == task


def test_a_move_that_breaks_another_clause_is_refused_not_sent_for_approval(acme):
    task, _ = acme.create_task(workflow="release", title="unchecked", actor="alice", fields={"version": "1.0"})
    with pytest.raises(ContractViolation) as refused:  # no smoke check yet
        acme.transition(task.id, "ship", actor="shipper", expected_version=task.version, writes=SHIP_WRITES)
    assert refused.value.clause == "requires.checks"
    with pytest.raises(StaleVersion):
        acme.transition(task.id, "ship", actor="shipper", expected_version=task.version + 5)
    assert acme.list_requests() == []
    assert acme.audit_log(action="approval.*") == []
    assert [e.action for e in acme.audit_log(action="task.transition*")] == ["task.transition.rejected"] * 2


# -- expiry ----------------------------------------------------------------------------------------


def test_a_request_expires_after_its_edges_expires_in(acme, clock):
    task = simple_task(acme, "hotfix")
    request_id = ask(acme, task, "apply", "shipper").request_id
    request = acme.get_request(request_id)
    assert ts(request.expires_at) - ts(request.created_at) == timedelta(hours=1)

    clock.now += timedelta(minutes=58)
    assert acme.expire_requests() == 0
    assert acme.get_request(request_id).status == "pending"

    clock.now += timedelta(minutes=3)  # past the hour, before any sweep: deciding it is already refused
    error, _ = refused_decision(acme, lambda: acme.approve_request(request_id, actor="alice"), UsageError, "approve",
                                "alice", request_id)
    assert "expired" in error.message
    before = last_seq(acme)
    assert acme.expire_requests() == 1
    [event] = since(acme, before)
    assert (event.action, event.principal, event.subject) == ("approval.expire", "system", f"approval:{request_id}")
    assert acme.expire_requests() == 0  # once
    assert acme.get_request(request_id).status == "expired"

    refused_decision(acme, lambda: acme.approve_request(request_id, actor="alice"), UsageError, "approve", "alice",
                     request_id)
    refused_decision(acme, lambda: acme.reject_request(request_id, actor="bob", note="too late"), UsageError,
                     "reject", "bob", request_id)
    assert acme.get_task(task.id) == task
    assert acme.inbox(actor="alice") == []
    again = ask(acme, task, "apply", "shipper")  # the expired request is not reused
    assert again.created is True and again.request_id != request_id


# -- staleness -------------------------------------------------------------------------------------


def test_a_request_goes_stale_the_moment_its_task_changes_and_deciding_it_says_why(lint):
    task = verified(lint)
    request_id = pending(lambda: lint.transition(task.id, "merge", actor="merger",
                                                 expected_version=task.version)).request_id
    assert lint.get_request(request_id).status == "pending"
    before = last_seq(lint)

    lint.record_artifact(task.id, "patch", b"changed after the request", actor="builder")  # bumps the version

    changed = lint.get_task(task.id)
    assert changed.version == task.version + 1
    request = lint.get_request(request_id)  # stale at once, in the same transaction as the change
    assert (request.status, request.decided_by) == ("stale", "builder")
    why = (f"task {task.id} moved from version {task.version} to {changed.version} (artifact.record by 'builder') "
           "after the request was made")
    assert request.note == why
    saved, stale = since(lint, before)
    assert (saved.action, stale.action, stale.principal, stale.subject) == (
        "artifact.record", "approval.stale", "builder", f"approval:{request_id}")
    assert stale.data.items() >= {"task_id": task.id, "transition": "merge", "requested_by": "merger",
                                  "from_version": task.version, "to_version": changed.version,
                                  "cause": "artifact.record", "why": why}.items()
    assert lint.inbox(actor="alice") == []  # nothing to decide: not in the inbox, not pending
    assert [r.id for r in lint.list_requests(status="stale")] == [request_id]
    assert lint.list_requests(status="pending") == []

    # deciding it is refused with what happened and what to do, on the record, and changes nothing
    for verb, call in (("approve", lambda: lint.approve_request(request_id, actor="alice")),
                       ("reject", lambda: lint.reject_request(request_id, actor="bob", note="too late"))):
        error, event = refused_decision(lint, call, ApprovalStale, verb, "alice" if verb == "approve" else "bob",
                                        request_id)
        assert isinstance(error, StaleVersion) and error.exit_code == StaleVersion.exit_code
        assert (error.request_id, error.task_id, error.expected, error.actual) == (
            request_id, task.id, task.version, changed.version)
        assert why in error.message and "nothing to decide" in error.message and "asks again" in error.message
        assert event.data["error"]["request_id"] == request_id
    assert lint.get_task(task.id) == changed
    assert lint.get_request(request_id).status == "stale"

    # the merger asks again for the task as it is now, and that one goes through
    again = pending(lambda: lint.transition(task.id, "merge", actor="merger", expected_version=changed.version))
    assert again.created and again.request_id != request_id
    lint.approve_request(again.request_id, actor="alice")
    assert lint.get_task(task.id).state == "merged"
    assert lint.verify_audit()[1] is None


@pytest.mark.parametrize("change", ["transition", "edit", "check", "assign", "adopt"])
def test_every_write_that_moves_a_task_makes_its_pending_requests_stale(acme, change):
    task = release_task(acme)
    shipper = ask_ship(acme, task).request_id
    other_writes = ask_ship(acme, task, writes={"version": "1.2"}).request_id
    unrelated = ask_ship(acme, release_task(acme, "another release")).request_id
    actor, cause = {
        "transition": ("alice", "transition 'drop'"), "edit": ("alice", "task.edit"),
        "check": ("shipper", "check.record"), "assign": ("alice", "task.assign"), "adopt": ("alice", "task.adopt"),
    }[change]
    if change == "transition":
        acme.transition(task.id, "drop", actor="alice", expected_version=task.version)
    elif change == "edit":
        acme.hold(task.id, actor="alice")
        acme.edit_fields(task.id, {"notes": "edited by hand"}, actor="alice")
    elif change == "check":
        acme.record_check(task.id, "smoke", passed=True, actor="shipper")
    elif change == "assign":
        acme.assign(task.id, actor="alice", priority=5)
    else:
        parent = simple_task(acme, "hotfix", "the parent")
        acme.adopt(parent.id, task.id, actor="alice",
                   packet={"subproblem": "ship it", "desired_output": "a release", "success_condition": "live"})

    stale = {e.subject: e for e in acme.audit_log(action="approval.stale")}
    assert sorted(stale) == sorted([f"approval:{shipper}", f"approval:{other_writes}"])
    for event in stale.values():
        assert (event.principal, event.data["cause"], event.data["from_version"]) == (actor, cause, task.version)
    assert {r.id: r.status for r in acme.list_requests()} == {shipper: "stale", other_writes: "stale",
                                                              unrelated: "pending"}
    assert acme.verify_audit()[1] is None


def test_approving_when_the_contract_or_rights_no_longer_hold_marks_the_request_stale(store, lint):
    first, second = verified(lint), verified(lint)
    by_spec = pending(lambda: lint.transition(first.id, "merge", actor="merger",
                                              expected_version=first.version)).request_id
    by_pause = pending(lambda: lint.transition(second.id, "merge", actor="merger",
                                               expected_version=second.version)).request_id
    lint.set_status("merger", "paused", actor="alice")
    with pytest.raises(Denied) as denied:
        lint.approve_request(by_pause, actor="alice")
    assert denied.value.policies == ("inactive-principal",)
    assert lint.get_request(by_pause).status == "stale"
    assert lint.get_task(second.id) == second

    lint.set_status("merger", "active", actor="alice")
    stricter = FIX_LINT.replace("by: [merger],  approval", "by: [merger],  requires: {checks: [security]}, approval")
    store.apply(parse_spec(stricter), applied_by="alice")  # merge now needs a check nobody recorded
    with pytest.raises(ContractViolation) as broken:
        lint.approve_request(by_spec, actor="alice")
    assert broken.value.clause == "requires.checks"
    assert lint.get_request(by_spec).status == "stale"
    assert lint.get_task(first.id) == first
    stale = lint.audit_log(action="approval.stale")
    assert [(e.subject, e.data["error"]["error"]) for e in stale] == [
        (f"approval:{by_pause}", "denied"), (f"approval:{by_spec}", "contract-violation")]
    assert lint.audit_log(action="approval.approve") == []


# -- the inbox -------------------------------------------------------------------------------------


def test_the_inbox_lists_what_each_principal_may_decide_and_never_their_own(acme):
    release = release_task(acme)
    ship = ask_ship(acme, release).request_id  # approvers: humans
    sign = ask(acme, simple_task(acme, "review"), "sign", "alice").request_id  # humans, not alice herself
    spend = ask(acme, simple_task(acme, "budget"), "spend", "shipper").request_id  # finance: carol
    deploy = pending(lambda: acme.record_tool_call("deploy", actor="shipper",
                                                   arguments={"env": "prod"})).request_id  # humans

    def inboxes():
        return {who: [r.id for r in acme.inbox(actor=who)] for who in ("alice", "bob", "carol", "shipper", "helper")}

    assert inboxes() == {"alice": [ship, deploy], "bob": [ship, sign, deploy], "carol": [ship, sign, spend, deploy],
                         "shipper": [], "helper": []}
    acme.approve_request(ship, actor="bob")
    acme.reject_request(spend, actor="carol", note="over budget")
    assert inboxes() == {"alice": [deploy], "bob": [sign, deploy], "carol": [sign, deploy], "shipper": [],
                         "helper": []}
    # the inbox carries the evidence the approver decides on
    [shown] = [r for r in acme.inbox(actor="bob") if r.id == sign]
    assert shown.evidence["requested_by"] == "alice" and shown.evidence["task"]["to"] == "signed"


def test_list_requests_shows_an_agent_only_its_own_and_humans_everything(acme):
    ship = ask_ship(acme, release_task(acme)).request_id
    sign = ask(acme, simple_task(acme, "review"), "sign", "alice").request_id
    helper_deploy = pending(lambda: acme.record_tool_call("deploy", actor="helper", arguments={})).request_id
    assert [r.id for r in acme.list_requests(actor="shipper")] == [ship]
    assert [r.id for r in acme.list_requests(actor="helper")] == [helper_deploy]
    assert [r.id for r in acme.list_requests(actor="bob")] == [ship, sign, helper_deploy]
    assert [r.id for r in acme.list_requests(actor="bob", requested_by="alice")] == [sign]
    acme.approve_request(sign, actor="bob")
    assert [r.id for r in acme.list_requests(status="pending")] == [ship, helper_deploy]
    with pytest.raises(NotFound):
        acme.get_request(sign, actor="helper")  # neither the requester nor an approver
    assert acme.get_request(ship, actor="shipper").id == ship


# -- counts per edge -------------------------------------------------------------------------------


def test_approval_stats_count_each_edge(acme, clock):
    # release.ship: approved, rejected, stale, pending
    approved = ask_ship(acme, release_task(acme, "r1")).request_id
    acme.approve_request(approved, actor="alice")
    rejected = ask_ship(acme, release_task(acme, "r2")).request_id
    acme.reject_request(rejected, actor="bob", note="no")
    r3 = release_task(acme, "r3")
    stale = ask_ship(acme, r3).request_id
    acme.record_check(r3.id, "smoke", passed=True, actor="shipper")
    with pytest.raises(StaleVersion):
        acme.approve_request(stale, actor="alice")
    ask_ship(acme, release_task(acme, "r4"))
    # hotfix.apply: one expired, one pending (asked after the first expired)
    ask(acme, simple_task(acme, "hotfix"), "apply", "shipper")
    clock.now += timedelta(hours=2)
    assert acme.expire_requests() == 1
    ask(acme, simple_task(acme, "hotfix"), "apply", "shipper")
    # tool:deploy: one approved and used, one pending
    used = pending(lambda: acme.record_tool_call("deploy", actor="shipper", arguments={"env": "prod"})).request_id
    acme.approve_request(used, actor="alice")
    acme.record_tool_call("deploy", actor="shipper", arguments={"env": "prod"})
    assert acme.get_request(used).status == "used"
    pending(lambda: acme.record_tool_call("deploy", actor="shipper", arguments={"env": "staging"}))

    zero = {"approved": 0, "rejected": 0, "expired": 0, "stale": 0, "pending": 0}
    few = "decided in 30 days: too few to judge (20 needed)"  # the verdicts: tests/test_review_volume.py
    assert acme.approval_stats() == [
        {**zero, "edge": "hotfix.apply", "requested": 2, "expired": 1, "pending": 1, "decided": 0,
         "approval_rate": None, "verdict": "too-few", "summary": f"0 {few}"},
        {**zero, "edge": "release.ship", "requested": 4, "approved": 1, "rejected": 1, "stale": 1, "pending": 1,
         "decided": 2, "approval_rate": 0.5, "verdict": "too-few", "summary": f"2 {few}"},
        {**zero, "edge": "tool:deploy", "requested": 2, "approved": 1, "pending": 1, "decided": 1,
         "approval_rate": 1.0, "verdict": "too-few", "summary": f"1 {few}"},
    ]


# -- tools on an approval edge ---------------------------------------------------------------------


def test_a_tool_on_an_approval_edge_needs_an_approved_request_per_identical_call(acme):
    prod = {"env": "prod", "ref": "v1.1"}
    before = last_seq(acme)
    first = pending(lambda: acme.record_tool_call("deploy", actor="shipper", arguments=prod,
                                                  rationale="Release 1.1 passed QA."))
    assert first.created is True and first.approvers == ["human"]
    [event] = since(acme, before)
    assert (event.action, event.principal, event.subject) == ("approval.request", "shipper", "tool:deploy")
    request = acme.get_request(first.request_id)
    assert (request.kind, request.tool, request.edge, request.task_id, request.payload) == (
        "tool", "deploy", "tool:deploy", None, prod)
    assert request.evidence == {"requested_by": "shipper", "tool": "deploy", "arguments": prod,
                                "rationale": "Release 1.1 passed QA."}
    again = pending(lambda: acme.record_tool_call("deploy", actor="shipper", arguments=prod))
    assert (again.request_id, again.created) == (first.request_id, False)
    assert acme.audit_log(action="tool.call") == []

    acme.approve_request(first.request_id, actor="alice", note="go")
    assert acme.get_request(first.request_id).status == "approved"
    assert acme.audit_log(action="tool.call") == []  # approving a tool call does not make it

    # other arguments, or another agent, are not covered by the approval
    staging = pending(lambda: acme.record_tool_call("deploy", actor="shipper", arguments={**prod, "env": "staging"}))
    assert staging.created is True and staging.request_id != first.request_id
    helper = pending(lambda: acme.record_tool_call("deploy", actor="helper", arguments=prod))
    assert helper.created is True and helper.request_id not in (first.request_id, staging.request_id)
    assert acme.get_request(first.request_id).status == "approved"

    before = last_seq(acme)
    acme.record_tool_call("deploy", actor="shipper", arguments=prod)  # the approved call: goes ahead
    [event] = since(acme, before)
    assert (event.action, event.principal, event.subject, event.data) == (
        "tool.call", "shipper", "tool:deploy", {"arguments": prod})
    assert acme.get_request(first.request_id).status == "used"

    third = pending(lambda: acme.record_tool_call("deploy", actor="shipper", arguments=prod))  # used up
    assert third.created is True and third.request_id not in (first.request_id, staging.request_id,
                                                              helper.request_id)
    assert [e.principal for e in acme.audit_log(action="tool.call")] == ["shipper"]
    acme.record_tool_call("lint", actor="shipper", arguments={"path": "src"})  # no approval edge: no request
    assert [e.subject for e in acme.audit_log(action="tool.call")] == ["tool:deploy", "tool:lint"]
    assert acme.verify_audit()[1] is None


# -- tenants ---------------------------------------------------------------------------------------


SECRET_TITLE = "acme secret launch"


def test_a_request_of_one_company_cannot_be_read_or_decided_from_another(store, acme):
    store.apply(parse_spec(SPEC.replace("company: acme", "company: globex")), applied_by="alice")
    globex = store.company("globex")
    acme_task = release_task(acme, SECRET_TITLE)
    theirs = ask_ship(acme, acme_task).request_id
    ours = ask(globex, simple_task(globex, "review"), "sign", "bob").request_id
    assert ours != theirs
    globex_task = globex.get_task(1)
    attacker = store.session(acme.issue_token("alice", actor="alice").token)  # acme's alice, authenticated
    acme_seq, globex_seq = last_seq(acme), last_seq(globex)

    def refusal(call, error_type):
        with pytest.raises(error_type) as info:
            call()
        text = f"{info.value} {info.value.to_dict()!r}"
        assert SECRET_TITLE not in text and "shipper" not in text and "release" not in text, text
        return info.value

    # globex's own principals cannot reach acme's request by its id
    refusal(lambda: globex.get_request(theirs), NotFound)
    refusal(lambda: globex.get_request(theirs, actor="alice"), NotFound)
    refusal(lambda: globex.approve_request(theirs, actor="alice"), NotFound)
    refusal(lambda: globex.reject_request(theirs, actor="alice", note="mine now"), NotFound)
    # acme's principal cannot act in globex, nor reach globex's request from its own company
    for call in (lambda: globex.approve_request(ours, actor=attacker.principal),
                 lambda: globex.reject_request(ours, actor=attacker.principal, note="x"),
                 lambda: globex.inbox(actor=attacker.principal),
                 lambda: globex.list_requests(actor=attacker.principal),
                 lambda: globex.get_request(ours, actor=attacker.principal)):
        refusal(call, Denied)
    refusal(lambda: attacker.approve_request(ours), NotFound)
    refusal(lambda: attacker.get_request(ours), NotFound)

    assert [r.id for r in globex.list_requests()] == [ours]
    assert [r.id for r in globex.inbox(actor="alice")] == [ours]
    assert [s["edge"] for s in globex.approval_stats()] == ["review.sign"]
    assert [r.id for r in attacker.inbox()] == [theirs]  # acme's inbox holds only acme's request
    assert globex.get_request(ours).status == "pending" and globex.get_task(1) == globex_task
    assert acme.get_request(theirs).status == "pending" and acme.get_task(acme_task.id) == acme_task
    # each refused decision is on the record of the company it was attempted in, and only there
    decisions = ("approval.approve.rejected", "approval.reject.rejected")
    assert [(e.action, e.principal) for e in since(globex, globex_seq) if e.action in decisions] == [
        ("approval.approve.rejected", "alice"), ("approval.reject.rejected", "alice"),
        ("approval.approve.rejected", "acme/alice"), ("approval.reject.rejected", "acme/alice")]
    assert [(e.action, e.principal, e.subject) for e in since(acme, acme_seq)] == [
        ("approval.approve.rejected", "alice", f"approval:{ours}")]
    assert SECRET_TITLE not in repr(globex.audit_log())
    assert acme.verify_audit()[1] is None and globex.verify_audit()[1] is None


def test_a_session_decides_as_its_own_principal_only(store, acme):
    task = release_task(acme)
    request_id = ask_ship(acme, task).request_id
    bob = store.session(acme.issue_token("bob", actor="alice").token)
    with pytest.raises(TypeError):
        bob.approve_request(request_id, actor="alice")
    assert [r.id for r in bob.inbox()] == [request_id]
    decided = bob.approve_request(request_id, note="ok")
    assert decided.decided_by == "bob"
    assert acme.get_task(task.id).state == "live"


# -- the record ------------------------------------------------------------------------------------


def test_every_step_of_an_approval_is_an_audit_event(acme, clock):
    review = ask(acme, simple_task(acme, "review"), "sign", "alice").request_id
    with pytest.raises(Denied):
        acme.approve_request(review, actor="alice")
    with pytest.raises(ContractViolation):
        acme.approve_request(review, actor="shipper")
    acme.approve_request(review, actor="bob")
    released = release_task(acme)
    ship = ask_ship(acme, released).request_id
    acme.reject_request(ship, actor="carol", note="wait")
    hot = ask(acme, simple_task(acme, "hotfix"), "apply", "shipper").request_id
    clock.now += timedelta(hours=2)
    acme.expire_requests()
    with pytest.raises(UsageError):
        acme.approve_request(hot, actor="alice")
    stale = ask_ship(acme, released, writes={"version": "2.0"}).request_id
    acme.record_check(released.id, "smoke", passed=True, actor="shipper")
    with pytest.raises(ApprovalStale):
        acme.approve_request(stale, actor="alice")
    with pytest.raises(NotFound):
        acme.reject_request(9999, actor="alice", note="nothing")

    steps = [(e.action, e.principal, e.subject) for e in acme.audit_log()
             if e.action.startswith("approval.") or e.data.get("approved_by")]
    assert steps == [
        ("approval.request", "alice", "task:1"),
        ("approval.approve.rejected", "alice", f"approval:{review}"),
        ("approval.approve.rejected", "shipper", f"approval:{review}"),
        ("approval.approve", "bob", f"approval:{review}"),
        ("task.transition", "alice", "task:1"),
        ("approval.request", "shipper", f"task:{released.id}"),
        ("approval.reject", "carol", f"approval:{ship}"),
        ("approval.request", "shipper", "task:3"),
        ("approval.expire", "system", f"approval:{hot}"),
        ("approval.approve.rejected", "alice", f"approval:{hot}"),
        ("approval.request", "shipper", f"task:{released.id}"),
        ("approval.stale", "shipper", f"approval:{stale}"),  # when the shipper's check moved the task
        ("approval.approve.rejected", "alice", f"approval:{stale}"),
        ("approval.reject.rejected", "alice", "approval:9999"),
    ]
    assert acme.verify_audit()[1] is None


# -- the CLI: bulk decisions -----------------------------------------------------------------------


def test_roster_approve_and_reject_decide_many_requests_each_on_its_own(cli, db_url, tmp_path):
    spec_path = cli.workspace / "roster.yaml"
    spec_path.write_text(FIX_LINT, encoding="utf-8")

    def roster(*args: str, token: str | None = None):
        return cli("--db", db_url, *(("--token", token) if token else ()), *args)

    assert roster("apply").exit_code == 0
    bob = json.loads(roster("token", "issue", "bob", "--json").output)["token"]
    store = Store.open(db_url, artifact_root=tmp_path / "art")
    try:
        company = store.company("acme")
        tasks = [verified(company) for _ in range(4)]
        ids = [pending(lambda t=t: company.transition(t.id, "merge", actor="merger", expected_version=t.version))
               .request_id for t in tasks]
        company.record_check(tasks[1].id, "lint_clean", passed=True, actor="qa")  # the second request goes stale

        approved = roster("approve", str(ids[0]), str(ids[1]), str(ids[2]), "--note", "merge them", token=bob)

        assert approved.exit_code == ApprovalStale.exit_code == 6  # the first (here the only) refusal's
        lines = " ".join(approved.stdout.split())
        assert f"request {ids[0]} (fix-lint.merge) approved; task {tasks[0].id} took merge" in lines
        assert f"request {ids[2]} (fix-lint.merge) approved; task {tasks[2].id} took merge" in lines
        errors = " ".join(approved.stderr.split())
        assert f"request {ids[1]}: error: request {ids[1]} is stale" in errors and "check.record by 'qa'" in errors
        assert [company.get_task(t.id).state for t in tasks] == ["merged", "verified", "merged", "verified"]
        assert {r.id: r.status for r in company.list_requests()} == {
            ids[0]: "approved", ids[1]: "stale", ids[2]: "approved", ids[3]: "pending"}

        # a list in JSON; one bad id does not stop the next
        rejected = roster("reject", str(ids[3]), "9999", str(ids[0]), "--note", "not now", "--json", token=bob)
        assert rejected.exit_code == NotFound.exit_code  # the first refusal: 9999
        results = json.loads(rejected.stdout)
        assert [(r["id"], r["ok"]) for r in results] == [(ids[3], True), (9999, False), (ids[0], False)]
        assert results[0]["request"]["status"] == "rejected" and results[0]["request"]["note"] == "not now"
        assert results[1]["error"]["error"] == "not-found" and results[2]["error"]["error"] == "usage"
        assert company.get_request(ids[3]).status == "rejected"

        # one id keeps the single-request shapes; the list shows why a stale request is stale
        assert roster("approve", str(ids[1]), token=bob).exit_code == 6
        listed = " ".join(roster("approvals", "list", token=bob).stdout.split())
        assert f"qa: task {tasks[1].id} moved from version {tasks[1].version} to {tasks[1].version + 1}" in listed
        assert all(roster("approve", str(i), "--json", token=bob).exit_code == 2 for i in ids[:1])
    finally:
        store.close()
