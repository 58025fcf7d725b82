"""The durable store: migrations, apply (idempotent, refusing orphans), tenancy, tasks and idempotency."""

from __future__ import annotations

import hashlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import FIX_LINT, GOOD_SPEC, StepClock

from roster.errors import ApplyRefused, Denied, InvalidFields, NotFound, PayloadTooLarge
from roster.specfile import parse_spec
from roster.store import Store
from roster.store.schema import metadata
from roster.store.tasks import MAX_FIELDS_BYTES, MAX_TITLE_CHARS


def test_migrations_build_exactly_the_declared_schema(store):
    # Full-text search is dialect-specific and not declared: memory_fts (SQLite FTS5, migration 0010) and
    # ix_memory_entries_fts (a PostgreSQL GIN index on the text's tsvector).
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        # Alembic cannot compare an index with a DESC column; check that one by hand.
        if conn.dialect.name == "sqlite":
            order = [(row[2], row[3]) for row in conn.exec_driver_sql("PRAGMA index_xinfo('ix_tasks_work_order')")
                     if row[5]]
        else:
            [definition] = conn.exec_driver_sql("SELECT indexdef FROM pg_indexes WHERE indexname = "
                                                "'ix_tasks_work_order' AND schemaname = current_schema()").scalars()
            columns = definition.split("(", 1)[1].rstrip(")").split(", ")
            order = [(c.split()[0], int(c.endswith(" DESC"))) for c in columns]
    fts = ("remove_table", "memory_fts")
    assert [d for d in diff if not (d[0] in ("add_index", "remove_index") and d[1].name == "ix_tasks_work_order")
            and not (d[0] == fts[0] and d[1].name.startswith(fts[1]))
            and not (d[0] == "remove_index" and d[1].name == "ix_memory_entries_fts")] == []
    assert order == [("company_id", 0), ("workflow", 0), ("state", 0), ("priority", 1), ("id", 0)]


def test_every_table_carries_the_company_id():
    for table in metadata.tables.values():
        assert "company_id" in table.c or table.name == "companies", table.name


def test_state_survives_reopening_the_file(db_path, tmp_path, spec):
    first = Store.open(f"sqlite:///{db_path}", artifact_root=tmp_path / "a")
    first.apply(spec, applied_by="alice")
    task, _ = first.company("acme").create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E1"})
    first.close()
    second = Store.open(f"sqlite:///{db_path}", artifact_root=tmp_path / "a")
    assert second.company("acme").get_task(task.id) == task
    assert second.company("acme").verify_audit() == (2, None)


def test_apply_is_idempotent(store, spec):
    first = store.apply(spec, applied_by="alice")
    events = store.company("acme").audit_log()
    again = store.apply(parse_spec(FIX_LINT), applied_by="bob")
    assert first.changed and not again.changed
    assert again.revision == first.revision == 1
    assert store.company("acme").audit_log() == events


def test_apply_records_changes_and_retires_removed_principals(company, store):
    changed = parse_spec(FIX_LINT.replace("  merger: {reports_to: alice, tier: high-impact-executor}\n",
                                          "  scout: {reports_to: alice, tier: high-impact-executor}\n")
                         .replace("by: [merger]", "by: [scout]"))
    result = store.apply(changed, applied_by="alice")
    assert result.changed and result.revision == 2
    assert "agents: + scout" in result.changes and "agents: - merger" in result.changes
    assert "workflows: ~ fix-lint" in result.changes
    with pytest.raises(Denied, match="retired"):
        company.create_task(workflow="fix-lint", title="t", actor="merger", fields={"rule": "E1"})
    assert company.audit_log(action="spec.apply")[-1].data["revision"] == 2


@pytest.mark.parametrize("edit, reason", [
    (lambda s: s.replace("built, verified", "built").replace(
        "      verify: {from: built,   to: verified, by: [qa],      requires: {artifacts: [patch], checks: [lint_clean]}}\n"
        "      merge:  {from: verified, to: merged,  by: [merger],  approval: {by: [human]}}\n",
        "      merge:  {from: built, to: merged,  by: [merger],  approval: {by: [human]}}\n"), None),
    (lambda s: s.replace("found, planned", "planned").replace("initial: found", "initial: planned").replace(
        "plan:   {from: found,", "plan:   {from: planned,").replace("from: [found, planned, built]",
                                                                     "from: [planned, built]"),
     "state 'found'"),
    (lambda s: s.replace("rule: {type: string}", "rule: {type: integer}"), "no longer match"),
    (lambda s: s.replace("  bob: {roles: [reviewer]}\n", ""), "owned by 'bob'"),
])
def test_apply_refuses_to_orphan_live_tasks(company, store, new_task, edit, reason):
    new_task(owner="bob")
    before = company.spec()
    if reason is None:  # removing a state no task is in is allowed
        assert store.apply(parse_spec(edit(FIX_LINT)), applied_by="alice").changed
        return
    with pytest.raises(ApplyRefused, match=reason):
        store.apply(parse_spec(edit(FIX_LINT)), applied_by="alice")
    assert company.spec() == before
    assert company.audit_log(action="spec.apply.rejected")[-1].principal == "alice"
    assert company.verify_audit()[1] is None


def test_apply_allows_removing_a_workflow_whose_tasks_are_finished(company, store, new_task):
    task = new_task()
    company.transition(task.id, "reject", actor="alice", expected_version=1)
    other = FIX_LINT.replace("fix-lint:", "triage:")
    assert store.apply(parse_spec(other), applied_by="alice").changed
    assert company.get_task(task.id).state == "rejected"
    assert company.options(task.id) == []


def test_tenants_are_isolated_in_the_query_layer(store, spec):
    store.apply(spec, applied_by="alice")
    store.apply(parse_spec(FIX_LINT.replace("company: acme", "company: globex")), applied_by="alice")
    acme, globex = store.company("acme"), store.company("globex")
    a, _ = acme.create_task(workflow="fix-lint", title="acme's", actor="alice", fields={"rule": "E1"},
                            idempotency_key="same-key")
    globex.create_task(workflow="fix-lint", title="globex's 1", actor="alice", fields={"rule": "E1"})
    g2, created = globex.create_task(workflow="fix-lint", title="globex's 2", actor="alice", fields={"rule": "E1"},
                                     idempotency_key="same-key")
    assert created and g2.id == 2
    with pytest.raises(NotFound):
        acme.get_task(2)
    with pytest.raises(NotFound):
        acme.transition(2, "reject", actor="alice", expected_version=1)
    assert [t.title for t in acme.list_tasks()] == ["acme's"]
    assert globex.get_task(2).title == "globex's 2"
    assert all(e.company == "acme" for e in acme.audit_log())
    with pytest.raises(NotFound):
        store.company("initech")


def test_idempotency_key_returns_the_existing_task(company):
    args = dict(workflow="fix-lint", title="E501 in a.py", actor="alice", fields={"rule": "E501"},
                idempotency_key="ruff:E501:a.py")
    first, created = company.create_task(**args)
    events = len(company.audit_log())
    second, again = company.create_task(**{**args, "title": "a rescan"})
    assert created and not again
    assert second == first
    assert len(company.list_tasks()) == 1
    assert len(company.audit_log()) == events


def test_task_has_typed_fields_owner_priority_parent_version_history(company, new_task):
    parent = new_task()
    child = new_task(owner="planner", priority=5, parent_id=parent.id, fields={"rule": "E2", "count": 3})
    assert (child.workflow, child.state, child.version) == ("fix-lint", "found", 1)
    assert (child.owner, child.priority, child.parent_id, child.fields) == ("planner", 5, parent.id,
                                                                         {"rule": "E2", "count": 3})
    company.transition(child.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    assert [e.action for e in company.history(child.id)] == ["task.create", "task.transition"]


@pytest.mark.parametrize("kwargs, error", [
    ({"fields": {"rule": 5}}, InvalidFields),
    ({"fields": {"rule": "E1", "count": -1}}, InvalidFields),
    ({"fields": {"rule": "E1", "colour": "red"}}, InvalidFields),
    ({"workflow": "nope"}, NotFound),
    ({"owner": "mallory"}, NotFound),
    ({"parent_id": 42}, NotFound),
    ({"fields": {"rule": "x" * MAX_FIELDS_BYTES}}, PayloadTooLarge),
    ({"title": "t" * (MAX_TITLE_CHARS + 1)}, PayloadTooLarge),
])
def test_bad_task_creation_is_refused_and_audited(company, new_task, kwargs, error):
    with pytest.raises(error):
        new_task(**kwargs)
    assert company.list_tasks() == []
    rejected = company.audit_log(action="task.create.rejected")
    assert len(rejected) == 1 and rejected[0].data["error"]["error"] == error.code


def test_list_filters_and_cursor(company, new_task):
    for i in range(5):
        new_task(title=f"t{i}", owner="planner" if i % 2 else None)
    company.transition(1, "reject", actor="alice", expected_version=1)
    assert [t.id for t in company.list_tasks(state="rejected")] == [1]
    assert [t.id for t in company.list_tasks(owner="planner")] == [2, 4]
    page = company.list_tasks(limit=2)
    assert [t.id for t in page] == [1, 2]
    assert [t.id for t in company.list_tasks(after_id=page[-1].id, limit=2)] == [3, 4]


def test_artifact_content_is_kept_by_sha256(company, new_task, tmp_path):
    task = new_task()
    content = b"--- a/x.py\n+++ b/x.py\n"
    record = company.record_artifact(task.id, "patch", content, actor="builder", reason="ruff fix")
    digest = hashlib.sha256(content).hexdigest()
    assert record.sha256 == digest
    assert (tmp_path / "artifacts" / "acme" / digest[:2] / digest).read_bytes() == content
    assert company.get_task(task.id).version == 2
    assert [a.kind for a in company.list_artifacts(task.id)] == ["patch"]


def test_timestamps_come_from_the_injected_clock(db_path, tmp_path, spec):
    store = Store.open(f"sqlite:///{db_path}", clock=StepClock())
    store.apply(spec, applied_by="alice")
    assert store.company("acme").audit_log()[0].ts == "2026-01-01T00:00:01.000000Z"
