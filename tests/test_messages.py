"""Messages: who may message whom (rights.message), company isolation, threads, inboxes, unread
messages and read marks, messages tied to tasks, and size limits. Every send and refusal is audited."""

from __future__ import annotations

import json

import pytest
from conftest import FIX_LINT

from roster.errors import Denied, NotFound, PayloadTooLarge, UsageError
from roster.specfile import parse_spec
from roster.store.messages import MAX_MESSAGE_CHARS

# planner may message builder only (an explicit grant replaces the default 'human'); qa may message the
# role 'coders' (builder) and humans; merger may message anyone; builder keeps the default (humans);
# scout is a read-only agent with no transitions, so it cannot read fix-lint tasks.
MESSAGE_SPEC = (
    FIX_LINT
    .replace("planner: {reports_to: alice, tier: bounded-mutator}",
             "planner: {reports_to: alice, tier: bounded-mutator, rights: {message: [builder]}}")
    .replace("builder: {reports_to: alice, tier: bounded-mutator}",
             "builder: {reports_to: alice, tier: bounded-mutator, roles: [coders]}")
    .replace("qa: {reports_to: alice, tier: bounded-mutator}",
             "qa: {reports_to: alice, tier: bounded-mutator, rights: {message: [coders, human]}}")
    .replace("merger: {reports_to: alice, tier: high-impact-executor}",
             "merger: {reports_to: alice, tier: high-impact-executor, rights: {message: ['*']}}\n"
             "  scout: {reports_to: alice}")
)


@pytest.fixture
def acme(store):
    store.apply(parse_spec(MESSAGE_SPEC), applied_by="alice")
    return store.company("acme")


def _events(company, action: str):
    return company.audit_log(action=action)


def _ids(messages) -> list[int]:
    return [m.id for m in messages]


def _task(company):
    """A fix-lint task made by alice (not ``new_task``: that fixture applies the plain spec)."""
    return company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"})[0]


def _denied_and_audited(company, call, sender: str, recipient: str) -> Denied:
    before = len(_events(company, "message.send.rejected"))
    with pytest.raises(Denied) as denied:
        call()
    rejected = _events(company, "message.send.rejected")
    assert len(rejected) == before + 1
    assert (rejected[-1].principal, rejected[-1].subject) == (sender, f"principal:{recipient}")
    assert rejected[-1].data["error"]["error"] == "denied"
    return denied.value


# -- who may message whom ----------------------------------------------------------------------------


def test_an_agent_may_message_a_human_by_default(acme):
    sent = acme.send_message("alice", "Which rule should I fix first?", actor="builder")
    assert (sent.sender, sent.recipient, sent.thread_id, sent.task_id, sent.read_at) == (
        "builder", "alice", sent.id, None, None)
    assert acme.message_inbox(actor="alice") == [sent]
    event = _events(acme, "message.send")[-1]
    assert (event.principal, event.subject) == ("builder", "principal:alice")
    assert event.data == {"id": sent.id, "thread_id": sent.id, "task_id": None, "chars": len(sent.body)}
    assert "rule" not in json.dumps(event.data)  # the audit records the message, not its body
    # a company-qualified address of the same company is the same principal
    again = acme.send_message("acme/bob", "and you?", actor="builder")
    assert again.recipient == "bob"
    assert _ids(acme.message_inbox(actor="bob")) == [again.id]


def test_an_agent_without_a_message_grant_may_not_message_another_agent(acme):
    denied = _denied_and_audited(acme, lambda: acme.send_message("planner", "hi", actor="builder"),
                                 "builder", "planner")
    assert "rights.message" in denied.message and "human" in denied.message
    _denied_and_audited(acme, lambda: acme.send_message("scout", "hi", actor="builder"), "builder", "scout")
    assert acme.message_inbox(actor="planner") == []
    assert acme.message_inbox(actor="scout") == []
    assert _events(acme, "message.send") == []


def test_a_grant_by_handle_allows_exactly_that_principal(acme):
    sent = acme.send_message("builder", "spec is ready", actor="planner")
    assert _ids(acme.message_inbox(actor="builder")) == [sent.id]
    _denied_and_audited(acme, lambda: acme.send_message("qa", "hi", actor="planner"), "planner", "qa")
    # an explicit grant replaces the default: planner may not message humans
    _denied_and_audited(acme, lambda: acme.send_message("alice", "hi", actor="planner"), "planner", "alice")
    assert acme.message_inbox(actor="alice") == []


def test_a_grant_by_role_allows_the_roles_members(acme):
    sent = acme.send_message("builder", "the lint check failed", actor="qa")  # builder has role 'coders'
    assert _ids(acme.message_inbox(actor="builder")) == [sent.id]
    assert acme.send_message("bob", "FYI", actor="qa").recipient == "bob"  # 'human' is granted too
    _denied_and_audited(acme, lambda: acme.send_message("planner", "hi", actor="qa"), "qa", "planner")


def test_a_star_grant_allows_anyone_in_the_company(acme):
    for recipient in ("planner", "builder", "scout", "alice"):
        assert acme.send_message(recipient, "merged", actor="merger").recipient == recipient


def test_humans_may_message_anyone(acme):
    for recipient in ("planner", "builder", "qa", "merger", "scout", "bob"):
        assert acme.send_message(recipient, "hello", actor="alice").recipient == recipient
    assert len(_events(acme, "message.send")) == 6


def test_a_message_never_leaves_the_company(store, acme):
    store.apply(parse_spec(FIX_LINT.replace("company: acme", "company: otherco")), applied_by="alice")
    other = store.company("otherco")
    for sender in ("builder", "alice", "merger"):
        denied = _denied_and_audited(acme, lambda sender=sender: acme.send_message(
            "otherco/alice", "psst", actor=sender), sender, "otherco/alice")
        assert "company" in denied.message
    assert other.message_inbox(actor="alice") == []
    assert acme.message_inbox(actor="alice") == []
    assert other.audit_log(action="message.send") == []


def test_an_unknown_recipient_is_not_found(acme):
    with pytest.raises(NotFound):
        acme.send_message("nobody", "hello?", actor="alice")
    with pytest.raises(NotFound):
        acme.send_message("acme/nobody", "hello?", actor="builder")
    assert _events(acme, "message.send.rejected")[-1].data["error"]["error"] == "not-found"
    assert _events(acme, "message.send") == []


def test_a_sender_outside_the_company_is_denied(acme):
    with pytest.raises(Denied):
        acme.send_message("alice", "hello", actor="mallory")
    assert acme.message_inbox(actor="alice") == []


# -- threads -----------------------------------------------------------------------------------------


def test_replies_land_in_the_thread_and_read_oldest_first(acme):
    first = acme.send_message("alice", "Can I skip E501 in vendored code?", actor="builder")
    answer = acme.send_message("builder", "Yes, exclude vendor/.", actor="alice", thread_id=first.id)
    follow = acme.send_message("alice", "Done, thanks.", actor="builder", thread_id=first.id)
    other = acme.send_message("alice", "Another topic", actor="builder")
    assert answer.thread_id == follow.thread_id == first.id
    assert other.thread_id == other.id != first.id
    assert _events(acme, "message.send")[1].data["thread_id"] == first.id

    thread = acme.thread(first.id, actor="builder")
    assert _ids(thread) == [first.id, answer.id, follow.id]
    assert [m.sender for m in thread] == ["builder", "alice", "builder"]
    assert acme.thread(first.id, actor="alice") == thread
    assert acme.thread(first.id, actor=None) == thread
    assert _ids(acme.thread(other.id, actor="builder")) == [other.id]


def test_only_participants_may_reply_in_a_thread(acme):
    first = acme.send_message("alice", "question", actor="builder")
    with pytest.raises(UsageError, match="not in thread"):
        acme.send_message("alice", "me too", actor="qa", thread_id=first.id)
    with pytest.raises(UsageError):
        acme.send_message("builder", "butting in", actor="bob", thread_id=first.id)
    assert _ids(acme.thread(first.id, actor="alice")) == [first.id]
    assert _events(acme, "message.send.rejected")[-1].data["error"]["error"] == "usage"
    # the reply must name a thread, i.e. a thread's first message
    reply = acme.send_message("builder", "answer", actor="alice", thread_id=first.id)
    with pytest.raises(NotFound):
        acme.send_message("alice", "re: answer", actor="builder", thread_id=reply.id)
    with pytest.raises(NotFound):
        acme.send_message("alice", "re: nothing", actor="builder", thread_id=9999)
    assert _ids(acme.thread(first.id, actor="alice")) == [first.id, reply.id]


def test_a_thread_is_hidden_from_agents_outside_it_but_not_from_humans(acme):
    first = acme.send_message("alice", "private question", actor="builder")
    acme.send_message("builder", "private answer", actor="alice", thread_id=first.id)
    with pytest.raises(NotFound) as hidden:
        acme.thread(first.id, actor="qa")
    with pytest.raises(NotFound) as missing:
        acme.thread(9999, actor="qa")
    # a hidden thread and a missing one look alike (existence does not leak)
    assert hidden.value.message.replace(str(first.id), "N") == missing.value.message.replace("9999", "N")
    assert len(acme.thread(first.id, actor="bob")) == 2  # a human who is not in it
    with pytest.raises(NotFound):
        acme.thread(9999, actor="alice")


# -- inbox, unread and read marks --------------------------------------------------------------------


def test_the_inbox_lists_the_actors_messages_newest_first(acme):
    one = acme.send_message("alice", "one", actor="builder")
    acme.send_message("bob", "not for alice", actor="builder")
    two = acme.send_message("alice", "two", actor="qa")
    three = acme.send_message("alice", "three", actor="merger")
    acme.send_message("builder", "from alice", actor="alice")
    assert _ids(acme.message_inbox(actor="alice")) == [three.id, two.id, one.id]
    assert _ids(acme.message_inbox(actor="alice", limit=2)) == [three.id, two.id]
    assert [m.body for m in acme.message_inbox(actor="bob")] == ["not for alice"]
    assert acme.message_inbox(actor="planner") == []


def test_unread_messages_are_grouped_per_recipient_and_read_marks_are_the_actors_own(acme):
    a1 = acme.send_message("alice", "a1", actor="builder")
    b1 = acme.send_message("builder", "b1", actor="alice")
    a2 = acme.send_message("alice", "a2", actor="qa")
    b2 = acme.send_message("builder", "b2", actor="planner")
    q1 = acme.send_message("qa", "q1", actor="merger")

    unread = acme.unread_messages(["alice", "builder", "planner"])
    assert {who: _ids(msgs) for who, msgs in unread.items()} == {
        "alice": [a1.id, a2.id], "builder": [b1.id, b2.id]}  # oldest first; nobody wrote to planner
    assert acme.unread_messages([]) == {}
    assert _ids(acme.unread_messages(["alice"], limit=1)["alice"]) == [a1.id]

    # builder may mark only its own messages, whatever ids it names
    assert acme.mark_read([a1.id, b1.id, q1.id], actor="builder") == 1
    assert acme.mark_read([b1.id], actor="builder") == 0  # already read
    inbox = {m.id: m for m in acme.message_inbox(actor="builder")}
    assert inbox[b1.id].read_at is not None and inbox[b2.id].read_at is None
    assert all(m.read_at is None for m in acme.message_inbox(actor="alice"))
    assert _ids(acme.message_inbox(actor="builder", unread_only=True)) == [b2.id]
    assert {who: _ids(msgs) for who, msgs in acme.unread_messages(["alice", "builder", "qa"]).items()} == {
        "alice": [a1.id, a2.id], "builder": [b2.id], "qa": [q1.id]}

    assert acme.mark_read([a1.id, a2.id], actor="alice") == 2
    assert acme.mark_read([], actor="alice") == 0
    assert "alice" not in acme.unread_messages(["alice", "builder"])
    assert acme.message_inbox(actor="alice", unread_only=True) == []


# -- tasks, sizes, audit -----------------------------------------------------------------------------


def test_a_message_tied_to_a_task_needs_read_access_to_it(acme):
    task = _task(acme)
    assert acme.get_principal("scout").status == "active"
    sent = acme.send_message("alice", "the plan for this one is odd", actor="qa",
                             task_id=task.id)
    assert sent.task_id == task.id
    assert _events(acme, "message.send")[-1].data["task_id"] == task.id
    # scout may message humans, but may not read fix-lint tasks
    assert acme.send_message("alice", "untied", actor="scout").task_id is None
    _denied_and_audited(acme, lambda: acme.send_message("alice", "about task", actor="scout", task_id=task.id),
                        "scout", "alice")
    assert [m.body for m in acme.message_inbox(actor="alice")] == ["untied", sent.body]
    with pytest.raises(NotFound):
        acme.send_message("alice", "about a ghost", actor="qa", task_id=9999)


def test_message_bodies_must_be_non_empty_and_within_the_limit(acme):
    with pytest.raises(PayloadTooLarge) as too_large:
        acme.send_message("alice", "x" * (MAX_MESSAGE_CHARS + 1), actor="builder")
    assert (too_large.value.size, too_large.value.limit) == (MAX_MESSAGE_CHARS + 1, MAX_MESSAGE_CHARS)
    for empty in ("", "   \n"):
        with pytest.raises(UsageError, match="body"):
            acme.send_message("alice", empty, actor="builder")
    assert acme.message_inbox(actor="alice") == []
    assert [e.data["error"]["error"] for e in _events(acme, "message.send.rejected")] == [
        "payload-too-large", "usage", "usage"]
    assert len(acme.send_message("alice", "x" * MAX_MESSAGE_CHARS, actor="builder").body) == MAX_MESSAGE_CHARS


def test_the_audit_chain_verifies_after_messaging(acme):
    task = _task(acme)
    first = acme.send_message("alice", "hi", actor="builder", task_id=task.id)
    acme.send_message("builder", "hello", actor="alice", thread_id=first.id)
    for call in (lambda: acme.send_message("planner", "x", actor="builder"),
                 lambda: acme.send_message("otherco/alice", "x", actor="builder"),
                 lambda: acme.send_message("nobody", "x", actor="builder"),
                 lambda: acme.send_message("alice", "x", actor="qa", thread_id=first.id),
                 lambda: acme.send_message("alice", "", actor="builder")):
        with pytest.raises((Denied, NotFound, UsageError)):
            call()
    acme.mark_read([first.id], actor="alice")
    checked, problem = acme.verify_audit()
    assert problem is None and checked == len(acme.audit_log())
    assert len(_events(acme, "message.send")) == 2
    assert len(_events(acme, "message.send.rejected")) == 5


def test_a_retired_principal_gets_no_messages(company):
    company.set_status("bob", "retired", actor="alice")
    with pytest.raises(UsageError, match="retired"):
        company.send_message("bob", "are you there?", actor="alice")
    assert company.audit_log(action="message.send.rejected")
