"""Routing a task (owner, priority) is the coordinator's right: checked, versioned and audited."""

from __future__ import annotations

import pytest
from conftest import FIX_LINT

from roster.errors import Denied, NotFound, StaleVersion, UsageError
from roster.specfile import parse_spec

ROUTER = FIX_LINT.replace("humans:\n", "  router: {tier: coordinator, rights: {read: ['*'], write: ['*']}}\nhumans:\n")


@pytest.fixture
def routed(store):
    store.apply(parse_spec(ROUTER), applied_by="alice")
    company = store.company("acme")
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="router", fields={"rule": "E1"})
    return company, task


def test_a_coordinator_routes_a_task(routed):
    company, task = routed
    routed_task = company.assign(task.id, actor="router", owner="planner", priority=3)
    assert (routed_task.owner, routed_task.priority, routed_task.version) == ("planner", 3, 2)
    assert company.get_task(task.id) == routed_task
    event = company.audit_log(action="task.assign")[-1]
    assert (event.principal, event.data["owner"], event.data["priority"]) == ("router", "planner", 3)


def test_a_bounded_mutator_may_not_route(routed):
    company, task = routed
    with pytest.raises(Denied):
        company.assign(task.id, actor="planner", owner="qa")
    assert company.get_task(task.id) == task
    assert company.audit_log(action="task.assign.rejected")[-1].data["error"]["error"] == "denied"


def test_routing_checks_owner_version_and_that_something_changes(routed):
    company, task = routed
    with pytest.raises(NotFound):
        company.assign(task.id, actor="router", owner="mallory")
    with pytest.raises(StaleVersion):
        company.assign(task.id, actor="router", priority=1, expected_version=9)
    with pytest.raises(UsageError):
        company.assign(task.id, actor="router")
    assert company.get_task(task.id) == task


def test_a_coordinator_writes_no_content(routed):
    company, task = routed
    with pytest.raises(Denied, match="tier:coordinator"):
        company.record_check(task.id, "lint_clean", passed=True, actor="router")
    assert company.explain("router", "assign", f"task:{task.id}").allowed
