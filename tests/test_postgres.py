"""The runtime on the real PostgreSQL server of this machine (127.0.0.1:5432, trust auth, database
``test``), each test in a schema of its own: the dispatcher's transactions (the claim with the brief, the
transition with the release), the prebuilt statements compiled for psycopg, and a failed statement
inside a claim, which on PostgreSQL aborts the whole transaction."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from conftest import FIX_LINT, GOOD_SPEC, need_pg

from roster.runtime.dispatcher import Dispatcher
from roster.runtime.runners import RunResult
from roster.specfile import parse_spec
from roster.store import Store

SERVER = "postgresql+psycopg://root@127.0.0.1:5432/test"
PLAN = RunResult.parse({"transition": "plan", "writes": {"spec": GOOD_SPEC}})


@pytest.fixture(autouse=True)
def _server():
    need_pg()  # skipped without a server, except in CI: there it fails


@pytest.fixture
def pg_store():
    """A store on PostgreSQL in a fresh schema (dropped afterwards), migrated and with FIX_LINT applied."""
    import psycopg

    schema = f"roster_test_{secrets.token_hex(4)}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=root dbname=test", autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    store = Store.open(f"{SERVER}?options=-csearch_path%3D{schema}")
    store.apply(parse_spec(FIX_LINT), applied_by="alice")
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect("host=127.0.0.1 port=5432 user=root dbname=test", autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


class Scripted:
    kind = "program"

    def __init__(self, result: RunResult) -> None:
        self.result, self.briefs = result, []

    def run(self, brief):  # noqa: ANN001, ANN201
        self.briefs.append(brief.data)
        return self.result


def test_the_dispatcher_drains_tasks_on_postgresql_with_fencing_and_an_intact_audit_chain(pg_store, tmp_path: Path):
    assert pg_store.engine.dialect.name == "postgresql"
    company = pg_store.company("acme")
    ids = [company.create_task(workflow="fix-lint", title=f"fix {i}", actor="alice", fields={"rule": "E501"})[0].id
           for i in range(3)]
    runner = Scripted(PLAN)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner})
    outcomes = [o for _ in range(4) for o in dispatcher.cycle()]

    assert [(o.task_id, o.outcome, o.transition) for o in outcomes] == [(i, "succeeded", "plan") for i in ids]
    assert [b["task"]["id"] for b in runner.briefs] == ids  # each brief built in its claim's transaction
    assert all(b["fencing_token"] == 1 and b["transitions"][0]["name"] == "plan" for b in runner.briefs)
    for task_id in ids:
        task = company.get_task(task_id)
        assert (task.state, task.version, task.fencing_token, task.lease_holder) == ("planned", 2, 1, None)
    actions = [e.action for e in company.audit_log() if e.subject == f"task:{ids[0]}"]
    assert actions == ["task.create", "lease.claim", "task.transition", "lease.release"]
    assert sorted(r.outcome for r in company.list_runs()) == ["succeeded"] * 3
    checked, broken = company.verify_audit()
    assert broken is None and checked > 12


def test_a_failed_statement_while_briefing_rolls_the_whole_claim_back_on_postgresql(pg_store, tmp_path: Path):
    from sqlalchemy import text

    company = pg_store.company("acme")
    task = company.create_task(workflow="fix-lint", title="fix", actor="alice", fields={"rule": "E501"})[0]
    with pg_store.engine.begin() as conn:  # the brief's hand-off read will fail: the transaction is aborted
        conn.execute(text("ALTER TABLE task_views RENAME TO task_views_gone"))
    runner = Scripted(PLAN)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={"planner": runner})
    events = len(company.audit_log())
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the driver's own error, whatever its class
        dispatcher.run_once("planner", task, trigger="task arrival")
    assert pg_store.is_database_error(raised.value)
    assert runner.briefs == [] and company.leases() == [] and company.list_runs() == []
    assert company.get_task(task.id).fencing_token == 0 and len(company.audit_log()) == events

    with pg_store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE task_views_gone RENAME TO task_views"))
    outcome = dispatcher.run_once("planner", task, trigger="task arrival")
    assert outcome.outcome == "succeeded" and company.get_task(task.id).fencing_token == 1  # token 1 was never used
    assert company.verify_audit()[1] is None
