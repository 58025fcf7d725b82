"""State covered by the chain (issue 15, deliverable 2): every event that produced a row of tasks (with its
lease), principals, api_tokens or approval_requests records that row's hash in its hashed content, and
``verify_state`` / ``roster audit verify --state`` name each row that no longer matches, or that no event
produced. Each test edits the database as an attacker with write access to it would (raw SQL)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
import rfc8785
from conftest import FIX_LINT, GOOD_SPEC, js, ok
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, text, update
from test_approvals import verified

from roster.errors import ApprovalPending
from roster.kernel.audit import row_hash
from roster.specfile import parse_spec
from roster.store.checkpoints import verify_chain, verify_state
from roster.store.schema import api_tokens, audit_events, tasks


def problems(store, company="acme"):
    return [str(p) for p in verify_state(store, company)[1]]


def chain_ok(store, company="acme") -> bool:
    report = verify_chain(store, company, {})
    return report.broken is None


def test_every_verb_that_writes_a_covered_row_leaves_the_state_matching_the_chain(store, company, spec):
    task = verified(company)
    with pytest.raises(ApprovalPending) as pending:
        company.transition(task.id, "merge", actor="merger", expected_version=task.version)
    company.approve_request(pending.value.request_id, actor="alice", note="ship it")
    other, _ = company.create_task(workflow="fix-lint", title="second", actor="alice", fields={"rule": "E1"})
    lease = company.claim(other.id, actor="planner", run_id="r1")
    company.renew(other.id, actor="planner", fencing_token=lease.fencing_token, ttl=600)  # not audited
    company.release(other.id, actor="planner", fencing_token=lease.fencing_token)
    company.assign(other.id, actor="alice", owner="bob", priority=3)
    company.hold(other.id, actor="alice", note="mine for now")
    company.release_hold(other.id, actor="alice", note="yours")
    issued = company.issue_token("planner", actor="alice", name="ci")
    store.session(issued.token)  # stamps last_used_at, which no event records
    doomed = company.issue_token("builder", actor="alice")
    company.revoke_token(doomed.record.id, actor="alice")
    company.add_principal("carol", kind="human", actor="alice")
    company.set_status("builder", "paused", actor="alice")
    company.set_status("builder", "active", actor="alice")
    company.claim(other.id, actor="planner", run_id="r3")
    company.set_status("planner", "retired", actor="alice")  # revokes its tokens, releases its lease
    store.apply(spec.model_copy(update={"display_name": "Acme 2"}), applied_by="alice")

    checked, found = verify_state(store, "acme")
    assert found == []
    assert checked >= 2 + 6 + 3 + 1  # tasks, principals, tokens, approval requests
    assert chain_ok(store)


def test_events_record_the_hash_of_the_row_they_produced_inside_their_own_hash(store, company):
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})
    [event] = [e for e in company.audit_log() if e.action == "task.create"]
    with store.read() as conn:
        row = dict(conn.execute(select(tasks).where(tasks.c.id == task.id)).first()._mapping)
    assert event.state == [["tasks", "1", row_hash("tasks", row)]]
    # The documented hash, written here from the format: RFC 8785 JSON of the row without the lease expiry.
    row.pop("lease_expires_at")
    assert event.state[0][2] == hashlib.sha256(rfc8785.dumps(row)).hexdigest()


def test_editing_the_recorded_state_of_an_event_breaks_the_chain_at_that_event(store, company):
    company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})
    [event] = [e for e in company.audit_log() if e.action == "task.create"]
    forged = json.dumps([["tasks", "1", "0" * 64]])
    with store.engine.begin() as conn:
        conn.execute(update(audit_events).where(audit_events.c.company_id == "acme",
                                                audit_events.c.seq == event.seq), {"state": forged})
    broken = verify_chain(store, "acme", {}).broken
    assert broken is not None and broken[0] == event.seq and "edited" in broken[1]


def test_a_direct_sql_edit_of_a_tasks_state_is_named_by_table_key_and_column(store, company):
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})
    company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    assert problems(store) == []
    with store.engine.begin() as conn:  # the probe: skip the contract, straight to merged
        conn.execute(update(tasks).where(tasks.c.company_id == "acme", tasks.c.id == task.id), {"state": "merged"})
    assert chain_ok(store)  # the chain alone cannot see it
    [problem] = verify_state(store, "acme")[1]
    assert (problem.table, problem.key) == ("tasks", str(task.id))
    assert "edited outside roster" in problem.what
    assert "state is 'merged', event" in problem.what and "says 'planned'" in problem.what


def test_an_inserted_token_row_is_named(store, company):
    company.issue_token("planner", actor="alice")
    assert problems(store) == []
    with store.engine.begin() as conn:  # the probe: a token of the attacker's own, for an admin
        conn.execute(insert(api_tokens), {
            "company_id": "acme", "id": "deadbeef0001", "principal": "alice", "secret_sha256": "0" * 64,
            "name": "backdoor", "created_by": "alice", "created_at": "2026-01-01T00:00:00.000000Z",
            "expires_at": "2027-01-01T00:00:00.000000Z"})
    assert chain_ok(store)
    assert problems(store) == [("api_tokens deadbeef0001: no audit event records this row (it was inserted "
                               "outside roster)")]


def test_reviving_a_revoked_token_and_deleting_a_task_are_named(store, company):
    doomed = company.issue_token("planner", actor="alice")
    company.revoke_token(doomed.record.id, actor="alice")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})
    with store.engine.begin() as conn:
        conn.execute(update(api_tokens).where(api_tokens.c.id == doomed.record.id), {"revoked_at": None})
        conn.execute(delete(tasks).where(tasks.c.company_id == "acme", tasks.c.id == task.id))
    found = problems(store)
    assert len(found) == 2
    assert found[0].startswith(f"api_tokens {doomed.record.id}: differs from the row event")
    assert found[1].startswith(f"tasks {task.id}: event") and "it is gone" in found[1]


def test_a_lease_taken_in_sql_is_named_but_a_renewal_is_not(store, company):
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})
    lease = company.claim(task.id, actor="planner", run_id="r1")
    company.renew(task.id, actor="planner", fencing_token=lease.fencing_token, ttl=900)
    assert problems(store) == []
    with store.engine.begin() as conn:
        conn.execute(update(tasks).where(tasks.c.company_id == "acme", tasks.c.id == task.id),
                     {"lease_holder": "builder", "fencing_token": lease.fencing_token + 1})
    [problem] = problems(store)
    assert problem.startswith(f"tasks {task.id}: differs")


def test_the_state_of_another_company_is_not_mixed_in(store, company, spec):
    store.apply(spec.model_copy(update={"company": "globex"}), applied_by="alice")
    store.company("globex").create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})
    with store.engine.begin() as conn:
        conn.execute(update(tasks).where(tasks.c.company_id == "globex"), {"title": "edited"})
    assert problems(store, "acme") == []
    assert [p.split(":")[0] for p in problems(store, "globex")] == ["tasks 1"]


def test_roster_audit_verify_state_exits_9_naming_the_edited_task_and_the_inserted_token(cli):
    ok(cli("init"))
    ok(cli("task", "create", "fix-lint", "--title", "E501 in app.py", "--set", "rule=E501"))
    report = js(cli("audit", "verify", "--state", "--json"))
    assert report["valid"] is True and report["state"]["problems"] == []
    said = " ".join(ok(cli("audit", "verify", "--state")).split())
    assert "rows of tasks, principals, tokens and approvals match the chain" in said

    db = cli.workspace / ".roster" / "roster.db"
    import sqlite3

    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE tasks SET state = 'merged' WHERE id = 1")
        conn.execute("INSERT INTO api_tokens (company_id, id, principal, secret_sha256, name, created_by, "
                     "created_at, expires_at) SELECT company_id, 'cafe00000001', handle, ?, 'x', handle, "
                     "'2026-01-01T00:00:00.000000Z', '2099-01-01T00:00:00.000000Z' FROM principals "
                     "WHERE kind = 'human' LIMIT 1", ("0" * 64,))
    conn.close()
    assert "verifies" in ok(cli("audit", "verify"))  # without --state: the chain itself is intact
    result = cli("audit", "verify", "--state")
    assert result.exit_code == 9, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert "tasks 1: differs from the row event" in said
    assert "state is 'merged'" in said
    assert "api_tokens cafe00000001: no audit event records this row" in said


def test_rows_of_events_before_state_hashes_are_skipped_but_an_inserted_token_is_still_named(store, company):
    """A chain written before migration 0014 has no state: its rows cannot be checked, and are not named;
    a token no event issued still is."""
    company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})
    company.issue_token("planner", actor="alice")
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET state = NULL"))
    checked, found = verify_state(store, "acme")
    assert found == [] and checked == 1 + 6 + 1
    with store.engine.begin() as conn:
        conn.execute(insert(api_tokens), {
            "company_id": "acme", "id": "deadbeef0002", "principal": "planner", "secret_sha256": "0" * 64,
            "name": "x", "created_by": "alice", "created_at": "2026-01-01T00:00:00.000000Z",
            "expires_at": "2027-01-01T00:00:00.000000Z"})
    assert [p.key for p in verify_state(store, "acme")[1]] == ["deadbeef0002"]


def test_a_token_used_later_still_matches(store, company):
    issued = company.issue_token("planner", actor="alice", lifetime=timedelta(days=1))
    for _ in range(2):
        store.session(issued.token)
    assert problems(store) == []


def test_a_tool_call_that_uses_up_its_approval_records_the_request(store):
    """The request's status becomes ``used`` in the tool call's transaction; no event's subject names it."""
    text_ = FIX_LINT.replace("merger: {reports_to: alice, tier: high-impact-executor}",
                             "merger: {reports_to: alice, tier: high-impact-executor, tools: [deploy]}")
    store.apply(parse_spec(text_ + "tools:\n  deploy: {command: deploy, approval: {by: [human]}}\n"),
                applied_by="alice")
    acme = store.company("acme")
    with pytest.raises(ApprovalPending) as pending:
        acme.record_tool_call("deploy", actor="merger", arguments={"env": "prod"})
    acme.approve_request(pending.value.request_id, actor="alice")
    acme.record_tool_call("deploy", actor="merger", arguments={"env": "prod"})
    assert acme.get_request(pending.value.request_id).status == "used"
    [call] = [e for e in acme.audit_log() if e.action == "tool.call"]
    assert [entry[:2] for entry in call.state] == [["approval_requests", str(pending.value.request_id)]]
    assert problems(store) == []


def test_a_crashed_run_whose_token_is_revoked_leaves_the_state_matching(store, company):
    """Ending a dead dispatcher's run revokes the run's token in the ``run.crash`` transaction."""
    from roster.store.fleet import run_token_name

    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})
    company.register_dispatcher("deadbeef", host="elsewhere", pid=1, agents=None, max_runs=4, lease_seconds=0.5)
    company.claim_run(company.get_task(task.id), agent="planner", run_id="r-dead", trigger="task arrival", ttl=60,
                      dispatcher_id="deadbeef")
    issued = company.issue_token("planner", actor=None, name=run_token_name("r-dead"))
    [crashed] = company.end_crashed_runs(max_attempts=3, me=None, host="here", alive=lambda pid: True)
    assert crashed.run_id == "r-dead"
    assert next(t for t in company.list_tokens() if t.id == issued.record.id).revoked_at is not None
    assert problems(store) == []


@given(st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127), max_size=12),
                       st.one_of(st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1),
                                 st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)),
                       max_size=8))
@settings(max_examples=300, deadline=None)
def test_a_row_hash_is_sha256_of_the_rfc8785_json_of_the_row(row):
    """The fast encoding of a row gives RFC 8785's bytes (control characters, quotes, non-ASCII, emoji)."""
    expected = {k: int(v) if isinstance(v, bool) else v for k, v in row.items()}
    assert row_hash("principals", row) == hashlib.sha256(rfc8785.dumps(expected)).hexdigest()


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60), st.floats(allow_nan=False),
              st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20)


@given(_JSON)
@settings(max_examples=400, deadline=None)
def test_an_event_hash_is_sha256_of_the_rfc8785_json_of_the_event(data):
    """Plain data takes json.dumps, the rest rfc8785: either way the documented bytes, or the same refusal."""
    from roster.kernel.audit import event_hash

    payload = {"seq": 1, "ts": "t", "company": "c", "principal": "p", "action": "a", "subject": "s",
               "data": data, "prev_hash": "0" * 64}
    try:
        expected = hashlib.sha256(rfc8785.dumps(payload)).hexdigest()
    except rfc8785.CanonicalizationError:
        with pytest.raises(rfc8785.CanonicalizationError):
            event_hash(**payload)
        return
    assert event_hash(**payload) == expected
