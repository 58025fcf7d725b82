"""Contracts are enforced by the kernel on every transition, whoever asks: each clause, with state intact."""

from __future__ import annotations

import pytest
from conftest import GOOD_SPEC

from roster.errors import (
    ApprovalPending,
    ContractViolation,
    Denied,
    InvalidFields,
    NotFound,
    PayloadTooLarge,
    StaleVersion,
)
from roster.kernel.contracts import Actor, Evidence, TaskSnapshot, WorkflowMachine
from roster.store.tasks import MAX_FIELDS_BYTES


def refused(company, task, name, *, actor, writes=None, version=None, error=ContractViolation):
    """Attempt a transition that must be refused; check the task is unchanged and the refusal audited."""
    rejected_before = len(company.audit_log(action="task.transition.rejected"))
    with pytest.raises(error) as info:
        company.transition(task.id, name, actor=actor, writes=writes or {},
                           expected_version=task.version if version is None else version)
    assert company.get_task(task.id) == task
    rejections = company.audit_log(action="task.transition.rejected")
    assert len(rejections) == rejected_before + 1
    assert rejections[-1].principal == actor
    assert rejections[-1].data["error"]["error"] == error.code
    return info.value


def test_happy_path_walks_every_clause(company, new_task):
    task = new_task()
    task = company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    company.record_artifact(task.id, "patch", b"--- a\n+++ b\n", actor="builder")
    task = company.get_task(task.id)
    task = company.transition(task.id, "build", actor="builder", expected_version=task.version,
                              writes={"branch": "fix/e501"})
    company.record_check(task.id, "lint_clean", passed=True, actor="qa")
    task = company.get_task(task.id)
    task = company.transition(task.id, "verify", actor="qa", expected_version=task.version)
    with pytest.raises(ApprovalPending) as asked:
        company.transition(task.id, "merge", actor="merger", expected_version=task.version)
    company.approve_request(asked.value.request_id, actor="alice")
    task = company.get_task(task.id)
    assert task.state == "merged"
    assert task.fields == {"rule": "E501", "spec": GOOD_SPEC, "branch": "fix/e501"}
    assert [e.action for e in company.history(task.id)].count("task.transition") == 4


def test_wrong_state_names_the_from_clause(company, new_task):
    err = refused(company, new_task(), "build", actor="builder", writes={"branch": "b"})
    assert err.clause == "from" and err.transition == "build" and "'found'" in err.detail


def test_actor_not_in_by_is_refused(company, new_task):
    err = refused(company, new_task(), "plan", actor="builder", writes={"spec": GOOD_SPEC})
    assert err.clause == "by" and "planner" in err.detail


def test_by_accepts_roles_and_the_human_keyword(company, new_task):
    task = company.transition(new_task().id, "reject", actor="bob", expected_version=1)  # bob is human
    assert task.state == "rejected"
    other = new_task()
    refused(company, other, "reject", actor="qa")  # an agent is not 'human'


def test_write_outside_writes_is_refused(company, new_task):
    err = refused(company, new_task(), "plan", actor="planner", writes={"spec": GOOD_SPEC, "branch": "x"})
    assert err.clause == "writes" and "branch" in err.detail


def test_invalid_field_value_is_refused(company, new_task):
    err = refused(company, new_task(), "plan", actor="planner", writes={"spec": "too short"})
    assert err.clause == "fields" and "spec" in err.detail


def test_missing_required_field_is_refused(company, new_task):
    err = refused(company, new_task(fields={}), "plan", actor="planner", writes={"spec": GOOD_SPEC})
    assert err.clause == "requires.fields" and "rule" in err.detail


def test_removing_a_required_field_in_the_same_move_is_refused(company, new_task):
    task = new_task()
    task = company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    company.record_artifact(task.id, "patch", b"x", actor="builder")
    task = company.get_task(task.id)
    # build requires spec, but may not write it: unsetting it is outside 'writes'
    err = refused(company, task, "build", actor="builder", writes={"spec": None, "branch": "b"})
    assert err.clause == "writes"


def test_stale_version_is_refused(company, new_task):
    task = new_task()
    err = refused(company, task, "plan", actor="planner", writes={"spec": GOOD_SPEC}, version=7, error=StaleVersion)
    assert (err.expected, err.actual) == (7, 1)


def test_concurrent_writers_one_wins_the_other_is_stale(company, new_task):
    task = new_task()
    company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    with pytest.raises(StaleVersion):
        company.transition(task.id, "reject", actor="alice", expected_version=1)
    assert company.get_task(task.id).state == "planned"


def test_missing_produced_artifact_is_refused(company, new_task):
    task = company.transition(new_task().id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    err = refused(company, task, "build", actor="builder", writes={"branch": "b"})
    assert err.clause == "produces" and "patch" in err.detail


def test_required_check_must_have_passed_latest(company, new_task):
    task = company.transition(new_task().id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    company.record_artifact(task.id, "patch", b"x", actor="builder")
    task = company.transition(task.id, "build", actor="builder", expected_version=task.version + 1,
                              writes={"branch": "b"})
    assert refused(company, task, "verify", actor="qa").clause == "requires.checks"
    company.record_check(task.id, "lint_clean", passed=True, actor="qa")
    company.record_check(task.id, "lint_clean", passed=False, actor="qa", detail="new finding")
    task = company.get_task(task.id)
    assert refused(company, task, "verify", actor="qa").clause == "requires.checks"


def test_approval_is_required_and_lapses_when_the_task_changes(company, new_task):
    task = company.transition(new_task().id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    company.record_artifact(task.id, "patch", b"x", actor="builder")
    task = company.transition(task.id, "build", actor="builder", expected_version=task.version + 1,
                              writes={"branch": "b"})
    company.record_check(task.id, "lint_clean", passed=True, actor="qa")
    task = company.transition(task.id, "verify", actor="qa", expected_version=task.version + 1)
    # without an approval the merge does not run: it waits as a request
    with pytest.raises(ApprovalPending) as asked:
        company.transition(task.id, "merge", actor="merger", expected_version=task.version)
    request_id = asked.value.request_id
    assert company.get_task(task.id) == task
    assert company.audit_log(action="task.transition.rejected") == []
    with pytest.raises(ContractViolation) as info:
        company.approve_request(request_id, actor="qa")  # an agent may not approve a human edge
    assert info.value.clause == "approval.by"
    assert company.get_task(task.id) == task
    # the approval is for the task as it was: a change in between makes it lapse
    company.record_artifact(task.id, "patch", b"changed after the request", actor="builder")
    changed = company.get_task(task.id)
    with pytest.raises(StaleVersion):
        company.approve_request(request_id, actor="alice")
    assert company.get_request(request_id).status == "stale"
    assert company.get_task(task.id) == changed
    with pytest.raises(ApprovalPending) as again:
        company.transition(task.id, "merge", actor="merger", expected_version=changed.version)
    assert again.value.created and again.value.request_id != request_id
    company.approve_request(again.value.request_id, actor="alice")
    assert company.get_task(task.id).state == "merged"


def test_unknown_transition_task_and_principal(company, new_task):
    task = new_task()
    assert refused(company, task, "plna", actor="planner").clause == "transition"
    with pytest.raises(NotFound):
        company.transition(999, "plan", actor="planner", expected_version=1)
    with pytest.raises(Denied, match="not a principal"):
        company.transition(task.id, "plan", actor="mallory", expected_version=1)
    assert company.get_task(task.id) == task


def test_oversized_writes_are_refused_before_touching_the_task(company, new_task):
    task = new_task()
    err = refused(company, task, "plan", actor="planner", writes={"spec": "x" * (MAX_FIELDS_BYTES + 1)},
                  error=PayloadTooLarge)
    assert err.limit == MAX_FIELDS_BYTES and err.size > MAX_FIELDS_BYTES


def test_batch_checks_and_audits_each_transition(company, new_task):
    a, b = new_task(), new_task()
    with company.batch() as unit:
        unit.transition(a.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
        with pytest.raises(ContractViolation):
            unit.transition(b.id, "build", actor="builder", expected_version=1)
    assert company.get_task(a.id).state == "planned"
    assert company.get_task(b.id) == b
    assert [e.action for e in company.history(b.id)][-1] == "task.transition.rejected"
    assert company.verify_audit()[1] is None


def test_options_explain_why_each_transition_is_blocked(company, new_task):
    task = new_task()
    options = {o.name: o for o in company.options(task.id)}
    assert options["plan"].possible  # 'spec' is written by plan itself
    assert options["reject"].possible
    assert [v.clause for v in options["build"].blocked] == ["from", "requires.fields", "produces"]
    assert {v.clause for v in options["verify"].blocked} == {"from", "requires.artifacts", "requires.checks"}
    judged = {o.name: o for o in company.options(task.id, actor="builder")}
    assert "by" in [v.clause for v in judged["plan"].blocked]


def test_kernel_judges_without_a_database(spec):
    machine = WorkflowMachine("fix-lint", spec.workflows["fix-lint"])
    task = TaskSnapshot(1, "fix-lint", "found", {"rule": "E1"}, 3)
    planner = Actor("planner", "agent")
    fields = machine.check("plan", task, planner, {"spec": GOOD_SPEC}, 3, Evidence())
    assert fields == {"rule": "E1", "spec": GOOD_SPEC}
    with pytest.raises(InvalidFields):
        machine.check_new_fields({"rule": 5})
    with pytest.raises(InvalidFields):
        machine.check_new_fields({"unknown": "x"})
