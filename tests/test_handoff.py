"""Hand-off: a human holds a task (its lease), edits fields and artifacts while agents wait, releases it
with a note; the next principal sees what changed since it last looked (fields before/after, artifact
diffs, notes, who), bounded in size. Real SQLite files, no mocks."""

from __future__ import annotations

import pytest
from conftest import FIX_LINT, GOOD_SPEC, StepClock

from roster.errors import (
    Denied,
    InvalidFields,
    LeaseHeld,
    NotFound,
    PayloadTooLarge,
    StaleVersion,
    UsageError,
)
from roster.specfile import parse_spec
from roster.store import Store, audit

V1 = b"import os, sys\nprint(os.name)\n"
V2 = b"import os\nimport sys\nprint(os.name)\n"


def record_view(store, company, task_id, principal):
    with store.write() as conn:
        head, cache = company._head_txn(conn)
        company.record_view_txn(conn, head, task_id, principal)
        audit.save_head(conn, head)


def test_hold_takes_the_lease_so_agents_wait(company, new_task):
    task = new_task()
    lease = company.hold(task.id, actor="alice", note="looking at it")
    held = company.get_task(task.id)
    assert held.lease_holder == "alice" and held.lease_run == "hold:alice"
    assert lease.holder == "alice" and lease.fencing_token == held.fencing_token
    with pytest.raises(LeaseHeld):
        company.claim(task.id, actor="planner", run_id="r1")
    with pytest.raises(LeaseHeld):
        company.transition(task.id, "plan", actor="planner", expected_version=held.version,
                           writes={"spec": GOOD_SPEC})
    with pytest.raises(LeaseHeld):
        company.hold(task.id, actor="bob")
    assert company.get_task(task.id).state == "found"
    event = company.audit_log(action="task.hold")[-1]
    assert event.principal == "alice" and event.data["note"] == "looking at it"


def test_a_hold_lasts_hours_not_a_lease_minute_and_has_a_ceiling(company, new_task):
    task = new_task()
    with pytest.raises(UsageError):
        company.hold(task.id, actor="alice", ttl=8 * 86400)
    assert company.get_task(task.id).lease_holder is None
    lease = company.hold(task.id, actor="alice", ttl=2 * 86400)  # longer than any run lease may be
    assert lease.expires_at > company.get_task(task.id).updated_at


def test_the_holder_edits_fields_validated_against_the_schema(company, new_task):
    task = new_task()
    company.hold(task.id, actor="alice")
    before = company.get_task(task.id)
    edited = company.edit_fields(task.id, {"rule": "E302", "count": 3}, actor="alice", note="narrowed")
    assert edited.fields == {"rule": "E302", "count": 3} and edited.version == before.version + 1
    assert edited.state == before.state
    event = company.audit_log(action="task.edit")[-1]
    assert event.principal == "alice" and event.data["writes"] == {"rule": "E302", "count": 3}
    assert event.data["note"] == "narrowed"
    removed = company.edit_fields(task.id, {"count": None}, actor="alice")
    assert removed.fields == {"rule": "E302"}


@pytest.mark.parametrize("writes", [{"count": -1}, {"spec": "too short"}, {"unknown": "x"}, {"rule": 5}])
def test_a_schema_breaking_edit_is_refused_and_changes_nothing(company, new_task, writes):
    task = new_task()
    company.hold(task.id, actor="alice")
    before = company.get_task(task.id)
    with pytest.raises(InvalidFields):
        company.edit_fields(task.id, writes, actor="alice")
    assert company.get_task(task.id) == before
    assert company.audit_log(action="task.edit") == []
    rejected = company.audit_log(action="task.edit.rejected")
    assert len(rejected) == 1 and rejected[0].data["error"]["error"] == "invalid-fields"
    assert company.verify_audit()[1] is None


def test_an_oversized_edit_is_refused_on_record(company, new_task):
    task = new_task()
    company.hold(task.id, actor="alice")
    before = company.get_task(task.id)
    with pytest.raises(PayloadTooLarge):
        company.edit_fields(task.id, {"spec": "x" * 70_000}, actor="alice")
    assert company.get_task(task.id) == before
    rejected = company.audit_log(action="task.edit.rejected")
    assert [e.data["error"]["error"] for e in rejected] == ["payload-too-large"]


def test_a_stale_expected_version_is_refused(company, new_task):
    task = new_task()
    company.hold(task.id, actor="alice")
    with pytest.raises(StaleVersion):
        company.edit_fields(task.id, {"rule": "E1"}, actor="alice", expected_version=task.version - 1)
    assert company.get_task(task.id).fields == {"rule": "E501"}
    edited = company.edit_fields(task.id, {"rule": "E1"}, actor="alice", expected_version=task.version)
    assert edited.fields == {"rule": "E1"}


def test_only_the_holder_may_edit_fields(company, new_task):
    task = new_task()
    with pytest.raises(UsageError, match="hold"):
        company.edit_fields(task.id, {"rule": "E1"}, actor="alice")  # nobody holds it
    company.hold(task.id, actor="alice")
    with pytest.raises(LeaseHeld):
        company.edit_fields(task.id, {"rule": "E1"}, actor="bob")  # alice holds it
    with pytest.raises(LeaseHeld):
        company.edit_fields(task.id, {"rule": "E1"}, actor="planner")
    assert company.get_task(task.id).fields == {"rule": "E501"}
    refusals = company.audit_log(action="task.edit.rejected")
    assert [e.principal for e in refusals] == ["alice", "bob", "planner"]


def test_a_run_lease_is_not_a_hold_for_edits_by_others(company, new_task):
    task = new_task()
    company.claim(task.id, actor="planner", run_id="r1")
    with pytest.raises(LeaseHeld):
        company.edit_fields(task.id, {"rule": "E1"}, actor="alice")
    with pytest.raises(UsageError):
        company.release_hold(task.id, actor="planner")  # a run's lease is not a hold
    assert company.get_task(task.id).lease_holder == "planner"


def test_an_expired_hold_no_longer_allows_edits(db_path, tmp_path, clock):
    store = Store.open(f"sqlite:///{db_path}", clock=clock, artifact_root=tmp_path / "a")
    try:
        store.apply(parse_spec(FIX_LINT), applied_by="alice")
        company = store.company("acme")
        task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})
        company.hold(task.id, actor="alice", ttl=60)
        clock.advance(61)
        with pytest.raises(UsageError):
            company.edit_fields(task.id, {"rule": "E2"}, actor="alice")
        assert company.claim(task.id, actor="planner", run_id="r1").holder == "planner"
    finally:
        store.close()


def test_release_hold_frees_the_task_with_a_note(company, new_task):
    task = new_task()
    company.hold(task.id, actor="alice")
    with pytest.raises(UsageError, match="not held by 'bob'"):
        company.release_hold(task.id, actor="bob")
    assert company.get_task(task.id).lease_holder == "alice"
    company.release_hold(task.id, actor="alice", note="spec fixed, over to you")
    released = company.get_task(task.id)
    assert released.lease_holder is None and released.lease_expires_at is None
    event = company.audit_log(action="task.handoff")[-1]
    assert event.principal == "alice" and event.subject == f"task:{task.id}"
    assert event.data["note"] == "spec fixed, over to you"
    assert company.claim(task.id, actor="planner", run_id="r1").holder == "planner"
    with pytest.raises(UsageError):
        company.release_hold(task.id, actor="alice")  # no longer held
    assert company.verify_audit()[1] is None


def test_release_hold_by_someone_when_nobody_holds_is_refused(company, new_task):
    task = new_task()
    with pytest.raises(UsageError, match="nobody"):
        company.release_hold(task.id, actor="alice")
    assert company.audit_log(action="task.handoff") == []


def test_the_handoff_shows_what_changed_since_the_agent_last_looked(store, company, new_task):
    task = new_task()
    company.record_artifact(task.id, "patch", V1, actor="builder", name="fix.diff")
    record_view(store, company, task.id, "builder")
    company.hold(task.id, actor="alice")
    company.record_artifact(task.id, "patch", V2, actor="alice", name="fix.diff",
                            reason="one import per line")
    company.edit_fields(task.id, {"rule": "E401"}, actor="alice")
    company.release_hold(task.id, actor="alice", note="it was E401, not E501")
    result = company.handoff(task.id, "builder")
    assert result is not None
    assert result["changed_by"] == ["alice"]
    assert result["fields"] == {"rule": {"before": "E501", "after": "E401"}}
    assert result["version"] == company.get_task(task.id).version
    assert result["since_version"] < result["version"]
    [artifact] = result["artifacts"]
    assert (artifact["name"], artifact["from_version"], artifact["to_version"]) == ("fix.diff", 1, 2)
    assert artifact["by"] == "alice" and artifact["reason"] == "one import per line"
    diff = artifact["diff"].splitlines()
    assert "-import os, sys" in diff and "+import os" in diff and "+import sys" in diff
    assert [(n["by"], n["note"]) for n in result["notes"]] == [("alice", "it was E401, not E501")]
    actions = [e["action"] for e in result["events"]]
    assert {"task.hold", "artifact.record", "task.edit", "task.handoff"} <= set(actions)
    assert result["changes"] == len(result["events"])
    # the one who released it has seen everything; the agent, once it looks again, too
    assert company.handoff(task.id, "alice") is None
    record_view(store, company, task.id, "builder")
    assert company.handoff(task.id, "builder") is None


def test_a_new_artifact_shows_as_a_diff_against_nothing(store, company, new_task):
    task = new_task()
    record_view(store, company, task.id, "builder")
    company.hold(task.id, actor="alice")
    company.record_artifact(task.id, "patch", V1, actor="alice", name="fix.diff")
    company.release_hold(task.id, actor="alice")
    [artifact] = company.handoff(task.id, "builder")["artifacts"]
    assert artifact["from_version"] is None and artifact["to_version"] == 1
    assert artifact["diff"].startswith("--- /dev/null")


def test_no_handoff_without_a_view_or_right_after_one(store, company, new_task):
    task = new_task()
    assert company.handoff(task.id, "builder") is None
    company.hold(task.id, actor="alice")
    company.edit_fields(task.id, {"rule": "E1"}, actor="alice")
    assert company.handoff(task.id, "builder") is None  # never looked: nothing to compare with
    record_view(store, company, task.id, "builder")
    assert company.handoff(task.id, "builder") is None
    company.edit_fields(task.id, {"rule": "E2"}, actor="alice")
    assert company.handoff(task.id, "builder")["fields"] == {"rule": {"before": "E1", "after": "E2"}}


def test_the_handoff_leaves_out_the_principals_own_changes(store, company, new_task):
    task = new_task()
    record_view(store, company, task.id, "planner")
    company.transition(task.id, "plan", actor="planner", expected_version=task.version,
                       writes={"spec": GOOD_SPEC}, rationale="split per line")
    company.hold(task.id, actor="alice")
    company.edit_fields(task.id, {"count": 2}, actor="alice", note="two places")
    result = company.handoff(task.id, "planner")
    assert result["changed_by"] == ["alice"]
    assert all(e["by"] == "alice" for e in result["events"])
    assert [n["note"] for n in result["notes"]] == ["two places"]


def test_the_handoff_is_bounded(store, company, new_task):
    task = new_task()
    lines = b"".join(b"line %d\n" % i for i in range(1000))
    company.record_artifact(task.id, "patch", lines, actor="builder")
    record_view(store, company, task.id, "builder")
    company.hold(task.id, actor="alice")
    for i in range(200):
        company.edit_fields(task.id, {"count": i}, actor="alice")
    company.record_artifact(task.id, "patch", b"".join(b"row %d\n" % i for i in range(1000)), actor="alice")
    result = company.handoff(task.id, "builder")
    assert result["changes"] >= 200
    assert len(result["events"]) <= 20
    assert result["events"][-1]["action"] == "artifact.record"  # the newest are kept
    assert result["fields"] == {"count": {"before": None, "after": 199}}
    assert len(result["artifacts"][0]["diff"].splitlines()) <= 201
    assert len(company.artifact_diff(task.id, "patch").splitlines()) > 201


def test_handoff_for_an_unknown_principal_is_not_found(company, new_task):
    task = new_task()
    with pytest.raises(NotFound):
        company.handoff(task.id, "nobody")


def test_views_are_kept_per_principal(db_path, tmp_path):
    store = Store.open(f"sqlite:///{db_path}", clock=StepClock(), artifact_root=tmp_path / "a")
    try:
        store.apply(parse_spec(FIX_LINT), applied_by="alice")
        company = store.company("acme")
        task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})
        record_view(store, company, task.id, "builder")
        company.hold(task.id, actor="alice")
        company.edit_fields(task.id, {"rule": "E2"}, actor="alice")
        record_view(store, company, task.id, "qa")
        company.edit_fields(task.id, {"rule": "E3"}, actor="alice")
        assert company.handoff(task.id, "builder")["fields"]["rule"] == {"before": "E1", "after": "E3"}
        assert company.handoff(task.id, "qa")["fields"]["rule"] == {"before": "E2", "after": "E3"}
    finally:
        store.close()


def test_a_note_and_its_author_survive_many_later_edits(store, company, new_task):
    task = new_task()
    record_view(store, company, task.id, "builder")
    company.hold(task.id, actor="bob")
    company.edit_fields(task.id, {"count": 1}, actor="bob", note="bob's reason")
    company.release_hold(task.id, actor="bob")
    company.hold(task.id, actor="alice")
    for i in range(30):
        company.edit_fields(task.id, {"count": i + 2}, actor="alice")
    result = company.handoff(task.id, "builder")
    assert len(result["events"]) <= 20 and all(e["by"] == "alice" for e in result["events"])
    assert result["changed_by"] == ["alice", "bob"]
    assert [n["note"] for n in result["notes"]] == ["bob's reason"]


def test_only_the_principals_own_changes_since_its_view_hand_off_nothing(store, company, new_task):
    task = new_task()
    record_view(store, company, task.id, "builder")
    company.record_artifact(task.id, "patch", V1, actor="builder")
    assert company.handoff(task.id, "builder") is None


def test_agent_to_agent_the_next_agent_sees_what_the_previous_one_changed_and_why(store, company, new_task):
    task = new_task()
    record_view(store, company, task.id, "builder")  # builder looked at the task once, early
    planned = company.transition(task.id, "plan", actor="planner", expected_version=task.version,
                                 writes={"spec": GOOD_SPEC}, rationale="one import per line, as PEP 8 asks")
    company.record_artifact(planned.id, "notes", b"split the imports\n", actor="planner", reason="for the builder")
    result = company.handoff(task.id, "builder")
    assert result["changed_by"] == ["planner"]
    assert result["fields"] == {"spec": {"before": None, "after": GOOD_SPEC}}
    assert [n["note"] for n in result["notes"]] == ["one import per line, as PEP 8 asks"]
    assert result["artifacts"][0]["by"] == "planner" and "+split the imports" in result["artifacts"][0]["diff"]


def test_a_read_only_agent_may_not_hold_a_task(store, company, new_task):
    store.apply(parse_spec(FIX_LINT.replace("humans:", "  watcher: {reports_to: alice, rights: {read: ['*']}}\nhumans:")),
                applied_by="alice")
    task = new_task()
    with pytest.raises(Denied):
        company.hold(task.id, actor="watcher")
    assert company.get_task(task.id).lease_holder is None
    assert company.audit_log(action="lease.claim.rejected", task_id=task.id)
