"""Rights: tiers and grants, default deny, forbid over permit (the kill switch), every entry point
checked, tenant isolation, tool calls, ``explain`` agreeing with enforcement, and each decision taken
against its principal's policies only: the whole set's decisions, at a cost independent of other agents."""

from __future__ import annotations

import json
import re

import cedarpy
import pytest
from conftest import FIX_LINT, GOOD_SPEC, StepClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roster.errors import ApprovalPending, Denied, NotFound, SpecError, UsageError
from roster.kernel.rights import Decision, PrincipalFacts, Resource, Rights
from roster.specfile import parse_spec
from roster.store import Store

# Every transition's ``by`` names every agent and human, and every approval edge names every staff
# member, so contracts never stand between a principal and the rights check: only rights decide.
TIERS = """\
company: acme
workspaces:
  eng:
    portfolios: {core: {}, web: {}}
workflows:
  alpha:
    portfolio: eng/core
    states: [open, doing, done, shipped]
    initial: open
    fields: {note: {type: string}}
    transitions:
      start:    {from: open, to: doing, by: [agent, human]}
      annotate: {from: open, to: doing, by: [agent, human], writes: [note]}
      finish:   {from: doing, to: done, by: [agent, human]}
      ship:     {from: [open, doing], to: shipped, by: [agent, human], approval: {by: [human, staff]}}
  beta:
    portfolio: eng/web
    states: [open, doing, done, shipped]
    initial: open
    fields: {note: {type: string}}
    transitions:
      start:    {from: open, to: doing, by: [agent, human]}
      annotate: {from: open, to: doing, by: [agent, human], writes: [note]}
      finish:   {from: doing, to: done, by: [agent, human]}
      ship:     {from: [open, doing], to: shipped, by: [agent, human], approval: {by: [human, staff]}}
tools:
  ruff: {command: ruff check}
  pytest: {command: pytest}
agents:
  reader:   {tier: read-only, roles: [staff], tools: [ruff]}
  narrow:   {tier: bounded-mutator, roles: [staff], rights: {transitions: [alpha.start]}}
  mutator:  {tier: bounded-mutator, roles: [staff], tools: [pytest]}
  exec:     {tier: high-impact-executor, roles: [staff]}
  coord:    {tier: coordinator, roles: [staff], rights: {read: [eng], write: [eng/core]}}
  idle:     {tier: bounded-mutator, roles: [staff], rights: {transitions: []}}
  sleeper:  {tier: high-impact-executor, roles: [staff]}
  boss:
    tier: high-impact-executor
    roles: [staff]
    tools: [ruff, pytest]
    rights:
      read: ['*']
      write: ['*']
      create: ['*']
      assign: ['*']
      transitions: [alpha.start, alpha.annotate, alpha.finish, alpha.ship,
                    beta.start, beta.annotate, beta.finish, beta.ship]
      approve: [alpha.ship, beta.ship]
humans:
  alice: {display_name: Alice}
  bob: {roles: [staff]}
"""

AGENTS = ("reader", "narrow", "mutator", "exec", "coord", "idle", "sleeper", "boss")
HUMANS = ("alice", "bob")
TRANSITIONS = ("start", "annotate", "finish", "ship")


@pytest.fixture
def tiers(store):
    store.apply(parse_spec(TIERS), applied_by="alice")
    return store.company("acme")


def _task(company, workflow="alpha", state="open"):
    """A fresh task made by alice, moved to ``state`` by alice."""
    task, _ = company.create_task(workflow=workflow, title=f"{workflow} task", actor="alice")
    if state == "doing":
        task = company.transition(task.id, "start", actor="alice", expected_version=task.version)
    return task


def _ship_request(company, task, requester="alice") -> int:
    """``requester`` asks to ship ``task`` (an approval edge); returns the id of the request it opens."""
    with pytest.raises(ApprovalPending) as asked:
        company.transition(task.id, "ship", actor=requester, expected_version=company.get_task(task.id).version)
    return asked.value.request_id


def _denied(call) -> Denied:
    with pytest.raises(Denied) as denied:
        call()
    return denied.value


# -- tiers -----------------------------------------------------------------------------------------


def test_read_only_agent_reads_but_every_mutation_is_denied(tiers):
    task = _task(tiers)
    tiers.record_check(task.id, "lint", passed=True, actor="alice")
    task = tiers.get_task(task.id)
    assert tiers.get_task(task.id, actor="reader") == task
    assert [t.id for t in tiers.list_tasks(actor="reader")] == [task.id]
    assert {o.name for o in tiers.options(task.id, actor="reader")} == set(TRANSITIONS)
    assert [e.action for e in tiers.history(task.id, actor="reader")] == ["task.create", "check.record"]
    assert tiers.list_artifacts(task.id, actor="reader") == []

    request_id = _ship_request(tiers, task)  # approval.by names staff, reader's role
    mutations = {
        "create": lambda: tiers.create_task(workflow="alpha", title="x", actor="reader"),
        "transition": lambda: tiers.transition(task.id, "start", actor="reader", expected_version=task.version),
        "artifact": lambda: tiers.record_artifact(task.id, "patch", b"diff", actor="reader"),
        "check": lambda: tiers.record_check(task.id, "lint", passed=False, actor="reader"),
        "approve": lambda: tiers.approve_request(request_id, actor="reader"),
        "reject": lambda: tiers.reject_request(request_id, actor="reader", note="no"),
        "admin": lambda: tiers.pause("*", actor="reader"),
    }
    for name, call in mutations.items():
        denied = _denied(call)
        assert "tier:read-only" in denied.policies, name
    assert tiers.get_request(request_id).status == "pending"
    assert tiers.get_task(task.id) == task
    assert [t.id for t in tiers.list_tasks()] == [task.id]
    assert tiers.paused() == []


def test_bounded_mutator_takes_only_its_granted_transitions(tiers):
    task = _task(tiers)
    moved = tiers.transition(task.id, "start", actor="narrow", expected_version=1)
    assert moved.state == "doing"
    # 'by' names every agent, but narrow's explicit rights grant only alpha.start
    denied = _denied(lambda: tiers.transition(task.id, "finish", actor="narrow", expected_version=moved.version))
    assert denied.policies == () and "default deny" in denied.message
    denied = _denied(lambda: tiers.transition(_task(tiers).id, "annotate", actor="narrow", expected_version=1,
                                              writes={"note": "n"}))
    assert denied.policies == ()
    assert tiers.get_task(task.id).state == "doing"
    # the default grant (every transition whose 'by' names the agent) includes finish
    assert tiers.transition(task.id, "finish", actor="mutator", expected_version=moved.version).state == "done"
    # narrow's read and write follow its granted transitions: alpha only
    tiers.record_check(task.id, "lint", passed=True, actor="narrow")
    beta = _task(tiers, "beta")
    _denied(lambda: tiers.get_task(beta.id, actor="narrow"))
    assert tiers.transition(beta.id, "start", actor="mutator", expected_version=1).state == "doing"


def test_approval_gated_transitions_need_a_high_impact_executor(tiers):
    expected = {
        "mutator": ("tier:approval-gated",),  # granted ship (by default), and still denied
        "coord": ("tier:approval-gated",),
        "reader": ("tier:approval-gated", "tier:read-only"),
        "narrow": ("tier:approval-gated",),  # not granted either; the forbid is what Cedar names
    }
    for agent, policies in expected.items():
        task = _task(tiers)
        # denied before any request is opened: an approval could not make the move theirs
        denied = _denied(lambda task=task, agent=agent: tiers.transition(task.id, "ship", actor=agent,
                                                                            expected_version=1))
        assert denied.policies == policies, agent
        assert tiers.get_task(task.id).state == "open"
    assert tiers.list_requests() == []
    # the executor's move waits for an approval, and a human's approval runs it
    task = _task(tiers)
    request_id = _ship_request(tiers, task, "exec")
    assert tiers.get_task(task.id).state == "open"
    assert tiers.approve_request(request_id, actor="bob").status == "approved"
    assert tiers.get_task(task.id).state == "shipped"
    # an agent granted the approval may approve, and the executor's move then runs
    task = _task(tiers)
    tiers.approve_request(_ship_request(tiers, task, "exec"), actor="boss")
    assert tiers.get_task(task.id).state == "shipped"
    # an agent without the approve grant may not approve, although approval.by names its role
    task = _task(tiers)
    request_id = _ship_request(tiers, task, "alice")
    denied = _denied(lambda: tiers.approve_request(request_id, actor="exec"))
    assert denied.policies == ()
    assert tiers.get_request(request_id).status == "pending"
    assert tiers.get_task(task.id).state == "open"


def test_coordinator_creates_in_its_scopes_but_neither_writes_fields_nor_evidence(tiers):
    task, created = tiers.create_task(workflow="alpha", title="planned by coord", actor="coord")
    assert created and task.created_by == "coord"
    denied = _denied(lambda: tiers.create_task(workflow="beta", title="outside", actor="coord"))
    assert denied.policies == ()
    assert tiers.get_task(_task(tiers, "beta").id, actor="coord").workflow == "beta"  # read: eng
    denied = _denied(lambda: tiers.transition(task.id, "annotate", actor="coord", expected_version=1,
                                              writes={"note": "n"}))
    assert denied.policies == ("tier:coordinator:transitions",)
    denied = _denied(lambda: tiers.record_artifact(task.id, "plan", b"p", actor="coord"))
    assert denied.policies == ("tier:coordinator",)
    denied = _denied(lambda: tiers.record_check(task.id, "lint", passed=True, actor="coord"))
    assert denied.policies == ("tier:coordinator",)
    assert tiers.get_task(task.id).version == 1
    assert tiers.transition(task.id, "start", actor="coord", expected_version=1).state == "doing"


def test_default_deny_an_agent_with_no_grants_reads_nothing(tiers):
    task = _task(tiers)
    _task(tiers, "beta")
    denied = _denied(lambda: tiers.get_task(task.id, actor="idle"))
    assert denied.policies == () and "default deny" in str(denied)
    assert tiers.list_tasks(actor="idle") == []
    assert len(tiers.list_tasks(actor="alice")) == 2
    # an agent added outside the spec has no grants either
    tiers.add_principal("newbie", kind="agent", actor="alice")
    assert tiers.list_tasks(actor="newbie") == []
    _denied(lambda: tiers.get_task(task.id, actor="newbie"))
    _denied(lambda: tiers.record_tool_call("ruff", actor="newbie"))


# -- forbid overrides permit: the kill switch and paused principals --------------------------------


def test_kill_switch_on_a_portfolio_overrides_every_grant(tiers):
    alpha, beta = _task(tiers), _task(tiers, "beta")
    assert tiers.get_task(alpha.id, actor="boss") == alpha
    tiers.pause("eng/core", actor="alice")
    assert tiers.paused() == ["eng/core"]
    calls = {
        "read": lambda: tiers.get_task(alpha.id, actor="boss"),
        "transition": lambda: tiers.transition(alpha.id, "start", actor="boss", expected_version=1),
        "check": lambda: tiers.record_check(alpha.id, "lint", passed=True, actor="boss"),
        "create": lambda: tiers.create_task(workflow="alpha", title="x", actor="boss"),
    }
    for name, call in calls.items():
        denied = _denied(call)
        assert denied.policies == ("kill-switch:eng/core",), name
    assert [t.id for t in tiers.list_tasks(actor="boss")] == [beta.id]
    # other portfolios, tools and humans are unaffected
    assert tiers.transition(beta.id, "start", actor="boss", expected_version=1).state == "doing"
    tiers.record_tool_call("ruff", actor="boss")
    assert tiers.transition(alpha.id, "start", actor="alice", expected_version=1).state == "doing"
    tiers.resume("eng/core", actor="alice")
    assert tiers.paused() == []
    assert tiers.transition(alpha.id, "finish", actor="boss", expected_version=2).state == "done"
    events = [e.action for e in tiers.audit_log(action="killswitch.*")]
    assert events == ["killswitch.pause", "killswitch.resume"]


def test_pausing_the_whole_company_stops_every_agent_but_not_humans(tiers):
    alpha, beta = _task(tiers), _task(tiers, "beta")
    tiers.pause("*", actor="bob")
    for agent in AGENTS:
        for task in (alpha, beta):
            _denied(lambda task=task, agent=agent: tiers.get_task(task.id, actor=agent))
        assert tiers.list_tasks(actor=agent) == []
    denied = _denied(lambda: tiers.get_task(alpha.id, actor="boss"))
    assert denied.policies == ("kill-switch:*",)
    denied = _denied(lambda: tiers.record_tool_call("ruff", actor="reader"))
    assert denied.policies == ("kill-switch:*",)
    denied = _denied(lambda: tiers.audit_log(actor="boss"))
    assert "kill-switch:*" in denied.policies
    for human in HUMANS:
        assert len(tiers.list_tasks(actor=human)) == 2
    assert tiers.transition(alpha.id, "start", actor="alice", expected_version=1).state == "doing"
    tiers.resume("*", actor="alice")
    assert tiers.get_task(beta.id, actor="boss") == beta
    tiers.record_tool_call("ruff", actor="reader")
    assert tiers.transition(beta.id, "start", actor="mutator", expected_version=1).state == "doing"


def test_pause_of_an_unknown_scope_is_not_found(tiers):
    with pytest.raises(NotFound, match="scope"):
        tiers.pause("eng/nowhere", actor="alice")
    assert tiers.paused() == []


def test_pausing_an_agent_takes_effect_at_once_in_another_store_on_the_same_file(tiers, databases, tmp_path):
    task = _task(tiers)
    other_store = Store.open(databases("roster"), clock=StepClock(), artifact_root=tmp_path / "artifacts")
    try:
        other = other_store.company("acme")
        assert other.get_task(task.id, actor="mutator") == task  # warms the other process's cache
        assert other.explain("mutator", "read", f"task:{task.id}").allowed
        tiers.set_status("mutator", "paused", actor="alice")
        denied = _denied(lambda: tiers.get_task(task.id, actor="mutator"))
        assert denied.policies == ("inactive-principal",)
        denied = _denied(lambda: other.get_task(task.id, actor="mutator"))
        assert denied.policies == ("inactive-principal",)
        decision = other.explain("mutator", "read", f"task:{task.id}")
        assert not decision.allowed and decision.policies == ("inactive-principal",)
        _denied(lambda: other.transition(task.id, "start", actor="mutator", expected_version=1))
        assert other.get_task(task.id).state == "open"
        # and back: resuming in one process restores it in the other
        tiers.set_status("mutator", "active", actor="alice")
        assert other.transition(task.id, "start", actor="mutator", expected_version=1).state == "doing"
        # the kill switch crosses processes the same way
        other.pause("eng/core", actor="alice")
        assert _denied(lambda: tiers.get_task(task.id, actor="mutator")).policies == ("kill-switch:eng/core",)
    finally:
        other_store.close()


# -- every entry point checks rights ---------------------------------------------------------------


def test_every_entry_point_denies_and_audits_an_agent_without_read(tiers, store):
    beta = _task(tiers, "beta")
    request_id = _ship_request(tiers, beta)
    alpha = _task(tiers)
    calls = {
        "get_task": lambda: tiers.get_task(beta.id, actor="narrow"),
        "options": lambda: tiers.options(beta.id, actor="narrow"),
        "history": lambda: tiers.history(beta.id, actor="narrow"),
        "list_artifacts": lambda: tiers.list_artifacts(beta.id, actor="narrow"),
        "transition": lambda: tiers.transition(beta.id, "start", actor="narrow", expected_version=1),
        "record_artifact": lambda: tiers.record_artifact(beta.id, "patch", b"diff", actor="narrow"),
        "record_check": lambda: tiers.record_check(beta.id, "lint", passed=True, actor="narrow"),
        "approve_request": lambda: tiers.approve_request(request_id, actor="narrow"),
        "reject_request": lambda: tiers.reject_request(request_id, actor="narrow", note="no"),
        "audit_log": lambda: tiers.audit_log(actor="narrow"),
        "verify_audit": lambda: tiers.verify_audit(actor="narrow"),
    }
    for name, call in calls.items():
        before = tiers.audit_log()[-1].seq
        _denied(call)
        new = tiers.audit_log(after_seq=before)
        assert len(new) == 1, name
        event = new[0]
        assert event.action.endswith(".rejected"), (name, event.action)
        assert event.principal == "narrow", name
        assert event.data["error"]["error"] == "denied", name
    assert tiers.get_task(beta.id) == beta
    assert tiers.get_request(request_id).status == "pending"
    assert [t.id for t in tiers.list_tasks(actor="narrow")] == [alpha.id]
    assert {t.id for t in tiers.list_tasks(actor="alice")} == {alpha.id, beta.id}
    assert tiers.verify_audit()[1] is None


def test_a_request_on_a_workflow_an_agent_may_not_read_stays_hidden_from_it(tiers):
    secret = tiers.create_task(workflow="beta", title="beta launch codes", actor="alice")[0]
    request_id = _ship_request(tiers, secret)
    _denied(lambda: tiers.get_task(secret.id, actor="narrow"))  # narrow reads alpha only
    # approval.by names staff, narrow's role; still, the request must not show narrow the beta task
    shown_to_narrow = []
    if request_id in [r.id for r in tiers.inbox(actor="narrow")]:
        shown_to_narrow.append("inbox")
    try:
        tiers.get_request(request_id, actor="narrow")
        shown_to_narrow.append("get_request")
    except (NotFound, Denied):
        pass
    assert shown_to_narrow == []
    assert [r.id for r in tiers.inbox(actor="boss")] == [request_id]  # reads '*', granted beta.ship approval


def test_the_inbox_holds_only_requests_the_principal_may_decide(tiers):
    request_id = _ship_request(tiers, _task(tiers))
    assert [r.id for r in tiers.inbox(actor="bob")] == [request_id]
    assert [r.id for r in tiers.inbox(actor="boss")] == [request_id]
    # staff by role, but without the approve right (no grant, or the read-only tier): approving is denied,
    # so the request is not theirs to decide and their inbox is empty
    agents = ("reader", "exec", "mutator", "narrow")
    for agent in agents:
        _denied(lambda agent=agent: tiers.approve_request(request_id, actor=agent))
    assert {a: [r.id for r in tiers.inbox(actor=a)] for a in agents} == {a: [] for a in agents}
    assert tiers.get_request(request_id).status == "pending"


# -- tool calls ------------------------------------------------------------------------------------


def test_tool_calls_follow_the_agents_tools(tiers):
    tiers.record_tool_call("ruff", actor="reader", arguments={"path": "src"})
    event = tiers.audit_log()[-1]
    assert (event.action, event.principal, event.subject, event.data) == (
        "tool.call", "reader", "tool:ruff", {"arguments": {"path": "src"}})
    denied = _denied(lambda: tiers.record_tool_call("pytest", actor="reader"))
    assert denied.policies == ()
    denied = _denied(lambda: tiers.record_tool_call("ruff", actor="narrow"))
    assert denied.policies == ()
    event = tiers.audit_log()[-1]
    assert (event.action, event.principal, event.subject) == ("tool.call.rejected", "narrow", "tool:ruff")
    assert event.data["error"]["error"] == "denied"
    tiers.record_tool_call("pytest", actor="mutator")
    tiers.record_tool_call("pytest", actor="alice")
    with pytest.raises(NotFound, match="tool"):
        tiers.record_tool_call("black", actor="boss")
    assert tiers.audit_log()[-1].action == "tool.call.rejected"
    assert [e.principal for e in tiers.audit_log(action="tool.call")] == ["reader", "mutator", "alice"]


def test_approving_a_tool_call_obeys_the_kill_switch_and_the_read_only_tier(store):
    store.apply(parse_spec(TIERS.replace("  pytest: {command: pytest}",
                                         "  pytest: {command: pytest, approval: {by: [staff]}}")), applied_by="alice")
    company = store.company("acme")
    with pytest.raises(ApprovalPending) as asked:
        company.record_tool_call("pytest", actor="mutator", arguments={"path": "tests"})
    request_id = asked.value.request_id
    # with the whole company paused, agents may do nothing: deciding a request included
    company.pause("*", actor="alice")
    denied = _denied(lambda: company.approve_request(request_id, actor="exec"))
    assert "kill-switch:*" in denied.policies
    company.resume("*", actor="alice")
    # the read-only tier may not approve, whatever the edge
    denied = _denied(lambda: company.approve_request(request_id, actor="reader"))
    assert "tier:read-only" in denied.policies
    assert company.get_request(request_id).status == "pending"
    company.approve_request(request_id, actor="bob")
    company.record_tool_call("pytest", actor="mutator", arguments={"path": "tests"})
    assert company.get_request(request_id).status == "used"


def test_an_agent_listing_an_undefined_tool_is_a_spec_error():
    text = FIX_LINT.replace("  planner: {reports_to: alice, tier: bounded-mutator}",
                            "  planner: {reports_to: alice, tier: bounded-mutator, tools: [black]}")
    with pytest.raises(SpecError) as error:
        parse_spec(text)
    assert any(i.key == "agents.planner.tools[0]" and "black" in i.message for i in error.value.issues)
    # defining the tool makes the spec valid
    assert "black" in parse_spec(text + "tools:\n  black: {}\n").tools


# -- tenant isolation ------------------------------------------------------------------------------

GLOBEX_TITLES = ("globex merger dossier", "globex layoffs list", "globex product zeta")
GLOBEX_RULES = ("GLOBEX-SECRET-R1", "GLOBEX-SECRET-R2", "GLOBEX-SECRET-R3")


@pytest.fixture
def two_tenants(store, company):
    store.apply(parse_spec(FIX_LINT.replace("company: acme", "company: globex")), applied_by="alice")
    globex = store.company("globex")
    for title, rule in zip(GLOBEX_TITLES, GLOBEX_RULES, strict=True):
        globex.create_task(workflow="fix-lint", title=title, actor="alice", fields={"rule": rule})
    globex.add_principal("hank", kind="human", actor="alice", display_name="Hank Scorpio")
    company.create_task(workflow="fix-lint", title="acme task", actor="alice", fields={"rule": "E501"})
    session = store.session(company.issue_token("planner", actor="alice").token)
    return company, globex, session


def _leaks(text: str) -> list[str]:
    secrets_ = [*GLOBEX_TITLES, *GLOBEX_RULES, "Hank Scorpio", "globex"]
    handles = ["alice", "bob", "builder", "qa", "merger", "hank"]
    found = [s for s in secrets_ if s.lower() in text.lower()]
    found += [h for h in handles if re.search(rf"(?<![\w/-]){h}(?![\w-])", text)]
    return found


def _globex_merge_request(globex) -> int:
    """Walk a new globex task to ``verified`` and have its merger ask to merge it; the request's id."""
    task, _ = globex.create_task(workflow="fix-lint", title="globex merge candidate", actor="alice",
                                 fields={"rule": "GLOBEX-SECRET-R4"})
    task = globex.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    globex.record_artifact(task.id, "patch", b"globex diff", actor="builder")
    task = globex.transition(task.id, "build", actor="builder", expected_version=task.version + 1,
                             writes={"branch": "globex/branch"})
    globex.record_check(task.id, "lint_clean", passed=True, actor="qa")
    task = globex.transition(task.id, "verify", actor="qa", expected_version=task.version + 1)
    with pytest.raises(ApprovalPending) as asked:
        globex.transition(task.id, "merge", actor="merger", expected_version=task.version)
    return asked.value.request_id


def test_a_principal_of_one_company_cannot_act_in_another(two_tenants):
    acme, globex, session = two_tenants
    attacker = session.principal
    assert attacker.id == "acme/planner"
    request_id = _globex_merge_request(globex)
    globex_tasks = globex.list_tasks()
    calls = {
        "get_task": lambda: globex.get_task(1, actor=attacker),
        "list_tasks": lambda: globex.list_tasks(actor=attacker),
        "options": lambda: globex.options(1, actor=attacker),
        "history": lambda: globex.history(1, actor=attacker),
        "list_artifacts": lambda: globex.list_artifacts(1, actor=attacker),
        "transition": lambda: globex.transition(1, "plan", actor=attacker, expected_version=1,
                                                writes={"spec": GOOD_SPEC}),
        "record_artifact": lambda: globex.record_artifact(1, "patch", b"diff", actor=attacker),
        "record_check": lambda: globex.record_check(1, "lint_clean", passed=True, actor=attacker),
        "approve_request": lambda: globex.approve_request(request_id, actor=attacker),
        "reject_request": lambda: globex.reject_request(request_id, actor=attacker, note="rejected from outside"),
        "audit_log": lambda: globex.audit_log(actor=attacker),
        "verify_audit": lambda: globex.verify_audit(actor=attacker),
        "create_task": lambda: globex.create_task(workflow="fix-lint", title="planted", actor=attacker,
                                                  fields={"rule": "E1"}),
        "record_tool_call": lambda: globex.record_tool_call("ruff", actor=attacker),
    }
    acme_events = len(acme.audit_log())
    for name, call in calls.items():
        before = globex.audit_log()[-1].seq
        denied = _denied(call)
        assert not _leaks(str(denied)), (name, str(denied), _leaks(str(denied)))
        assert not _leaks(repr(denied.to_dict())), name
        new = globex.audit_log(after_seq=before)
        assert len(new) == 1, name
        assert new[0].principal == "acme/planner" and new[0].action.endswith(".rejected"), (name, new[0])
        assert new[0].data["error"]["error"] == "denied", name
    # the approval reads refuse too, and say nothing of what waits in globex
    for name, call in {"inbox": lambda: globex.inbox(actor=attacker),
                       "list_requests": lambda: globex.list_requests(actor=attacker),
                       "get_request": lambda: globex.get_request(request_id, actor=attacker)}.items():
        denied = _denied(call)
        assert not _leaks(str(denied)) and not _leaks(repr(denied.to_dict())), (name, str(denied))
    assert len(acme.audit_log()) == acme_events
    assert globex.list_tasks() == globex_tasks
    assert [t.title for t in globex_tasks[:3]] == list(GLOBEX_TITLES)
    assert all(t.version == 1 and t.state == "found" for t in globex_tasks[:3])
    assert globex.get_request(request_id).status == "pending"
    assert globex.verify_audit()[1] is None


def test_a_session_sees_only_its_own_company(two_tenants):
    acme, _globex, session = two_tenants
    assert [t.title for t in session.list_tasks()] == ["acme task"]
    for task_id in (2, 3):  # ids that exist only in globex
        for verb, args, kwargs in (("get_task", (), {}), ("history", (), {}), ("options", (), {}),
                                   ("list_artifacts", (), {}),
                                   ("transition", ("plan",), {"expected_version": 1, "writes": {"spec": GOOD_SPEC}}),
                                   ("record_check", ("lint_clean",), {"passed": True})):
            with pytest.raises(NotFound) as missing:
                getattr(session, verb)(task_id, *args, **kwargs)
            assert not _leaks(str(missing.value)), (verb, str(missing.value))
    assert session.get_task(1).title == "acme task"
    assert [e.company for e in session.history(1)] == ["acme"]
    request_id = _globex_merge_request(_globex)  # an approval request that exists only in globex
    for verb, args in (("get_request", ()), ("approve_request", ()), ("reject_request", ())):
        kwargs = {"note": "from acme"} if verb == "reject_request" else {}
        with pytest.raises(NotFound) as missing:
            getattr(session, verb)(request_id, *args, **kwargs)
        assert not _leaks(str(missing.value)), (verb, str(missing.value))
    assert session.inbox() == [] and session.list_requests() == []
    assert _globex.get_request(request_id).status == "pending"
    assert all(e.company == "acme" for e in acme.audit_log())
    with pytest.raises(NotFound):
        session.explain("read", "task:3")


# -- explain agrees with enforcement ---------------------------------------------------------------


@pytest.fixture
def explained(store):
    store.apply(parse_spec(TIERS), applied_by="alice")
    company = store.company("acme")
    company.set_status("sleeper", "paused", actor="alice")
    company.pause("eng/web", actor="alice")
    return company


def _enforce(company, principal: str, action: str, workflow: str, transition: str, tool: str,
             on_company: bool) -> bool:
    """Run the store verb for the request; True if rights let it through, False on Denied."""
    if action == "create":
        call = lambda: company.create_task(workflow=workflow, title="probe", actor=principal)
    elif action == "call_tool":
        call = lambda: company.record_tool_call(tool, actor=principal)
    elif action == "admin":
        call = lambda: company.issue_token(principal, actor=principal)
    elif action == "read" and on_company:
        call = lambda: company.audit_log(actor=principal, limit=1)
    else:
        task = _task(company, workflow, state="doing" if transition == "finish" else "open")
        call = {
            "read": lambda: company.get_task(task.id, actor=principal),
            "write": lambda: company.record_check(task.id, "probe", passed=True, actor=principal),
            "transition": lambda: company.transition(task.id, transition, actor=principal,
                                                     expected_version=company.get_task(task.id).version,
                                                     writes={"note": "n"} if transition == "annotate" else None),
            # someone else asks (nobody approves their own request); the principal decides
            "approve": lambda: company.approve_request(
                _ship_request(company, task, "bob" if principal == "alice" else "alice"), actor=principal),
        }[action]
    try:
        call()
    except Denied:
        return False
    except ApprovalPending:
        return True  # an approval-gated move the principal has the right to: it waits for an approver
    return True


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(principal=st.sampled_from(AGENTS + HUMANS),
       action=st.sampled_from(("read", "create", "write", "transition", "approve", "call_tool", "admin")),
       workflow=st.sampled_from(("alpha", "beta")),
       transition=st.sampled_from(TRANSITIONS),
       tool=st.sampled_from(("ruff", "pytest")),
       by_task=st.booleans(),
       on_company=st.booleans())
def test_explain_agrees_with_enforcement(explained, principal, action, workflow, transition, tool, by_task,
                                         on_company):
    company = explained
    if action == "approve":
        transition = "ship"  # the only transitions with an approval edge
    if action not in ("transition", "approve"):
        transition = ""
    on_company = on_company and action == "read"
    if action == "call_tool":
        resource = f"tool:{tool}"
    elif action == "admin" or on_company:
        resource = "company"
    elif by_task and action != "create":
        resource = f"task:{_task(company, workflow).id}"  # judged as its workflow, like the verb's own task
    else:
        resource = f"workflow:{workflow}"
    decision = company.explain(principal, action, resource, transition)
    enforced = _enforce(company, principal, action, workflow, transition, tool, on_company)
    assert decision.allowed == enforced, (principal, action, resource, transition, decision)
    assert decision.explain().startswith("allow" if enforced else "deny")


def test_explain_matches_a_few_known_decisions(explained):
    c = explained
    assert c.explain("alice", "admin", "company").policies == ("humans",)
    assert c.explain("boss", "read", "workflow:beta").policies == ("kill-switch:eng/web",)
    assert c.explain("sleeper", "read", "workflow:alpha").policies == ("inactive-principal",)
    assert c.explain("narrow", "transition", "workflow:alpha", "start").policies == (
        "agent:narrow:transition:alpha.start",)
    assert not c.explain("narrow", "transition", "workflow:alpha", "finish").allowed
    assert c.explain("mutator", "transition", "workflow:alpha", "ship").policies == ("tier:approval-gated",)
    assert c.explain("exec", "transition", "workflow:alpha", "ship").allowed
    assert c.explain("nobody-at-all", "read", "workflow:alpha").allowed is False
    with pytest.raises(NotFound):
        c.explain("alice", "read", "task:999")


@pytest.mark.parametrize("resource", ["task:abc", "task:", "task:1x"])
def test_explain_refuses_a_malformed_task_reference_as_a_usage_error(explained, resource):
    # documented: "Raises NotFound, UsageError" - never a bare ValueError
    with pytest.raises((UsageError, NotFound)):
        explained.explain("alice", "read", resource)


def test_explain_agrees_with_enforcement_when_read_is_withheld(store):
    text = TIERS.replace("  idle:     {tier: bounded-mutator, roles: [staff], rights: {transitions: []}}",
                         "  idle:     {tier: coordinator, roles: [staff], rights: {read: [], write: ['*'], "
                         "create: ['*'], transitions: [alpha.start], approve: [alpha.ship]}}")
    store.apply(parse_spec(text), applied_by="alice")
    company = store.company("acme")
    task = _task(company)
    shipping = _task(company)
    request_id = _ship_request(company, shipping, "alice")
    checks = {
        ("create", "workflow:alpha", ""): lambda: company.create_task(workflow="alpha", title="x", actor="idle"),
        ("transition", f"task:{task.id}", "start"):
            lambda: company.transition(task.id, "start", actor="idle", expected_version=1),
        # explain judges approve after read, as the verbs are documented to (READ_FIRST)
        ("approve", f"task:{shipping.id}", "ship"): lambda: company.approve_request(request_id, actor="idle"),
    }
    disagreements = []
    for (action, resource, transition), call in checks.items():
        decision = company.explain("idle", action, resource, transition)
        try:
            call()
            enforced = True
        except Denied:
            enforced = False
        if decision.allowed != enforced:
            disagreements.append((action, decision.explain(), "enforced" if enforced else "denied"))
    assert disagreements == []


# -- the policy text and decision wording ----------------------------------------------------------


def test_policy_text_carries_the_documented_policy_ids():
    spec = parse_spec(TIERS)
    facts = [PrincipalFacts(h, "agent", "active", frozenset(spec.agents[h].roles)) for h in spec.agents]
    facts += [PrincipalFacts(h, "human", "active", frozenset(spec.humans[h].roles)) for h in spec.humans]
    rights = Rights(spec, facts, ["eng/web", "*"])
    text = rights.policy_text
    for policy in ("humans", "inactive-principal", "agents-never-admin", "tier:read-only", "tier:coordinator",
                   "tier:coordinator:transitions", "tier:approval-gated", "kill-switch:eng/web", "kill-switch:*",
                   "agent:narrow:read:eng/core/alpha", "agent:narrow:write:eng/core/alpha",
                   "agent:narrow:transition:alpha.start", "agent:coord:read:eng", "agent:coord:write:eng/core",
                   "agent:coord:create:eng/core", "agent:coord:assign:eng/core", "agent:boss:read:*",
                   "agent:boss:approve:alpha.ship", "agent:reader:tool:ruff", "agent:boss:tool:pytest"):
        assert f'@id("{policy}")' in text, policy
    # narrowing and default deny are visible in the text: nothing is granted that was not asked for
    assert "agent:narrow:transition:alpha.finish" not in text
    assert "agent:idle:" not in text
    assert "agent:reader:create" not in text and "agent:mutator:create" not in text
    assert "agent:reader:tool:pytest" not in text
    assert "kill-switch:eng/core" not in text
    assert "kill-switch" not in Rights(spec, facts).policy_text


def test_decision_explain_wording(explained):
    allow = explained.explain("bob", "read", "workflow:alpha")
    assert allow.allowed and allow.explain() == "allow, by policy humans"
    forbid = explained.explain("reader", "create", "workflow:alpha")
    assert not forbid.allowed and forbid.explain() == "deny, by forbid policy tier:read-only"
    both = explained.explain("reader", "admin", "company")
    assert both.explain() == "deny, by forbid policy agents-never-admin, tier:read-only"
    default = explained.explain("idle", "read", "workflow:alpha")
    assert not default.allowed and default.policies == ()
    assert default.explain() == "deny: no policy permits it (default deny)"
    # a Denied carries the same explanation and policies
    denied = _denied(lambda: explained.create_task(workflow="alpha", title="x", actor="reader"))
    assert denied.message.endswith(forbid.explain()) and denied.policies == forbid.policies
    denied = _denied(lambda: explained.get_task(_task(explained).id, actor="idle"))
    assert denied.message.endswith(default.explain()) and denied.policies == ()


# -- each decision is taken against its principal's policies only: the same decisions, O(1) per agent --

PAUSABLE = ("*", "eng", "eng/core", "eng/web", "eng/core/alpha", "eng/web/beta")
REQUESTS = [(action, kind, name)
            for action in ("read", "create", "write", "assign", "transition", "approve", "call_tool", "admin")
            for kind, name in (("workflow", "alpha"), ("workflow", "beta"), ("workflow", "gamma"),
                               ("tool", "ruff"), ("tool", "pytest"), ("company", "*"))]


def _tiers_rights(statuses: dict[str, str], paused: list[str], text: str = TIERS) -> Rights:
    """The TIERS company with ``statuses`` applied, and an agent principal ``ghost`` that the spec does not
    list (no grants of its own: read-only by default)."""
    spec = parse_spec(text)
    facts = [PrincipalFacts(h, "agent", statuses.get(h, "active"), frozenset(spec.agents[h].roles))
             for h in spec.agents]
    facts += [PrincipalFacts(h, "human", statuses.get(h, "active"), frozenset(spec.humans[h].roles))
              for h in spec.humans]
    facts.append(PrincipalFacts("ghost", "agent", statuses.get("ghost", "active"), frozenset({"staff"})))
    return Rights(spec, facts, paused)


# boss listing a tool twice grants it twice: two policies of one @id, both named in its decisions
@pytest.mark.parametrize("text", [TIERS, TIERS.replace("tools: [ruff, pytest]", "tools: [ruff, pytest, ruff]")])
def test_every_decision_of_a_principal_is_the_whole_policy_sets_decision(text):
    rights = _tiers_rights({"sleeper": "paused", "bob": "retired", "ghost": "paused"}, ["eng/web"], text)
    disagreements = []
    for principal in (*AGENTS, *HUMANS, "ghost", "nobody"):
        for action, kind, name in REQUESTS:
            for transition in ("", "start", "annotate", "finish", "ship", "nope"):
                resource = Resource(kind, name)
                mine = rights.decide(principal, action, resource, transition)
                whole = rights._decide_by_whole_set(principal, action, resource, transition)
                if mine != whole:
                    disagreements.append((principal, action, resource, transition, mine, whole))
    assert disagreements == []
    # and the decisions are not vacuous: allows, forbids and default denies all occur
    assert rights.decide("boss", "read", Resource("workflow", "alpha")).policies == ("agent:boss:read:*",)
    assert rights.decide("boss", "read", Resource("workflow", "beta")).policies == ("kill-switch:eng/web",)
    assert rights.decide("bob", "read", Resource("workflow", "alpha")).policies == ("inactive-principal",)
    assert rights.decide("idle", "read", Resource("workflow", "alpha")) == Decision(False, ())
    ruff = rights.decide("boss", "call_tool", Resource("tool", "ruff")).policies
    assert ruff == ("agent:boss:tool:ruff",) * (2 if "ruff, pytest, ruff" in text else 1)


@settings(max_examples=60, deadline=None)
@given(statuses=st.dictionaries(st.sampled_from((*AGENTS, *HUMANS, "ghost")),
                                st.sampled_from(("active", "paused", "retired")), max_size=5),
       paused=st.lists(st.sampled_from(PAUSABLE), max_size=3, unique=True),
       requests=st.lists(st.tuples(st.sampled_from((*AGENTS, *HUMANS, "ghost")), st.sampled_from(REQUESTS),
                                   st.sampled_from(("", "start", "annotate", "finish", "ship"))),
                         min_size=1, max_size=25))
def test_per_principal_decisions_equal_the_whole_sets_for_any_statuses_and_kill_switches(statuses, paused,
                                                                                         requests):
    rights = _tiers_rights(statuses, paused)
    whole = cedarpy.PolicySet.from_str(rights.policy_text)  # the text `roster rights policies` prints
    entities = json.dumps(rights.entities)
    for principal, (action, kind, name), transition in requests:
        resource = Resource(kind, name)
        mine = rights.decide(principal, action, resource, transition)
        assert mine == rights._decide_by_whole_set(principal, action, resource, transition)
        direct = cedarpy.is_authorized(rights._request(principal, action, resource, transition), whole, entities)
        named = direct.diagnostics.id_annotations_by_reason
        assert (mine.allowed, mine.policies) == (direct.allowed, tuple(sorted(named[r] for r in
                                                                              direct.diagnostics.reasons)))


def _fleet(agents: int) -> str:
    """A company of ``agents`` agents of every tier in turn, each with a tool and default grants."""
    tiers = ("read-only", "bounded-mutator", "high-impact-executor", "coordinator")
    lines = ["company: fleet", "workspaces:", "  eng:", "    portfolios: {core: {}}", "workflows:", "  ticket:",
             "    portfolio: eng/core", "    states: [new, doing, done]", "    initial: new", "    transitions:",
             "      start: {from: new, to: doing, by: [agent]}",
             "      close: {from: doing, to: done, by: [agent], approval: {by: [human]}}",
             "tools:", "  ruff: {command: ruff check}", "agents:"]
    lines += [f"  a{i:04d}: {{tier: {tiers[i % 4]}, tools: [ruff]}}" for i in range(agents)]
    lines += ["humans:", "  lead: {}"]
    return "\n".join(lines) + "\n"


def test_what_cedar_evaluates_for_a_decision_does_not_grow_with_the_number_of_agents(monkeypatch):
    """Not timed: the policies and entities handed to Cedar for one principal's decisions are the same
    for a company of 10 agents and one of 1,000 (the whole set grows a hundredfold)."""
    from roster.kernel import rights as rights_module

    handed: list[tuple[int, int]] = []
    real = rights_module.cedarpy.is_authorized

    def counting(request, policies, entities, *args, **kwargs):
        handed.append((len(policies), len(entities)))
        return real(request, policies, entities, *args, **kwargs)

    monkeypatch.setattr(rights_module.cedarpy, "is_authorized", counting)
    seen = {}
    for agents in (10, 1000):
        spec = parse_spec(_fleet(agents))
        facts = [PrincipalFacts(h, "agent", "active") for h in spec.agents]
        facts.append(PrincipalFacts("lead", "human", "active"))
        rights = Rights(spec, facts, ["eng/core"])
        handed.clear()
        decisions = [rights.decide(p, a, Resource("workflow", "ticket"), t)
                     for p in ("a0001", "a0003", "lead") for a, t in (("read", ""), ("transition", "start"))]
        decisions.append(rights.decide("a0001", "call_tool", Resource("tool", "ruff")))
        seen[agents] = (list(handed), decisions)
        assert rights.policy_text.count("@id(") > agents  # the whole text still holds every agent's grants
        assert rights.decide.cache_info().maxsize >= 2 * len(spec.workflows["ticket"].transitions) * agents
    assert seen[10] == seen[1000]
    # 22 shared policies (one kill switch; three of goals and two of plans among them) plus at most a coordinator's 9
    # grants (7, and the tool sets 'movers' and 'creators'); the scope tree, one workflow, one tool, the
    # principal and its 3 groups (agent, its tier, message:default)
    assert max(p for p, _ in seen[1000][0]) == 31 and max(e for _, e in seen[1000][0]) == 9
    # every agent's grants are linked from templates parsed once per shape of grants (here four, one per
    # tier: each tier sees its own MCP tool sets, and coordinators also create and assign): no Cedar
    # parse per agent
    for handle in spec.agents:
        rights.decide(handle, "read", Resource("workflow", "ticket"))
    assert rights._templates.cache_info().misses == 4
    own = rights.policies_for("a0003")
    assert "a0001" not in own and '"agent:a0003:' in own and own.startswith(rights.policies_for("lead"))


def test_a_human_with_scopes_reads_and_acts_only_inside_them_and_never_administers(tmp_path):
    from dashboard_support import TWO_PORTFOLIOS

    store = Store.open(f"sqlite:///{tmp_path / 'scopes.db'}", clock=StepClock())
    try:
        store.apply(parse_spec(TWO_PORTFOLIOS), applied_by="alice")
        company = store.company("acme")
        for action, resource, carol in (("read", "workflow:site", True), ("hold", "workflow:site", True),
                                        ("transition", "workflow:site", True), ("read", "workflow:fix-lint", False),
                                        ("approve", "workflow:fix-lint", False), ("admin", "company", False),
                                        ("oversee", "company", False), ("read", "company", False)):
            assert company.explain("carol", action, resource).allowed is carol, (action, resource)
            assert company.explain("alice", action, resource).allowed  # no scopes: the whole company
        [policy] = [p for p in company.policy_text().split("\n\n") if "human:carol:scopes" in p]
        assert 'resource in Roster::Scope::"eng/web"' in policy
        task = company.create_task(workflow="fix-lint", title="core", actor="alice", fields={"rule": "E501"})[0]
        with pytest.raises(Denied):
            company.get_task(task.id, actor="carol")
        assert company.list_tasks(actor="carol") == []
        with pytest.raises(Denied):
            company.pause("eng/core", actor="carol")
    finally:
        store.close()


def test_a_humans_unknown_scope_is_refused_with_its_line():
    text = FIX_LINT + "  carol: {scopes: [nowhere]}\n"
    with pytest.raises(SpecError) as refused:
        parse_spec(text)
    assert "roster.yaml:25: humans.carol.scopes[0]: unknown scope 'nowhere'" in str(refused.value)
