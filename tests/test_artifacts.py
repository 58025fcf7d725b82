"""Versioned artifacts: each save under a name is the next version with its author, reason, run and parent;
identical content is not saved twice; diffs between versions; the size limit; content verified against its
SHA-256 on every read; ``produces`` needs the artifact saved. Real SQLite files and real blob files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import FIX_LINT, GOOD_SPEC

from roster.errors import ContractViolation, CorruptArtifact, NotFound, PayloadTooLarge
from roster.specfile import parse_spec
from roster.store import CompanyStore, Store

V1 = b"line one\nline two\nline three\n"
V2 = b"line one\nline 2\nline three\nline four\n"

SMALL_LIMIT = FIX_LINT + "limits: {artifact_bytes: 100}\n"


def blob_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def planned(company: CompanyStore, new_task):
    task = new_task()
    return company.transition(task.id, "plan", actor="planner", expected_version=task.version,
                              writes={"spec": GOOD_SPEC})


def two_versions(company: CompanyStore, task_id: int):
    first = company.record_artifact(task_id, "patch", V1, actor="builder", name="fix.diff",
                                    reason="first try", run_id="run-1")
    second = company.record_artifact(task_id, "patch", V2, actor="alice", name="fix.diff",
                                     reason="review edits", run_id="run-2")
    return first, second


def test_saving_the_same_name_twice_makes_versions_with_author_reason_run_and_parent(company, new_task):
    task = new_task()
    first, second = two_versions(company, task.id)
    assert (first.version, first.parent_id) == (1, None)
    assert (second.version, second.parent_id) == (2, first.id)
    assert (first.created_by, first.reason, first.run_id) == ("builder", "first try", "run-1")
    assert (second.created_by, second.reason, second.run_id) == ("alice", "review edits", "run-2")
    assert second.sha256 == hashlib.sha256(V2).hexdigest() and second.size == len(V2)
    stored = company.artifact_history(task.id, "fix.diff")
    assert [(a.version, a.parent_id, a.created_by, a.reason, a.run_id) for a in stored] == [
        (1, None, "builder", "first try", "run-1"), (2, first.id, "alice", "review edits", "run-2")]
    events = company.audit_log(action="artifact.record", task_id=task.id)
    assert [(e.principal, e.data["artifact_version"], e.data["run_id"]) for e in events] == [
        ("builder", 1, "run-1"), ("alice", 2, "run-2")]


def test_list_gives_the_latest_per_name_and_all_versions_on_request(company, new_task):
    task = new_task()
    first, second = two_versions(company, task.id)
    report = company.record_artifact(task.id, "report", b"all clean", actor="qa")
    assert report.name == "report" and report.version == 1
    assert [(a.name, a.version) for a in company.list_artifacts(task.id)] == [("fix.diff", 2), ("report", 1)]
    every = company.list_artifacts(task.id, all_versions=True)
    assert [a.id for a in every] == [first.id, second.id, report.id]
    assert [a.version for a in company.artifact_history(task.id, "fix.diff")] == [1, 2]


def test_reading_a_version_returns_its_content(company, new_task):
    task = new_task()
    two_versions(company, task.id)
    record, content = company.artifact(task.id, "fix.diff")
    assert (record.version, content) == (2, V2)
    record, content = company.artifact(task.id, "fix.diff", 1)
    assert (record.version, content) == (1, V1)


def test_identical_content_returns_the_existing_version_and_leaves_the_task_alone(company, new_task):
    task = new_task()
    first = company.record_artifact(task.id, "patch", V1, actor="builder", name="fix.diff")
    version = company.get_task(task.id).version
    events = len(company.audit_log(task_id=task.id))
    again = company.record_artifact(task.id, "patch", V1, actor="builder", name="fix.diff", reason="again")
    assert again == first
    assert company.get_task(task.id).version == version
    assert len(company.list_artifacts(task.id, all_versions=True)) == 1
    assert len(company.audit_log(task_id=task.id)) == events


def test_new_content_bumps_the_task_version(company, new_task):
    task = new_task()
    company.record_artifact(task.id, "patch", V1, actor="builder")
    version = company.get_task(task.id).version
    company.record_artifact(task.id, "patch", V2, actor="builder")
    assert company.get_task(task.id).version == version + 1


def test_diff_between_latest_and_its_parent(company, new_task):
    task = new_task()
    two_versions(company, task.id)
    diff = company.artifact_diff(task.id, "fix.diff")
    lines = diff.splitlines()
    assert lines[0] == "--- fix.diff@v1" and lines[1] == "+++ fix.diff@v2"
    assert "-line two" in lines and "+line 2" in lines and "+line four" in lines
    assert " line one" in lines
    assert not any(line.startswith(("-", "+")) and "line one" in line for line in lines)


def test_diff_between_explicit_versions(company, new_task):
    task = new_task()
    two_versions(company, task.id)
    company.record_artifact(task.id, "patch", b"line one\n", actor="builder", name="fix.diff")
    lines = company.artifact_diff(task.id, "fix.diff", 1, 2).splitlines()
    assert lines[:2] == ["--- fix.diff@v1", "+++ fix.diff@v2"] and "+line 2" in lines
    backwards = company.artifact_diff(task.id, "fix.diff", 3, 1).splitlines()
    assert backwards[:2] == ["--- fix.diff@v3", "+++ fix.diff@v1"]
    assert "+line two" in backwards and "+line three" in backwards
    latest = company.artifact_diff(task.id, "fix.diff").splitlines()
    assert latest[:2] == ["--- fix.diff@v2", "+++ fix.diff@v3"]
    assert "-line 2" in latest and "-line four" in latest


def test_a_first_version_diffs_against_dev_null(company, new_task):
    task = new_task()
    company.record_artifact(task.id, "patch", V1, actor="builder", name="fix.diff")
    lines = company.artifact_diff(task.id, "fix.diff").splitlines()
    assert lines[:2] == ["--- /dev/null", "+++ fix.diff@v1"]
    assert [line for line in lines[3:]] == ["+line one", "+line two", "+line three"]


def test_binary_content_is_summarised_in_one_line(company, new_task):
    task = new_task()
    old = company.record_artifact(task.id, "image", b"\x89PNG\xff\xfe\x00", actor="builder")
    new = company.record_artifact(task.id, "image", b"\x89PNG\xff\xfe\x01\x02", actor="builder")
    diff = company.artifact_diff(task.id, "image")
    assert diff.count("\n") == 1 and diff.startswith("binary artifact 'image'")
    assert old.sha256[:12] in diff and new.sha256[:12] in diff
    assert f"({old.size} bytes)" in diff and f"({new.size} bytes)" in diff


def test_content_over_the_spec_limit_is_refused_and_nothing_is_stored(store, tmp_path):
    store.apply(parse_spec(SMALL_LIMIT), applied_by="alice")
    company = store.company("acme")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})
    root = tmp_path / "artifacts"
    version = company.get_task(task.id).version
    with pytest.raises(PayloadTooLarge) as info:
        company.record_artifact(task.id, "patch", b"x" * 101, actor="builder")
    assert (info.value.size, info.value.limit) == (101, 100)
    assert company.list_artifacts(task.id, all_versions=True) == []
    assert blob_files(root) == []
    assert company.get_task(task.id).version == version
    rejected = company.audit_log(action="artifact.record.rejected")
    assert len(rejected) == 1
    assert rejected[0].principal == "builder" and rejected[0].subject == f"task:{task.id}"
    assert rejected[0].data["error"]["error"] == "payload-too-large"
    assert rejected[0].data["size"] == 101
    # exactly at the limit is fine
    saved = company.record_artifact(task.id, "patch", b"x" * 100, actor="builder")
    assert saved.size == 100 and len(blob_files(root)) == 1
    assert company.verify_audit()[1] is None


def test_a_changed_blob_on_disk_is_reported_not_served(store, company, new_task):
    task = new_task()
    record = company.record_artifact(task.id, "patch", V1, actor="builder")
    path = store.blobs.path(company.company, record.sha256)
    assert path.read_bytes() == V1
    path.write_bytes(b"line one\nline TWO\nline three\n")
    with pytest.raises(CorruptArtifact) as info:
        company.artifact(task.id, "patch")
    assert info.value.digest == record.sha256
    with pytest.raises(CorruptArtifact):
        company.artifact_diff(task.id, "patch")


def test_a_missing_blob_is_reported_as_corrupt(store, company, new_task):
    task = new_task()
    record = company.record_artifact(task.id, "patch", V1, actor="builder")
    store.blobs.path(company.company, record.sha256).unlink()
    with pytest.raises(CorruptArtifact) as info:
        company.artifact(task.id, "patch")
    assert "missing" in str(info.value)


def test_identical_content_is_stored_once_on_disk(store, company, new_task, tmp_path):
    first, second = new_task(), new_task()
    a = company.record_artifact(first.id, "patch", V1, actor="builder")
    b = company.record_artifact(second.id, "patch", V1, actor="builder")
    assert a.sha256 == b.sha256 and a.id != b.id
    assert blob_files(tmp_path / "artifacts") == [store.blobs.path(company.company, a.sha256)]


def test_produces_is_refused_until_the_artifact_is_saved(company, new_task):
    task = planned(company, new_task)
    with pytest.raises(ContractViolation) as info:
        company.transition(task.id, "build", actor="builder", expected_version=task.version,
                           writes={"branch": "b"})
    assert info.value.clause == "produces" and "patch" in info.value.detail
    assert company.get_task(task.id).state == "planned"
    company.record_artifact(task.id, "patch", V1, actor="builder", name="fix.diff")
    built = company.transition(task.id, "build", actor="builder", expected_version=task.version + 1,
                               writes={"branch": "b"})
    assert built.state == "built"


def test_a_different_kind_does_not_satisfy_produces(company, new_task):
    task = planned(company, new_task)
    company.record_artifact(task.id, "report", b"notes", actor="builder", name="patch")
    with pytest.raises(ContractViolation) as info:
        company.transition(task.id, "build", actor="builder", expected_version=task.version + 1,
                           writes={"branch": "b"})
    assert info.value.clause == "produces"


def test_unknown_artifact_name_or_version_is_not_found(company, new_task):
    task = new_task()
    company.record_artifact(task.id, "patch", V1, actor="builder")
    with pytest.raises(NotFound, match="no artifact named 'nope'"):
        company.artifact(task.id, "nope")
    with pytest.raises(NotFound):
        company.artifact_history(task.id, "nope")
    with pytest.raises(NotFound):
        company.artifact_diff(task.id, "nope")
    with pytest.raises(NotFound, match="no version 2"):
        company.artifact(task.id, "patch", 2)
    with pytest.raises(NotFound):
        company.artifact_diff(task.id, "patch", 7, 1)
    with pytest.raises(NotFound):
        company.record_artifact(999, "patch", V1, actor="builder")


def test_the_audit_chain_verifies_after_artifact_work(company, new_task):
    task = new_task()
    two_versions(company, task.id)
    company.record_artifact(task.id, "patch", V2, actor="alice", name="fix.diff")  # identical: no event
    company.record_artifact(task.id, "image", b"\xff\x00", actor="builder")
    with pytest.raises(NotFound):
        company.record_artifact(999, "patch", V1, actor="builder")
    checked, problem = company.verify_audit()
    assert problem is None and checked >= 4


def test_artifacts_survive_reopening_the_store(store, company, new_task, databases, tmp_path):
    task = new_task()
    two_versions(company, task.id)
    store.close()
    reopened = Store.open(databases("roster"), artifact_root=tmp_path / "artifacts")
    try:
        record, content = reopened.company("acme").artifact(task.id, "fix.diff", 1)
        assert (record.version, content) == (1, V1)
    finally:
        reopened.close()


def test_saving_the_content_again_repairs_a_corrupt_blob(store, company, new_task):
    first, second = new_task(), new_task()
    record = company.record_artifact(first.id, "patch", V1, actor="builder")
    store.blobs.path(company.company, record.sha256).write_bytes(b"tampered")
    with pytest.raises(CorruptArtifact):
        company.artifact(first.id, "patch")
    company.record_artifact(second.id, "patch", V1, actor="builder")
    assert company.artifact(first.id, "patch")[1] == V1
