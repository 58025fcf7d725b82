"""The hash-chained audit trail: what is appended, how it is hashed, and that tampering is found.

Tamper tests edit the real SQLite file with the real ``sqlite3`` command-line program, after the store
wrote its events and released its connections, exactly as an attacker with file access would.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import rfc8785
from conftest import FIX_LINT, GOOD_SPEC, StepClock
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from roster.errors import (
    ApprovalPending,
    ContractViolation,
    Denied,
    InvalidFields,
    NotFound,
    RosterError,
    StaleVersion,
)
from roster.specfile import parse_spec
from roster.store import Store

SQLITE3 = "/usr/bin/sqlite3"
GENESIS = "0" * 64
SRC = Path(__file__).resolve().parent.parent / "src" / "roster"


# -- helpers --------------------------------------------------------------------------------------


def sql(db: Path, statements: str) -> str:
    """Run SQL on ``db`` with the sqlite3 command-line program; fail the test if it reports an error."""
    done = subprocess.run([SQLITE3, "-bail", str(db), statements], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not done.stderr, f"sqlite3 failed: {done.stderr}"
    return done.stdout


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def raw_events(db: Path, company: str = "acme") -> list[sqlite3.Row]:
    """The audit rows as stored, read with the stdlib driver (independent of Roster's code)."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM audit_events WHERE company_id = ? ORDER BY seq", (company,)).fetchall()
    finally:
        conn.close()


def canonical_hash(*, seq, ts, company, principal, action, subject, data, prev_hash, state=None) -> str:
    """SHA-256 over RFC 8785 canonical JSON, written here from the documented format, not imported.
    ``state`` (the rows the event produced) is in the hashed object only when the event has one."""
    payload = {"seq": seq, "ts": ts, "company": company, "principal": principal, "action": action,
               "subject": subject, "data": data, "prev_hash": prev_hash}
    if state is not None:
        payload["state"] = state
    return hashlib.sha256(rfc8785.dumps(payload)).hexdigest()


def appended(company, action):
    """Run ``action()``; assert it appended exactly one event and nothing else changed; return the event."""
    before = company.audit_log()
    action()
    after = company.audit_log()
    assert len(after) == len(before) + 1, [e.action for e in after[len(before):]]
    assert after[:-1] == before
    return after[-1]


def refused(company, action, error_type):
    """Run ``action()``, which must raise ``error_type``; return (exception, the one event it appended)."""
    caught = []

    def attempt():
        with pytest.raises(error_type) as info:
            action()
        caught.append(info.value)

    event = appended(company, attempt)
    return caught[0], event


def advance(company, task_id: int, state: str) -> None:
    """Move a fix-lint task from ``found`` along the happy path until it is in ``state``."""
    path = ["found", "planned", "built", "verified", "merged"]
    for target in path[1:path.index(state) + 1]:
        version = company.get_task(task_id).version
        if target == "planned":
            company.transition(task_id, "plan", actor="planner", expected_version=version, writes={"spec": GOOD_SPEC})
        elif target == "built":
            company.record_artifact(task_id, "patch", b"--- a\n+++ b\n", actor="builder")
            company.transition(task_id, "build", actor="builder", expected_version=version + 1,
                               writes={"branch": "fix/e501"})
        elif target == "verified":
            company.record_check(task_id, "lint_clean", passed=True, actor="qa")
            company.transition(task_id, "verify", actor="qa", expected_version=version + 1)
        elif target == "merged":
            with pytest.raises(ApprovalPending) as asked:
                company.transition(task_id, "merge", actor="merger", expected_version=version)
            company.approve_request(asked.value.request_id, actor="alice")


@pytest.fixture
def chain(company, new_task, store):
    """Six events on disk, then every store connection closed so the sqlite3 CLI can edit the file:

    1 spec.apply, 2 task.create (task 1), 3 task.transition plan, 4 task.create (task 2),
    5 task.transition.rejected (builder may not reject), 6 task.transition reject.
    """
    new_task()
    company.transition(1, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    new_task(title="second")
    with pytest.raises(ContractViolation):
        company.transition(2, "reject", actor="builder", expected_version=1)
    company.transition(2, "reject", actor="alice", expected_version=1)
    assert [e.action for e in company.audit_log()] == [
        "spec.apply", "task.create", "task.transition", "task.create", "task.transition.rejected",
        "task.transition"]
    store.close()
    return company


def where(seq: int, company: str = "acme") -> str:
    return f"company_id = '{company}' AND seq = {seq}"


# -- what is appended -----------------------------------------------------------------------------


def test_spec_apply_appends_one_event_and_reapplying_the_same_spec_appends_none(store, company):
    [first] = company.audit_log()
    assert (first.seq, first.principal, first.action, first.subject) == (1, "alice", "spec.apply", "company:acme")
    assert first.data["revision"] == 1

    store.apply(parse_spec(FIX_LINT), applied_by="bob")
    assert len(company.audit_log()) == 1

    changed = parse_spec(FIX_LINT + "  carol: {}\n")
    event = appended(company, lambda: store.apply(changed, applied_by="bob"))
    assert (event.principal, event.action, event.subject) == ("bob", "spec.apply", "company:acme")
    assert event.data["revision"] == 2 and "humans: + carol" in event.data["changes"]


def test_every_mutation_of_a_task_lifecycle_appends_exactly_one_event(company):
    def check(action, principal, kind, data):
        event = appended(company, action)
        assert (event.principal, event.action, event.subject) == (principal, kind, "task:1")
        assert {key: event.data.get(key) for key in data} == data

    check(lambda: company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"}),
          "alice", "task.create", {"state": "found", "version": 1, "fields": {"rule": "E501"}})
    check(lambda: company.transition(1, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC}),
          "planner", "task.transition", {"transition": "plan", "to": "planned", "version": 2,
                                         "writes": {"spec": GOOD_SPEC}})
    check(lambda: company.record_artifact(1, "patch", b"diff", actor="builder"), "builder", "artifact.record",
          {"kind": "patch", "sha256": hashlib.sha256(b"diff").hexdigest(), "version": 3})
    check(lambda: company.transition(1, "build", actor="builder", expected_version=3, writes={"branch": "b"}),
          "builder", "task.transition", {"transition": "build", "to": "built", "version": 4})
    check(lambda: company.record_check(1, "lint_clean", passed=True, actor="qa"),
          "qa", "check.record", {"name": "lint_clean", "passed": True, "version": 5})
    check(lambda: company.transition(1, "verify", actor="qa", expected_version=5),
          "qa", "task.transition", {"transition": "verify", "to": "verified", "version": 6})
    # on the approval edge the move appends one event, the request, and runs nothing
    error, event = refused(company, lambda: company.transition(1, "merge", actor="merger", expected_version=6),
                           ApprovalPending)
    assert (event.principal, event.action, event.subject) == ("merger", "approval.request", "task:1")
    assert event.data["request_id"] == error.request_id and event.data["edge"] == "fix-lint.merge"
    assert company.get_task(1).version == 6
    # approving appends the decision and the transition it ran, in one transaction
    before = company.audit_log()
    company.approve_request(error.request_id, actor="alice")
    decision, moved = company.audit_log(after_seq=before[-1].seq)
    assert company.audit_log()[:len(before)] == before
    assert (decision.principal, decision.action, decision.subject) == (
        "alice", "approval.approve", f"approval:{error.request_id}")
    assert (moved.principal, moved.action, moved.subject) == ("merger", "task.transition", "task:1")
    assert {k: moved.data.get(k) for k in ("transition", "to", "version", "approved_by", "approval_request")} == {
        "transition": "merge", "to": "merged", "version": 7, "approved_by": "alice",
        "approval_request": error.request_id}
    assert company.get_task(1).state == "merged"
    assert company.verify_audit() == (10, None)


@pytest.mark.parametrize(("state", "create_fields", "transition", "actor", "writes", "clause"), [
    ("found", {"rule": "E501"}, "plan", "builder", {"spec": GOOD_SPEC}, "by"),
    ("found", {"rule": "E501"}, "build", "builder", {"branch": "b"}, "from"),
    ("found", {"rule": "E501"}, "plan", "planner", {"branch": "b"}, "writes"),
    ("found", {"rule": "E501"}, "plan", "planner", {"spec": "too short"}, "fields"),
    ("found", {"rule": "E501"}, "fly", "planner", {}, "transition"),
    ("found", {}, "plan", "planner", {"spec": GOOD_SPEC}, "requires.fields"),
    ("planned", {"rule": "E501"}, "build", "builder", {"branch": "b"}, "produces"),
    ("built", {"rule": "E501"}, "verify", "qa", {}, "requires.checks"),
])
def test_refused_transition_is_audited_with_code_and_clause_and_leaves_the_task_unchanged(
        company, new_task, state, create_fields, transition, actor, writes, clause):
    task = new_task(fields=create_fields)
    advance(company, task.id, state)
    before = company.get_task(task.id)

    error, event = refused(company, lambda: company.transition(
        task.id, transition, actor=actor, expected_version=before.version, writes=writes), ContractViolation)

    assert error.clause == clause
    assert (event.principal, event.action, event.subject) == (actor, "task.transition.rejected", f"task:{task.id}")
    assert event.data["error"]["error"] == "contract-violation"
    assert event.data["error"]["clause"] == clause
    assert event.data["transition"] == transition
    assert company.get_task(task.id) == before
    assert company.verify_audit()[1] is None


def test_stale_version_is_audited_and_leaves_the_task_unchanged(company, new_task):
    task = new_task()
    error, event = refused(company, lambda: company.transition(
        task.id, "plan", actor="planner", expected_version=5, writes={"spec": GOOD_SPEC}), StaleVersion)
    assert (event.principal, event.action, event.subject) == ("planner", "task.transition.rejected", "task:1")
    assert event.data["error"]["error"] == "stale-version" and event.data["error"]["actual"] == 1
    assert company.get_task(task.id) == task


def test_refused_create_is_audited_and_creates_no_task(company):
    error, event = refused(company, lambda: company.create_task(
        workflow="fix-lint", title="t", actor="alice", fields={"rule": 5}), InvalidFields)
    assert (event.principal, event.action, event.subject) == ("alice", "task.create.rejected", "workflow:fix-lint")
    assert event.data["error"]["error"] == "invalid-fields"
    assert company.list_tasks() == []


def test_a_move_on_an_approval_edge_appends_a_request_not_a_refusal_and_leaves_the_task_unchanged(
        company, new_task):
    task = new_task()
    advance(company, task.id, "verified")
    before = company.get_task(task.id)

    error, event = refused(company, lambda: company.transition(
        task.id, "merge", actor="merger", expected_version=before.version), ApprovalPending)

    assert (event.principal, event.action, event.subject) == ("merger", "approval.request", f"task:{task.id}")
    assert event.data["request_id"] == error.request_id
    assert event.data["approvers"] == ["human"]
    assert event.data["evidence"]["task"] == {"id": task.id, "title": before.title, "state": "verified",
                                              "version": before.version, "to": "merged"}
    assert company.audit_log(action="task.transition.rejected") == []
    assert company.get_task(task.id) == before
    assert company.verify_audit()[1] is None


def test_refused_approval_is_audited_with_the_approval_clause(company, new_task):
    task = new_task()
    advance(company, task.id, "verified")
    before = company.get_task(task.id)
    with pytest.raises(ApprovalPending) as asked:
        company.transition(task.id, "merge", actor="merger", expected_version=before.version)
    request_id = asked.value.request_id
    error, event = refused(company, lambda: company.approve_request(request_id, actor="planner"), ContractViolation)
    assert (event.principal, event.action, event.subject) == ("planner", "approval.approve.rejected",
                                                              f"approval:{request_id}")
    assert event.data["error"]["error"] == "contract-violation"
    assert event.data["error"]["clause"] == error.clause == "approval.by"
    error, event = refused(company, lambda: company.reject_request(request_id, actor="planner", note="no"),
                           ContractViolation)
    assert (event.principal, event.action, event.subject) == ("planner", "approval.reject.rejected",
                                                              f"approval:{request_id}")
    assert event.data["error"]["clause"] == error.clause == "approval.by"
    assert company.get_request(request_id).status == "pending"
    assert company.get_task(task.id) == before


def test_refused_check_and_artifact_are_audited_and_change_nothing(company, new_task):
    task = new_task()
    _, event = refused(company, lambda: company.record_check(99, "lint_clean", passed=True, actor="qa"), NotFound)
    assert (event.principal, event.action, event.subject) == ("qa", "check.record.rejected", "task:99")
    assert event.data["error"]["error"] == "not-found"

    _, event = refused(company, lambda: company.record_artifact(task.id, "patch", b"x", actor="mallory"), Denied)
    assert (event.principal, event.action, event.subject) == ("mallory", "artifact.record.rejected", "task:1")
    assert event.data["error"]["error"] == "denied"
    assert company.get_task(task.id) == task
    assert company.list_artifacts(task.id) == []


def test_schema_valid_write_with_a_huge_integer_is_either_recorded_or_refused_on_record(company):
    """2**60 is a valid JSON Schema integer for ``count``; the write must end in one audit event either way."""
    try:
        company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501", "count": 2**60})
    except RosterError:
        assert [e.action for e in company.audit_log()] == ["spec.apply", "task.create.rejected"]
    else:
        assert [e.action for e in company.audit_log()] == ["spec.apply", "task.create"]
        assert company.verify_audit()[1] is None


# -- how it is hashed and linked ------------------------------------------------------------------


def test_stored_hash_is_sha256_of_rfc8785_canonical_json(chain, db_path):
    rows = raw_events(db_path)
    for row in rows:
        recomputed = canonical_hash(seq=row["seq"], ts=row["ts"], company=row["company_id"],
                                    principal=row["principal"], action=row["action"], subject=row["subject"],
                                    data=json.loads(row["data"]), prev_hash=row["prev_hash"],
                                    state=json.loads(row["state"]) if row["state"] is not None else None)
        assert recomputed == row["hash"], f"seq {row['seq']}"
    assert re.fullmatch(r"[0-9a-f]{64}", rows[2]["hash"])


def test_prev_hash_links_each_event_to_the_one_before_and_the_head_to_the_last(chain, db_path):
    rows = raw_events(db_path)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["prev_hash"] == GENESIS
    for before, after in zip(rows, rows[1:]):
        assert after["prev_hash"] == before["hash"]
    head = sql(db_path, "SELECT audit_seq || ' ' || audit_head FROM companies WHERE id = 'acme';").split()
    assert head == ["6", rows[-1]["hash"]]


def test_untampered_chain_verifies(chain):
    assert chain.verify_audit() == (6, None)


# -- tampering with the file ----------------------------------------------------------------------


@pytest.mark.parametrize(("seq", "column", "value"), [
    (3, "data", '{"from":"found","to":"merged"}'),
    (4, "ts", "2025-12-31T23:59:59.000000Z"),
    (2, "principal", "mallory"),
    (5, "action", "task.transition"),
    (6, "subject", "task:1"),
    (3, "hash", "f" * 64),
])
def test_editing_any_column_of_one_event_is_named_at_that_seq(chain, db_path, seq, column, value):
    sql(db_path, f"UPDATE audit_events SET {column} = {quote(value)} WHERE {where(seq)};")
    checked, broken = chain.verify_audit()
    assert broken is not None and broken[0] == seq, broken


@pytest.mark.parametrize("value", [
    '{"revision": 9007199254740993}',  # an integer outside the I-JSON range RFC 8785 accepts
    '{"revision": 1e400}',  # parses as infinity
    '{"changes": "\\ud800"}',  # a lone surrogate
])
def test_editing_data_to_json_outside_the_canonical_domain_is_named_not_a_crash(chain, db_path, value):
    sql(db_path, f"UPDATE audit_events SET data = {quote(value)} WHERE {where(1)};")
    _, broken = chain.verify_audit()
    assert broken is not None and broken[0] == 1, broken


def test_deleting_a_middle_event_names_the_missing_seq(chain, db_path):
    sql(db_path, f"DELETE FROM audit_events WHERE {where(3)};")
    _, broken = chain.verify_audit()
    assert broken is not None and broken[0] == 3 and "missing" in broken[1]


def test_replacing_the_last_event_with_a_correctly_hashed_forgery_is_caught_by_the_head(chain, db_path):
    last = raw_events(db_path)[-1]
    forged = dict(seq=6, ts=last["ts"], company="acme", principal="alice", action="task.transition",
                  subject="task:2", data={"transition": "plan", "from": "found", "to": "planned"},
                  prev_hash=last["prev_hash"])
    digest = canonical_hash(**forged)
    sql(db_path, f"BEGIN; DELETE FROM audit_events WHERE {where(6)}; "
                 "INSERT INTO audit_events (company_id, seq, ts, principal, action, subject, data, prev_hash, hash) "
                 f"VALUES ('acme', 6, {quote(forged['ts'])}, 'alice', 'task.transition', 'task:2', "
                 f"{quote(json.dumps(forged['data']))}, {quote(forged['prev_hash'])}, {quote(digest)}); COMMIT;")
    _, broken = chain.verify_audit()
    assert broken is not None and broken[0] == 6, broken


def test_an_extra_correctly_hashed_event_after_the_head_is_named(chain, db_path):
    last = raw_events(db_path)[-1]
    forged = dict(seq=7, ts="2026-01-01T00:01:00.000000Z", company="acme", principal="alice",
                  action="approval.approve", subject="approval:1", data={"edge": "fix-lint.merge"},
                  prev_hash=last["hash"])
    sql(db_path, "INSERT INTO audit_events (company_id, seq, ts, principal, action, subject, data, prev_hash, hash) "
                 f"VALUES ('acme', 7, {quote(forged['ts'])}, 'alice', 'approval.approve', 'approval:1', "
                 f"{quote(json.dumps(forged['data']))}, {quote(last['hash'])}, {quote(canonical_hash(**forged))});")
    _, broken = chain.verify_audit()
    assert broken is not None and broken[0] == 7, broken


def test_swapping_the_action_and_data_of_two_events_names_the_first(chain, db_path):
    sql(db_path, "BEGIN; CREATE TEMP TABLE swap AS SELECT seq, action, data FROM audit_events "
                 "WHERE company_id = 'acme' AND seq IN (3, 4); "
                 "UPDATE audit_events SET action = (SELECT action FROM swap WHERE swap.seq = 7 - audit_events.seq), "
                 "data = (SELECT data FROM swap WHERE swap.seq = 7 - audit_events.seq) "
                 "WHERE company_id = 'acme' AND seq IN (3, 4); COMMIT;")
    assert [r["action"] for r in raw_events(db_path)][2:4] == ["task.create", "task.transition"]
    _, broken = chain.verify_audit()
    assert broken is not None and broken[0] == 3, broken


def test_swapping_two_whole_rows_names_the_first(chain, db_path):
    sql(db_path, f"BEGIN; UPDATE audit_events SET seq = -1 WHERE {where(3)}; "
                 f"UPDATE audit_events SET seq = 3 WHERE {where(4)}; "
                 f"UPDATE audit_events SET seq = 4 WHERE {where(-1)}; COMMIT;")
    _, broken = chain.verify_audit()
    assert broken is not None and broken[0] == 3, broken


@pytest.mark.parametrize("first_deleted", [6, 5])
def test_deleting_events_from_the_end_is_caught_by_the_chain_head(chain, db_path, first_deleted):
    sql(db_path, f"DELETE FROM audit_events WHERE company_id = 'acme' AND seq >= {first_deleted};")
    checked, broken = chain.verify_audit()
    assert checked == first_deleted - 1
    assert broken is not None and broken[0] == first_deleted and "deleted" in broken[1]


def test_cli_audit_verify_exits_9_and_names_the_edited_seq(cli):
    assert cli("init").exit_code == 0
    assert cli("task", "create", "fix-lint", "--title", "t", "--set", "rule=E501").exit_code == 0
    issued = cli("token", "issue", "planner", "--json")
    assert issued.exit_code == 0, issued.output
    moved = cli("--token", json.loads(issued.stdout)["token"], "task", "move", "1", "plan",
                "--set", f"spec={GOOD_SPEC}")
    assert moved.exit_code == 0, moved.output
    assert cli("audit", "verify").exit_code == 0

    db = cli.workspace / ".roster" / "roster.db"
    rows = raw_events(db, "example")
    assert rows[0]["action"] == "spec.apply"
    assert [r["action"] for r in rows if r["action"].startswith("task.")] == ["task.create", "task.transition"]
    [edited] = [r["seq"] for r in rows if r["action"] == "task.create"]
    assert edited > 1 and "E501" in rows[edited - 1]["data"]
    sql(db, f"UPDATE audit_events SET data = replace(data, 'E501', 'W999') "
            f"WHERE company_id = 'example' AND seq = {edited};")

    result = cli("audit", "verify")
    assert result.exit_code == 9
    assert f"seq {edited}" in result.stderr and "example" in result.stderr


# -- reading: filters -----------------------------------------------------------------------------


def tick(n: int) -> str:
    """The timestamp the conftest StepClock gives on its n-th call (one second per call)."""
    return (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seqs(events) -> list[int]:
    return [e.seq for e in events]


def test_audit_log_filters_by_principal_task_and_action(chain):
    assert seqs(chain.audit_log(principal="planner")) == [3]
    assert seqs(chain.audit_log(principal="alice")) == [1, 2, 4, 6]
    assert seqs(chain.audit_log(task_id=2)) == [4, 5, 6]
    assert seqs(chain.audit_log(task_id=1, principal="alice")) == [2]
    assert seqs(chain.audit_log(action="task.transition")) == [3, 6]
    assert seqs(chain.audit_log(action="task.transition*")) == [3, 5, 6]
    assert seqs(chain.audit_log(action="task.*")) == [2, 3, 4, 5, 6]
    assert seqs(chain.audit_log(action="*.rejected")) == []  # only a trailing '*' is a wildcard
    assert seqs(chain.audit_log(action="task%*")) == []  # LIKE wildcards are matched literally


def test_audit_log_filters_by_time_with_inclusive_since_and_exclusive_until(chain):
    assert [e.ts for e in chain.audit_log()] == [tick(n) for n in range(1, 7)]
    assert seqs(chain.audit_log(since=tick(3))) == [3, 4, 5, 6]
    assert seqs(chain.audit_log(until=tick(3))) == [1, 2]
    assert seqs(chain.audit_log(since=tick(2), until=tick(5))) == [2, 3, 4]
    halfway = tick(3).replace(".000000Z", ".500000Z")
    assert seqs(chain.audit_log(since=halfway, until=tick(5))) == [4]
    assert chain.audit_log(since=tick(7)) == []


def test_audit_log_pages_with_after_seq_and_limit(chain):
    assert seqs(chain.audit_log(after_seq=3)) == [4, 5, 6]
    assert seqs(chain.audit_log(after_seq=1, limit=2)) == [2, 3]
    assert seqs(chain.audit_log(after_seq=3, limit=2)) == [4, 5]
    assert seqs(chain.audit_log(action="task.*", after_seq=3, limit=2)) == [4, 5]
    assert chain.audit_log(after_seq=6) == []


# -- tenants --------------------------------------------------------------------------------------


@pytest.fixture
def two_tenants(store, company, new_task):
    store.apply(parse_spec(FIX_LINT.replace("company: acme", "company: globex")), applied_by="alice")
    globex = store.company("globex")
    new_task()
    globex.create_task(workflow="fix-lint", title="g1", actor="alice", fields={"rule": "W291"})
    company.transition(1, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    globex.create_task(workflow="fix-lint", title="g2", actor="alice", fields={"rule": "W292"})
    globex.transition(2, "reject", actor="alice", expected_version=1)
    return company, globex


def test_each_company_has_its_own_chain_starting_at_seq_1(two_tenants):
    acme, globex = two_tenants
    assert seqs(acme.audit_log()) == [1, 2, 3]
    assert seqs(globex.audit_log()) == [1, 2, 3, 4]
    assert acme.audit_log()[0].prev_hash == globex.audit_log()[0].prev_hash == GENESIS
    assert acme.verify_audit() == (3, None)
    assert globex.verify_audit() == (4, None)


def test_a_company_never_sees_another_companys_events(two_tenants):
    acme, globex = two_tenants
    assert {e.company for e in acme.audit_log()} == {"acme"}
    assert {e.company for e in globex.audit_log()} == {"globex"}
    assert [e.data["title"] for e in acme.audit_log(action="task.create")] == ["fix E501"]
    assert acme.audit_log(task_id=2) == []
    assert seqs(globex.audit_log(task_id=2)) == [3, 4]


def test_tampering_with_one_company_does_not_break_the_others_chain(two_tenants, store, db_path):
    acme, globex = two_tenants
    store.close()
    sql(db_path, f"UPDATE audit_events SET principal = 'mallory' WHERE {where(2, 'globex')};")
    assert globex.verify_audit()[1][0] == 2
    assert acme.verify_audit() == (3, None)


# -- append-only ----------------------------------------------------------------------------------

FORBIDDEN = [
    r"\bupdate\(\s*(\w+\.)*audit_events\b",
    r"\bdelete\(\s*(\w+\.)*audit_events\b",
    r"\baudit_events\s*\.\s*(update|delete)\s*\(",
    r"\bDELETE\s+FROM\s+[\"'`\[]?audit_events\b",
    r"\bUPDATE\s+[\"'`\[]?audit_events\b",
    r"\bREPLACE\s+INTO\s+[\"'`\[]?audit_events\b",
]


def test_no_source_file_updates_or_deletes_audit_events():
    sources = [p for p in SRC.rglob("*") if p.is_file() and p.suffix in {".py", ".sql", ".mako"}]
    texts = {p: p.read_text(encoding="utf-8") for p in sources}
    assert any("insert(audit_events)" in t for t in texts.values()), "the scan does not see the insert path"
    offenders = [f"{p.relative_to(SRC)}: {m.group(0)}" for p, text in texts.items() for pattern in FORBIDDEN
                 for m in re.finditer(pattern, text, flags=re.IGNORECASE)]
    assert offenders == []


# -- property: any single edit is named ------------------------------------------------------------

SAFE_INT = 2**53 - 1
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-SAFE_INT, SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(st.characters(codec="utf-8"), max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
operations = st.lists(st.tuples(st.sampled_from(["create", "plan", "reject", "wrong-actor", "stale"]),
                                st.integers(0, 5)), max_size=8)


def apply_operation(company, op: str, pick: int) -> None:
    tasks = company.list_tasks()
    if op == "create" or not tasks:
        company.create_task(workflow="fix-lint", title=f"t{pick}", actor="alice", fields={"rule": f"E{pick}"})
        return
    task = tasks[pick % len(tasks)]
    try:
        if op == "plan":
            company.transition(task.id, "plan", actor="planner", expected_version=task.version,
                               writes={"spec": GOOD_SPEC})
        elif op == "reject":
            company.transition(task.id, "reject", actor="alice", expected_version=task.version)
        elif op == "wrong-actor":
            company.transition(task.id, "plan", actor="merger", expected_version=task.version,
                               writes={"spec": GOOD_SPEC})
        else:
            company.transition(task.id, "reject", actor="alice", expected_version=task.version + 1)
    except (ContractViolation, StaleVersion):
        pass  # refused attempts are events too


def edited_data(original: str, draw) -> str:
    kind = draw(st.sampled_from(["replace", "set-key", "drop-key", "truncate"]))
    data = json.loads(original)
    if kind == "replace":
        return json.dumps(draw(json_values))
    if kind == "set-key":
        key = draw(st.sampled_from(sorted(data)) | st.text(max_size=4))
        return json.dumps({**data, key: draw(json_values)})
    if kind == "drop-key":
        key = draw(st.sampled_from(sorted(data)))
        return json.dumps({k: v for k, v in data.items() if k != key})
    return original[:draw(st.integers(0, len(original) - 1))]


def meaning(text: str) -> bytes:
    """What the verifier hashes for a stored ``data`` text: its canonical JSON, or the text if unparseable."""
    try:
        return rfc8785.dumps(json.loads(text))
    except ValueError:
        return b"unparseable:" + text.encode()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, data=st.data())
def test_any_single_edit_to_one_events_data_is_named_at_that_seq(tmp_path_factory, ops, data):
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    db = folder / "roster.db"
    store = Store.open(f"sqlite:///{db}", clock=StepClock())
    try:
        store.apply(parse_spec(FIX_LINT), applied_by="alice")
        company = store.company("acme")
        for op, pick in ops:
            apply_operation(company, op, pick)
        count, broken = company.verify_audit()
        assert broken is None
    finally:
        store.close()

    seq = data.draw(st.integers(1, count), label="seq")
    original = raw_events(db)[seq - 1]["data"]
    new = edited_data(original, data.draw)
    assume(meaning(new) != meaning(original))
    sql(db, f"UPDATE audit_events SET data = {quote(new)} WHERE {where(seq)};")

    store = Store.open(f"sqlite:///{db}")
    try:
        _, broken = store.company("acme").verify_audit()
    finally:
        store.close()
    assert broken is not None and broken[0] == seq, (seq, new, broken)
