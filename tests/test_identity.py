"""Identity: principals from the spec and the CLI, API tokens, sessions, and who may administer."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import FIX_LINT, GOOD_SPEC, ManualClock
from sqlalchemy import inspect as sa_inspect

from roster.errors import Denied, Unauthenticated, UsageError
from roster.specfile import parse_spec
from roster.store import Session, Store

SCOUT = "  scout: {reports_to: alice}\n"
WITH_SCOUT = FIX_LINT.replace("humans:\n", SCOUT + "humans:\n")


def _db_rows(store) -> list[tuple]:
    """Every row of every table of the store's database (on either backend), read with plain SQL."""
    with store.engine.connect() as con:
        tables = sa_inspect(con).get_table_names()
        return [(t, tuple(row)) for t in tables for row in con.exec_driver_sql(f'SELECT * FROM "{t}"')]


def _rejections(company, action: str = "auth.rejected"):
    return company.audit_log(action=action)


# -- principals ------------------------------------------------------------------------------------


def test_spec_principals_exist_with_their_attributes(company):
    principals = {p.handle: p for p in company.list_principals()}
    assert set(principals) == {"planner", "builder", "qa", "merger", "alice", "bob"}
    alice, bob, planner = principals["alice"], principals["bob"], principals["planner"]
    assert (alice.kind, alice.display_name, alice.status, alice.source, alice.id) == (
        "human", "Alice", "active", "spec", "acme/alice")
    assert bob.roles == ("reviewer",) and bob.display_name == "bob"
    assert (planner.kind, planner.display_name, planner.status, planner.reports_to, planner.source) == (
        "agent", "planner", "active", "alice", "spec")
    assert planner.id == "acme/planner" and planner.company == "acme"
    assert company.get_principal("merger", actor="alice") == principals["merger"]


def test_add_principal_is_recorded_with_source_cli(company):
    added = company.add_principal("carol", kind="human", actor="alice", display_name="Carol",
                                  roles=("reviewer",), reports_to="alice")
    assert (added.id, added.kind, added.status, added.source, added.reports_to) == (
        "acme/carol", "human", "active", "cli", "alice")
    assert company.get_principal("carol") == added
    event = company.audit_log(action="principal.add")[-1]
    assert (event.principal, event.subject, event.data["kind"]) == ("alice", "principal:carol", "human")
    # the new human can act at once
    task, created = company.create_task(workflow="fix-lint", title="t", actor="carol", fields={"rule": "E1"})
    assert created and task.created_by == "carol"


@pytest.mark.parametrize("handle", ["Carol", "1carol", "", "ca rol", "human", "agent", "system", "x" * 64, "carol!"])
def test_add_principal_refuses_invalid_handles(company, handle):
    with pytest.raises(UsageError, match="invalid handle"):
        company.add_principal(handle, kind="human", actor="alice")
    assert handle not in {p.handle for p in company.list_principals()}
    assert company.audit_log(action="principal.add.rejected")[-1].data["error"]["error"] == "invalid-value"


@pytest.mark.parametrize("handle", ["planner", "alice"])
def test_add_principal_refuses_taken_handles(company, handle):
    before = company.get_principal(handle)
    with pytest.raises(UsageError, match="already exists"):
        company.add_principal(handle, kind="agent", actor="alice")
    assert company.get_principal(handle) == before


def test_add_principal_refuses_a_duplicate_cli_principal_and_a_bad_kind(company):
    company.add_principal("carol", kind="agent", actor="alice")
    with pytest.raises(UsageError, match="already exists"):
        company.add_principal("carol", kind="human", actor="alice")
    with pytest.raises(UsageError, match="kind"):
        company.add_principal("dave", kind="robot", actor="alice")


def test_apply_without_an_agent_retires_it_but_leaves_cli_principals(store):
    store.apply(parse_spec(WITH_SCOUT), applied_by="alice")
    company = store.company("acme")
    company.add_principal("carol", kind="agent", actor="alice")
    assert company.get_principal("scout").status == "active"
    result = store.apply(parse_spec(FIX_LINT), applied_by="alice")
    assert "agents: - scout" in result.changes
    scout = company.get_principal("scout")
    assert (scout.status, scout.source) == ("retired", "spec")
    carol = company.get_principal("carol")
    assert (carol.status, carol.source) == ("active", "cli")
    with pytest.raises(Denied, match="retired"):
        company.record_tool_call("anything", actor="scout")


def test_retire_is_permanent(store):
    store.apply(parse_spec(WITH_SCOUT), applied_by="alice")
    company = store.company("acme")
    company.add_principal("carol", kind="agent", actor="alice")
    retired = company.set_status("carol", "retired", actor="alice")
    assert retired.status == "retired"
    with pytest.raises(UsageError, match="permanent"):
        company.set_status("carol", "active", actor="alice")
    with pytest.raises(UsageError, match="permanent"):
        company.set_status("carol", "paused", actor="alice")
    assert company.get_principal("carol").status == "retired"
    # a spec-retired principal stays retired when a later spec names it again
    store.apply(parse_spec(FIX_LINT), applied_by="alice")
    assert company.get_principal("scout").status == "retired"
    result = store.apply(parse_spec(WITH_SCOUT), applied_by="alice")
    assert result.changed and "agents: + scout" in result.changes
    assert company.get_principal("scout").status == "retired"
    with pytest.raises(UsageError, match="permanent"):
        company.set_status("scout", "active", actor="alice")
    with pytest.raises(UsageError, match="retired"):
        company.issue_token("scout", actor="alice")


def test_pause_and_resume_a_principal(company, new_task):
    task = new_task()
    assert company.set_status("planner", "paused", actor="alice").status == "paused"
    with pytest.raises(Denied, match="paused") as denied:
        company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    assert denied.value.policies == ("inactive-principal",)
    company.set_status("planner", "active", actor="alice")
    assert company.transition(task.id, "plan", actor="planner", expected_version=1,
                              writes={"spec": GOOD_SPEC}).state == "planned"
    verbs = [e.action for e in company.audit_log(action="principal.*")]
    assert verbs == ["principal.pause", "principal.resume"]


# -- tokens ----------------------------------------------------------------------------------------


def test_issue_token_returns_the_secret_once_and_stores_only_its_hash(company, store, db_backend):
    issued = company.issue_token("planner", actor="alice", name="ci")
    prefix, company_id, token_id, secret = issued.token.split(".")
    assert (prefix, company_id, token_id) == ("rst", "acme", issued.record.id)
    assert len(secret) >= 40
    record = issued.record
    assert (record.principal, record.name, record.created_by, record.revoked_at, record.last_used_at) == (
        "planner", "ci", "alice", None, None)
    assert record.expires_at > record.created_at
    assert not hasattr(record, "secret") and secret not in repr(record)
    # the token's metadata is listed, never its secret
    listed = company.list_tokens(actor="alice")
    assert [t.id for t in listed] == [token_id] and secret not in repr(listed)

    rows = _db_rows(store)
    token_rows = [row for table, row in rows if table == "api_tokens"]
    assert len(token_rows) == 1
    assert hashlib.sha256(secret.encode()).hexdigest() in token_rows[0]
    for table, row in rows:
        for cell in row:
            assert secret not in str(cell), f"the secret is stored in table {table}"
    if db_backend == "sqlite":  # the file itself (the WAL too), beyond what the tables show
        db_path = Path(store.engine.url.database)
        con = sqlite3.connect(db_path)
        try:
            dump = "\n".join(con.iterdump())
        finally:
            con.close()
        assert secret not in dump and issued.token not in dump
        raw = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
        assert secret.encode() not in raw
    # the audit event names the token, not its secret
    event = company.audit_log(action="token.issue")[-1]
    assert event.data["token_id"] == token_id and secret not in str(event.data)


def test_session_acts_as_the_tokens_principal_and_marks_the_token_used(company, store):
    issued = company.issue_token("planner", actor="alice")
    assert company.list_tokens(principal="planner")[0].last_used_at is None
    session = store.session(issued.token)
    assert isinstance(session, Session)
    assert session.principal == company.get_principal("planner")
    assert session.principal.id == "acme/planner"
    used = company.list_tokens(principal="planner")[0]
    assert used.last_used_at is not None and used.last_used_at > used.created_at
    first_use = used.last_used_at
    store.session(issued.token)  # within a minute: checking the token writes nothing
    assert company.list_tokens(principal="planner")[0].last_used_at == first_use
    store.clock.now += timedelta(seconds=61)
    store.session(issued.token)
    assert company.list_tokens(principal="planner")[0].last_used_at > first_use


def test_revoked_token_is_refused_and_audited(company, store):
    issued = company.issue_token("planner", actor="alice")
    store.session(issued.token)
    revoked = company.revoke_token(issued.record.id, actor="alice")
    assert revoked.revoked_at is not None
    with pytest.raises(Unauthenticated, match="revoked"):
        store.session(issued.token)
    event = _rejections(company)[-1]
    assert event.principal == "planner" and "revoked" in event.data["reason"]
    assert event.subject == f"token:{issued.record.id}"


def test_expired_token_is_refused_and_audited(db_path, tmp_path, spec):
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
    store = Store.open(f"sqlite:///{db_path}", clock=clock, artifact_root=tmp_path / "a")
    try:
        store.apply(spec, applied_by="alice")
        company = store.company("acme")
        issued = company.issue_token("builder", actor="alice", lifetime=timedelta(minutes=5))
        clock.advance(minutes=4, seconds=59)
        assert store.session(issued.token).principal.handle == "builder"
        clock.advance(seconds=1)
        with pytest.raises(Unauthenticated, match="expired"):
            store.session(issued.token)
        event = _rejections(company)[-1]
        assert event.principal == "builder" and "expired" in event.data["reason"]
        clock.advance(days=1)
        with pytest.raises(Unauthenticated, match="expired"):
            store.session(issued.token)
    finally:
        store.close()


def test_token_lifetime_is_bounded(company):
    with pytest.raises(UsageError):
        company.issue_token("planner", actor="alice", lifetime=timedelta(0))
    with pytest.raises(UsageError):
        company.issue_token("planner", actor="alice", lifetime=timedelta(days=367))


def test_token_of_a_paused_principal_is_refused_until_resumed(company, store):
    issued = company.issue_token("planner", actor="alice")
    company.set_status("planner", "paused", actor="alice")
    with pytest.raises(Unauthenticated, match="paused"):
        store.session(issued.token)
    event = _rejections(company)[-1]
    assert event.principal == "planner" and "paused" in event.data["reason"]
    company.set_status("planner", "active", actor="alice")
    assert store.session(issued.token).principal.handle == "planner"


def test_token_of_a_retired_principal_is_refused(company, store):
    issued = company.issue_token("qa", actor="alice")
    company.set_status("qa", "retired", actor="alice")
    assert company.list_tokens(principal="qa")[0].revoked_at is not None
    with pytest.raises(Unauthenticated):
        store.session(issued.token)
    event = _rejections(company)[-1]
    assert event.principal == "qa" and re.search("revoked|retired", event.data["reason"])


def test_token_of_a_principal_retired_by_the_spec_is_refused(store):
    store.apply(parse_spec(WITH_SCOUT), applied_by="alice")
    company = store.company("acme")
    issued = company.issue_token("scout", actor="alice")
    store.apply(parse_spec(FIX_LINT), applied_by="alice")
    with pytest.raises(Unauthenticated):
        store.session(issued.token)
    event = _rejections(company)[-1]
    assert event.principal == "scout" and re.search("revoked|retired", event.data["reason"])


@pytest.mark.parametrize("token", ["", "garbage", "rst.acme.abc", "rst.acme..secret", "xyz.acme.abc.secret",
                                   "rst.acme.abc.def.ghi", "Bearer rst"])
def test_malformed_tokens_are_refused(company, store, token):
    with pytest.raises(Unauthenticated, match="malformed"):
        store.session(token)


def test_wrong_secret_is_refused_without_naming_the_principal(company, store):
    issued = company.issue_token("planner", actor="alice")
    _, _, token_id, secret = issued.token.split(".")
    forged = f"rst.acme.{token_id}.{secret[:-1] + ('A' if secret[-1] != 'A' else 'B')}"
    with pytest.raises(Unauthenticated) as refused:
        store.session(forged)
    assert "planner" not in str(refused.value) and "planner" not in str(refused.value.to_dict())
    event = _rejections(company)[-1]
    assert event.principal == "unknown" and event.data["reason"] == "unknown token"
    assert event.subject == f"token:{token_id}"
    assert company.list_tokens(principal="planner")[0].last_used_at is None


def test_unknown_token_id_in_a_known_company_is_refused_and_audited(company, store):
    with pytest.raises(Unauthenticated):
        store.session("rst.acme.deadbeef0000.c2VjcmV0")
    event = _rejections(company)[-1]
    assert (event.principal, event.subject, event.data["reason"]) == ("unknown", "token:deadbeef0000",
                                                                       "unknown token")


def test_token_naming_an_unknown_company_is_refused(company, store):
    issued = company.issue_token("planner", actor="alice")
    _, _, token_id, secret = issued.token.split(".")
    before = company.verify_audit()
    with pytest.raises(Unauthenticated):
        store.session(f"rst.globex.{token_id}.{secret}")
    assert store.companies() == ["acme"]
    assert company.verify_audit() == before


def test_each_refusal_is_one_audit_event(company, store):
    good = company.issue_token("planner", actor="alice")
    revoked = company.issue_token("builder", actor="alice")
    company.revoke_token(revoked.record.id, actor="alice")
    store.session(good.token)
    count = len(_rejections(company))
    for bad in (revoked.token, good.token[:-2] + "zz", "rst.acme.nope.nope"):
        with pytest.raises(Unauthenticated):
            store.session(bad)
    assert len(_rejections(company)) == count + 3
    assert company.verify_audit()[1] is None


# -- sessions --------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb, args", [
    ("get_task", (1,)),
    ("list_tasks", ()),
    ("history", (1,)),
    ("options", (1,)),
    ("audit_log", ()),
    ("record_check", (1, "lint_clean")),
    ("transition", (1, "plan")),
    ("create_task", ()),
    ("issue_token", ("planner",)),
    ("pause", ("*",)),
])
def test_a_session_cannot_act_as_someone_else(company, store, new_task, verb, args):
    new_task()
    session = store.session(company.issue_token("planner", actor="alice").token)
    kwargs = {"record_check": {"passed": True}, "transition": {"expected_version": 1, "writes": {"spec": GOOD_SPEC}},
              "create_task": {"workflow": "fix-lint", "title": "sneaky", "fields": {"rule": "E1"}}}.get(verb, {})
    before = company.verify_audit()[0]
    with pytest.raises(TypeError):
        getattr(session, verb)(*args, actor="alice", **kwargs)
    assert company.verify_audit()[0] == before, "the call must be refused before anything is recorded"


def test_every_action_through_a_session_is_attributed_to_its_principal(company, store, new_task):
    planner = store.session(company.issue_token("planner", actor="alice").token)
    alice = store.session(company.issue_token("alice", actor="alice").token)
    start = company.audit_log()[-1].seq
    task, _ = alice.create_task(workflow="fix-lint", title="fix E501", fields={"rule": "E501"})
    assert task.created_by == "alice"
    planned = planner.transition(task.id, "plan", expected_version=1, writes={"spec": GOOD_SPEC})
    assert planned.state == "planned"
    planner.get_task(task.id)
    planner.history(task.id)
    with pytest.raises(Denied):
        planner.pause("*")
    alice.record_check(task.id, "lint_clean", passed=True)
    events = company.audit_log(after_seq=start)
    assert [(e.principal, e.action) for e in events] == [
        ("alice", "task.create"),
        ("planner", "task.transition"),
        ("planner", "killswitch.pause.rejected"),
        ("alice", "check.record"),
    ]
    with pytest.raises(AttributeError):
        planner.apply  # noqa: B018 - not a session verb


def test_a_session_stops_working_as_soon_as_its_principal_is_paused(company, store, new_task):
    task = new_task()
    session = store.session(company.issue_token("planner", actor="alice").token)
    assert session.get_task(task.id) == task
    company.set_status("planner", "paused", actor="alice")
    with pytest.raises(Denied) as denied:
        session.get_task(task.id)
    assert denied.value.policies == ("inactive-principal",)
    with pytest.raises(Denied):
        session.transition(task.id, "plan", expected_version=1, writes={"spec": GOOD_SPEC})
    assert company.get_task(task.id).state == "found"
    event = company.audit_log()[-1]
    assert (event.principal, event.action) == ("planner", "task.transition.rejected")


# -- administration --------------------------------------------------------------------------------


def _admin_attempts(company, store, actor):
    yield "issue_token", lambda: company.issue_token("builder", actor=actor)
    yield "add_principal", lambda: company.add_principal("zed", kind="agent", actor=actor)
    yield "pause", lambda: company.pause("*", actor=actor)
    yield "resume", lambda: company.resume("*", actor=actor)
    yield "set_status", lambda: company.set_status("builder", "paused", actor=actor)
    yield "revoke_token", lambda: company.revoke_token("nope", actor=actor)
    yield "apply", lambda: store.apply(parse_spec(WITH_SCOUT), applied_by=actor)


@pytest.mark.parametrize("agent", ["planner", "merger"])
def test_agents_never_administer(company, store, agent):
    for name, attempt in _admin_attempts(company, store, agent):
        with pytest.raises(Denied) as denied:
            attempt()
        assert "agents-never-admin" in denied.value.policies, name
    assert company.list_tokens(principal="builder") == []
    assert "zed" not in {p.handle for p in company.list_principals()}
    assert company.paused() == []
    assert company.get_principal("builder").status == "active"
    assert "scout" not in company.spec().agents
    rejected = {e.action for e in company.audit_log() if e.principal == agent}
    assert {"token.issue.rejected", "principal.add.rejected", "killswitch.pause.rejected",
            "spec.apply.rejected"} <= rejected


def test_an_agent_session_cannot_administer(company, store):
    session = store.session(company.issue_token("merger", actor="alice").token)
    with pytest.raises(Denied) as denied:
        session.issue_token("merger")
    assert denied.value.policies == ("agents-never-admin",)
    with pytest.raises(Denied):
        session.add_principal("zed", kind="agent")
    with pytest.raises(Denied):
        session.pause("*")
    assert company.paused() == [] and len(company.list_tokens()) == 1


def test_humans_administer(company, store):
    issued = company.issue_token("builder", actor="bob")
    assert issued.record.created_by == "bob"
    assert company.add_principal("zed", kind="agent", actor="bob").source == "cli"
    company.pause("*", actor="bob")
    assert company.paused() == ["*"]
    company.resume("*", actor="bob")
    assert company.paused() == []
    result = store.apply(parse_spec(WITH_SCOUT), applied_by="bob")
    assert result.changed and company.get_principal("scout").status == "active"
    session = store.session(company.issue_token("alice", actor="alice").token)
    assert session.issue_token("qa").record.created_by == "alice"
