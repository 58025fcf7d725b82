"""Delegation: a child task carries a typed packet; a parent cannot finish while a child is open (clause
``children``) unless its transition allows it; adopting an existing task; no delegation loops; the brief
shows a finished child's result. Real SQLite files, no mocks."""

from __future__ import annotations

import pytest

from roster.errors import ContractViolation, UsageError
from roster.specfile import parse_spec
from roster.store import audit

JOBS = """\
company: acme
workflows:
  job:
    states: [open, doing, done, dropped, abandoned]
    initial: open
    fields:
      result: {type: string}
    transitions:
      start:   {from: open, to: doing, by: [human, worker]}
      finish:  {from: [open, doing], to: done, by: [human, worker], writes: [result]}
      drop:    {from: [open, doing], to: dropped, by: [human]}
      abandon: {from: [open, doing], to: abandoned, by: [human], allow_open_children: true}
agents:
  worker: {reports_to: alice, tier: bounded-mutator, rights: {create: ["*"]}}
humans:
  alice: {display_name: Alice}
"""

PACKET = {"subproblem": "find the flaky test", "context": "CI fails one run in five", "tried": ["rerun"],
          "desired_output": "the test name and a fix", "success_condition": "ten green runs in a row"}


@pytest.fixture
def jobs(store):
    store.apply(parse_spec(JOBS), applied_by="alice")
    return store.company("acme")


def make(jobs, title="job"):
    return jobs.create_task(workflow="job", title=title, actor="alice")[0]


def refused_clause(jobs, task_id, name, actor="alice", **kwargs):
    task = jobs.get_task(task_id)
    with pytest.raises(ContractViolation) as info:
        jobs.transition(task_id, name, actor=actor, expected_version=task.version, **kwargs)
    assert jobs.get_task(task_id) == task
    return info.value


def move(jobs, task_id, name, actor="alice", **kwargs):
    task = jobs.get_task(task_id)
    return jobs.transition(task_id, name, actor=actor, expected_version=task.version, **kwargs)


def test_delegate_creates_a_child_with_its_packet(jobs):
    parent = make(jobs, "parent")
    child = jobs.delegate(parent.id, actor="worker", workflow="job", title="child", packet=PACKET)
    assert child.parent_id == parent.id and child.state == "open" and child.created_by == "worker"
    stored = jobs.get_task(child.id)
    assert stored.parent_id == parent.id
    assert stored.packet["subproblem"] == "find the flaky test"
    assert stored.packet["tried"] == ["rerun"]
    assert stored.packet["success_condition"] == "ten green runs in a row"
    assert stored.packet["blocking_threshold"] == ""
    assert stored.packet["delegated_by"] == "worker"
    assert [c.id for c in jobs.children(parent.id)] == [child.id]
    assert jobs.children(child.id) == []
    event = jobs.audit_log(action="task.create", task_id=child.id)[0]
    assert event.data["parent_id"] == parent.id and event.data["packet"]["delegated_by"] == "worker"


def test_a_blocking_threshold_alone_is_enough(jobs):
    parent = make(jobs)
    packet = {"subproblem": "s", "desired_output": "o", "blocking_threshold": "two hours without progress"}
    child = jobs.delegate(parent.id, actor="alice", workflow="job", title="c", packet=packet)
    assert child.packet["blocking_threshold"] == "two hours without progress"


def test_a_packet_without_a_done_condition_is_refused(jobs):
    parent = make(jobs)
    packet = {"subproblem": "s", "desired_output": "o"}
    with pytest.raises(UsageError, match="success_condition") as info:
        jobs.delegate(parent.id, actor="alice", workflow="job", title="c", packet=packet)
    assert "blocking_threshold" in str(info.value)
    assert jobs.children(parent.id) == []
    assert [t.id for t in jobs.list_tasks()] == [parent.id]


def test_a_packet_with_an_unknown_key_is_refused_naming_it(jobs):
    parent = make(jobs)
    with pytest.raises(UsageError, match="deadline"):
        jobs.delegate(parent.id, actor="alice", workflow="job", title="c",
                      packet={**PACKET, "deadline": "friday"})
    with pytest.raises(UsageError, match="desired_output"):
        jobs.delegate(parent.id, actor="alice", workflow="job", title="c",
                      packet={k: v for k, v in PACKET.items() if k != "desired_output"})
    assert jobs.children(parent.id) == []


def test_children_lists_only_the_parents_children_oldest_first(jobs):
    parent, other = make(jobs, "parent"), make(jobs, "other")
    first = jobs.delegate(parent.id, actor="alice", workflow="job", title="one", packet=PACKET)
    jobs.delegate(other.id, actor="alice", workflow="job", title="elsewhere", packet=PACKET)
    second = jobs.delegate(parent.id, actor="alice", workflow="job", title="two", packet=PACKET)
    assert [c.id for c in jobs.children(parent.id)] == [first.id, second.id]
    assert [c.id for c in jobs.children(parent.id, actor="worker")] == [first.id, second.id]


def test_a_parent_cannot_finish_while_a_child_is_open(jobs):
    parent = make(jobs, "parent")
    child = jobs.delegate(parent.id, actor="alice", workflow="job", title="child", packet=PACKET)
    err = refused_clause(jobs, parent.id, "finish", writes={"result": "r"})
    assert err.clause == "children" and str(child.id) in err.detail
    assert refused_clause(jobs, parent.id, "drop").clause == "children"
    rejected = jobs.audit_log(action="task.transition.rejected", task_id=parent.id)
    assert [e.data["error"]["clause"] for e in rejected] == ["children", "children"]
    # a non-terminal move is not held up by the child
    assert move(jobs, parent.id, "start").state == "doing"
    move(jobs, child.id, "start", actor="worker")
    assert refused_clause(jobs, parent.id, "finish").clause == "children"
    move(jobs, child.id, "finish", actor="worker", writes={"result": "found it"})
    assert move(jobs, parent.id, "finish", writes={"result": "done"}).state == "done"


def test_every_child_must_be_finished_and_any_terminal_state_counts(jobs):
    parent = make(jobs)
    first = jobs.delegate(parent.id, actor="alice", workflow="job", title="one", packet=PACKET)
    second = jobs.delegate(parent.id, actor="alice", workflow="job", title="two", packet=PACKET)
    move(jobs, first.id, "finish")
    err = refused_clause(jobs, parent.id, "finish")
    assert str(second.id) in err.detail and str(first.id) not in err.detail.split("are still open")[0]
    move(jobs, second.id, "drop")
    assert move(jobs, parent.id, "finish").state == "done"


def test_allow_open_children_lets_a_parent_finish_with_open_children(jobs):
    parent = make(jobs)
    child = jobs.delegate(parent.id, actor="alice", workflow="job", title="c", packet=PACKET)
    assert move(jobs, parent.id, "abandon").state == "abandoned"
    assert jobs.get_task(child.id).state == "open"


def test_adopt_makes_an_existing_task_a_child(jobs):
    parent, orphan = make(jobs, "parent"), make(jobs, "orphan")
    adopted = jobs.adopt(parent.id, orphan.id, actor="alice", packet=PACKET)
    assert adopted.parent_id == parent.id and adopted.version == orphan.version + 1
    assert adopted.packet["delegated_by"] == "alice" and adopted.packet["subproblem"] == PACKET["subproblem"]
    assert [c.id for c in jobs.children(parent.id)] == [orphan.id]
    event = jobs.audit_log(action="task.adopt")[-1]
    assert event.subject == f"task:{orphan.id}" and event.data["parent_id"] == parent.id
    # the adopted child now holds the parent up like a delegated one
    assert refused_clause(jobs, parent.id, "finish").clause == "children"


def test_adopt_checks_the_packet(jobs):
    parent, orphan = make(jobs), make(jobs)
    with pytest.raises(UsageError, match="success_condition"):
        jobs.adopt(parent.id, orphan.id, actor="alice", packet={"subproblem": "s", "desired_output": "o"})
    assert jobs.get_task(orphan.id).parent_id is None


def test_a_task_cannot_be_adopted_under_itself(jobs):
    task = make(jobs)
    with pytest.raises(ContractViolation) as info:
        jobs.adopt(task.id, task.id, actor="alice", packet=PACKET)
    assert info.value.clause == "delegation-cycle"
    assert jobs.get_task(task.id) == task
    assert jobs.audit_log(action="task.adopt.rejected")[-1].data["error"]["clause"] == "delegation-cycle"


def test_adopting_that_would_loop_is_refused_and_changes_nothing(jobs):
    a, b = make(jobs, "a"), make(jobs, "b")
    jobs.adopt(b.id, a.id, actor="alice", packet=PACKET)  # a is a child of b
    before = jobs.get_task(b.id)
    with pytest.raises(ContractViolation) as info:
        jobs.adopt(a.id, b.id, actor="alice", packet=PACKET)  # b under a: a loop
    assert info.value.clause == "delegation-cycle"
    assert jobs.get_task(b.id) == before and jobs.get_task(b.id).parent_id is None
    assert jobs.get_task(a.id).parent_id == b.id
    assert jobs.verify_audit()[1] is None


def test_a_longer_loop_through_grandchildren_is_refused(jobs):
    top = make(jobs, "top")
    middle = jobs.delegate(top.id, actor="alice", workflow="job", title="middle", packet=PACKET)
    bottom = jobs.delegate(middle.id, actor="alice", workflow="job", title="bottom", packet=PACKET)
    with pytest.raises(ContractViolation) as info:
        jobs.adopt(bottom.id, top.id, actor="alice", packet=PACKET)
    assert info.value.clause == "delegation-cycle"
    assert jobs.get_task(top.id).parent_id is None
    # moving a subtree elsewhere without a loop is fine
    other = make(jobs, "other")
    assert jobs.adopt(other.id, middle.id, actor="alice", packet=PACKET).parent_id == other.id
    assert [c.id for c in jobs.children(top.id)] == []


def test_children_txn_shows_open_children_and_finished_results(store, jobs):
    parent = make(jobs, "parent")
    done = jobs.delegate(parent.id, actor="alice", workflow="job", title="done one", packet=PACKET)
    pending = jobs.delegate(parent.id, actor="alice", workflow="job", title="open one", packet=PACKET)
    jobs.record_artifact(done.id, "report", b"v1", actor="worker", name="findings")
    latest = jobs.record_artifact(done.id, "report", b"v2", actor="worker", name="findings")
    move(jobs, done.id, "finish", actor="worker", writes={"result": "test_io is flaky"})
    with store.read() as conn:
        shown = jobs.children_txn(conn, jobs.current_txn(conn), parent.id)
    assert [c["id"] for c in shown] == [done.id, pending.id]
    finished, still_open = shown
    assert finished["open"] is False and finished["state"] == "done"
    assert finished["result"]["fields"] == {"result": "test_io is flaky"}
    assert finished["result"]["artifacts"] == [
        {"name": "findings", "kind": "report", "version": 2, "sha256": latest.sha256}]
    assert still_open["open"] is True and "result" not in still_open
    assert still_open["desired_output"] == PACKET["desired_output"]


def test_delegation_keeps_the_audit_chain_valid(store, jobs):
    parent = make(jobs)
    child = jobs.delegate(parent.id, actor="alice", workflow="job", title="c", packet=PACKET)
    with pytest.raises(ContractViolation):
        jobs.adopt(child.id, parent.id, actor="alice", packet=PACKET)
    with store.read() as conn:
        assert audit.verify(conn, "acme")[1] is None


def test_a_finished_task_takes_no_new_children(jobs):
    parent = make(jobs, "parent")
    move(jobs, parent.id, "finish", writes={"result": "r"})
    with pytest.raises(UsageError, match="finished"):
        jobs.delegate(parent.id, actor="alice", workflow="job", title="late", packet=PACKET)
    orphan = make(jobs, "orphan")
    with pytest.raises(UsageError, match="finished"):
        jobs.adopt(parent.id, orphan.id, actor="alice", packet=PACKET)
    assert jobs.children(parent.id) == [] and jobs.get_task(orphan.id).parent_id is None
