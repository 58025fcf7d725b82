"""Issue 15, deliverable 3: one authorization point.

Every public store verb maps to the Cedar actions it decides (:mod:`roster.store.authorization`), the map
is complete, and calling each verb reaches the one decision function with those actions. Each rule
moved into Cedar (pads, messages, KPI readings, self-approval, brief previews, MCP tool visibility,
administration, claims and holds) is checked from the outside on SQLite and PostgreSQL: REST status,
CLI exit code, MCP tool error, and the ``*.rejected`` audit event. ``roster rights explain`` answers
every action and names the deciding policy.
"""

from __future__ import annotations

import asyncio
import inspect
import json

import pytest
from conftest import ManualClock
from fastapi.testclient import TestClient
from mcp import Client

from roster.api import create_app
from roster.api.mcp_server import TOOL_SET_OF, create_mcp_server
from roster.defaults import ACTIONS
from roster.errors import ApprovalPending, Denied
from roster.kernel.goals import GoalBudget, GoalCheck
from roster.kernel.plans import Plan
from roster.kernel.rights import TOOL_SETS
from roster.specfile import parse_spec
from roster.store import Store
from roster.store.authorization import (
    INTERFACE_DECISIONS,
    OWN_ROWS,
    SESSION_DECISIONS,
    SESSION_OPEN,
    VERB_DECISIONS,
)
from roster.store.company import CompanyStore, Session
from roster.store.company_base import CompanyBase

API = "/api/v1"

SPEC = """\
company: acme
workspaces:
  default:
    portfolios:
      default:
        team_memory: {read: [reader], write: [builder]}
workflows:
  fix-lint:
    states: [found, planned, done]
    initial: found
    fields:
      rule: {type: string}
      note: {type: string}
    transitions:
      plan: {from: found, to: planned, by: [builder, reader, human]}
      finish: {from: planned, to: done, by: [builder]}
      ship: {from: planned, to: done, by: [human], approval: {by: [human]}}
tools:
  lint: {command: ruff check}
agents:
  builder: {reports_to: alice, tier: bounded-mutator, tools: [lint], rights: {message: [reader]}}
  reader: {reports_to: alice}
humans:
  alice: {}
  bob: {}
kpis:
  lint: {direction: down}
"""
TEAM_PAD = "team:default/default"
PACKET = {"subproblem": "split the import", "desired_output": "a patch", "success_condition": "ruff passes"}


@pytest.fixture
def acme(db_url, tmp_path):
    store = Store.open(db_url, clock=ManualClock(), artifact_root=tmp_path / "art")
    store.apply(parse_spec(SPEC), applied_by="alice")
    yield store, store.company("acme")
    store.close()


def session_of(store: Store, company: CompanyStore, handle: str) -> Session:
    return store.session(company.issue_token(handle, actor="alice").token)


def rejected(company: CompanyStore, action: str) -> list[str]:
    return [e.principal for e in company.audit_log(action=action)]


def new_task(company: CompanyStore, **fields) -> int:
    return company.create_task(workflow="fix-lint", title="t", actor="alice",
                               fields={"rule": "E501", **fields})[0].id


# -- the map of verbs to decisions is complete -------------------------------------------------------


def test_every_public_verb_is_mapped_to_its_decision_or_says_why_it_takes_none():
    """A public verb that takes an actor must name the actions it decides (or be one that acts only on
    its caller's own rows); one without an actor is a trusted runtime call. Every action is decided by
    some verb or interface, and every mapped action is one rights explain accepts. A composition helper
    (``*_txn``) is no verb: it runs inside the transaction of the verb that called it, which decided."""
    takes_actor = {name for name, member in inspect.getmembers(CompanyStore, inspect.isfunction)
                   if not name.startswith("_") and not name.endswith("_txn")
                   and "actor" in inspect.signature(member).parameters}
    assert set(Session.VERBS) <= takes_actor
    unmapped = takes_actor - set(VERB_DECISIONS) - set(OWN_ROWS)
    assert unmapped == set(), f"verbs with no authorization decision on record: {sorted(unmapped)}"
    assert set(VERB_DECISIONS) & set(OWN_ROWS) == set()
    assert set(VERB_DECISIONS) | set(OWN_ROWS) <= takes_actor  # nothing stale in the map
    decided = {a for actions in VERB_DECISIONS.values() for a in actions} | set(INTERFACE_DECISIONS)
    assert decided == set(ACTIONS)
    assert set(TOOL_SET_OF) == set(TOOL_SETS)


def test_every_public_session_method_is_a_verb_or_says_what_it_decides():
    """What an interface can call on a Session: the verbs above (actor bound), and the few methods of
    SESSION_DECISIONS (with their actions) and SESSION_OPEN (with why they take no decision). A method added
    to Session without an entry here fails; so does a stale entry."""
    public = {name for name, member in inspect.getmembers(Session, callable) if not name.startswith("_")}
    extra = set(SESSION_DECISIONS) | set(SESSION_OPEN)
    assert set(SESSION_DECISIONS) & set(SESSION_OPEN) == set()
    assert set(Session.VERBS) & extra == set()
    assert public == set(Session.VERBS) | extra, sorted(public ^ (set(Session.VERBS) | extra))
    assert {a for actions in SESSION_DECISIONS.values() for a in actions} <= set(ACTIONS)
    assert all(why.strip() for why in SESSION_OPEN.values())


@pytest.fixture
def decided(monkeypatch):
    """Every call of the one decision function, as ``(principal, action)``."""
    calls: list[tuple[str, str]] = []
    real = CompanyBase._decide

    def recording(self, cache, handle, action, *args, **kwargs):
        calls.append((handle, action))
        return real(self, cache, handle, action, *args, **kwargs)

    monkeypatch.setattr(CompanyBase, "_decide", recording)
    return calls


def verb_calls(store: Store, company: CompanyStore):
    """One call of each mapped verb, as bob (a human: allowed, except his own request), in an order
    where each finds what it needs."""
    t1 = new_task(company)
    company.record_artifact(t1, "plan", b"one\n", actor="alice", name="plan.md")
    company.record_artifact(t1, "plan", b"two\n", actor="alice", name="plan.md")
    requests = []
    for _ in range(3):
        t = new_task(company)
        company.transition(t, "plan", actor="alice", expected_version=1)
        with pytest.raises(ApprovalPending) as pending:
            company.transition(t, "ship", actor="alice", expected_version=2)
        requests.append(pending.value.request_id)
    escalation = company.escalate(t1, from_agent="builder", category="governance", reason="stuck")
    goal = company.set_goal("builder", "no E501 left", actor="alice", check=GoalCheck(command="true"),
                            budget=GoalBudget(runs=5))
    bob = session_of(store, company, "bob")
    state: dict = {}

    def lease(key, verb):  # noqa: ANN001, ANN202
        def call():  # noqa: ANN202
            state[key] = verb()
        return call

    entry = {}
    return [
        ("create_task", lambda: bob.create_task(workflow="fix-lint", title="b", fields={"rule": "E1"})),
        ("get_task", lambda: bob.get_task(t1)),
        ("list_tasks", lambda: bob.list_tasks()),
        ("options", lambda: bob.options(t1)),
        ("history", lambda: bob.history(t1)),
        ("record_artifact", lambda: bob.record_artifact(t1, "plan", b"three\n", name="plan.md")),
        ("list_artifacts", lambda: bob.list_artifacts(t1)),
        ("artifact_history", lambda: bob.artifact_history(t1, "plan.md")),
        ("artifact", lambda: bob.artifact(t1, "plan.md")),
        ("artifact_diff", lambda: bob.artifact_diff(t1, "plan.md", 1, 2)),
        ("record_check", lambda: bob.record_check(t1, "lint", passed=True)),
        ("assign", lambda: bob.assign(t1, owner="builder")),
        ("delegate", lambda: state.setdefault("child", bob.delegate(t1, workflow="fix-lint", title="c",
                                                                   packet=PACKET, fields={"rule": "E2"}))),
        ("delegate_filed", lambda: bob.delegate_filed(t1, workflow="fix-lint", title="d", packet=PACKET,
                                                      fields={"rule": "E3"})),
        ("adopt", lambda: bob.adopt(t1, new_task(company), packet=PACKET)),
        ("children", lambda: bob.children(t1)),
        ("handoff", lambda: bob.handoff(t1, "builder")),
        ("claim", lease("lease", lambda: bob.claim(t1, run_id="r1", ttl=30))),
        ("renew", lambda: bob.renew(t1, fencing_token=state["lease"].fencing_token, ttl=30)),
        ("release", lambda: bob.release(t1, fencing_token=state["lease"].fencing_token)),
        ("hold", lambda: bob.hold(t1, ttl=60)),
        ("edit_fields", lambda: bob.edit_fields(t1, {"note": "held"})),
        ("release_hold", lambda: bob.release_hold(t1, note="done")),
        ("transition", lambda: bob.transition(t1, "plan", expected_version=bob.get_task(t1).version)),
        ("audit_log", lambda: bob.audit_log(limit=5)),
        ("verify_audit", lambda: bob.verify_audit()),
        ("costs", lambda: bob.costs()),
        ("fitness", lambda: bob.fitness()),
        ("set_stage", lambda: bob.set_stage("builder", "assist", reason="test")),
        ("add_principal", lambda: bob.add_principal("carol", kind="human")),
        ("set_status", lambda: bob.set_status("carol", "paused")),
        ("issue_token", lease("token", lambda: bob.issue_token("builder"))),
        ("list_tokens", lambda: bob.list_tokens()),
        ("revoke_token", lambda: bob.revoke_token(state["token"].record.id)),
        ("record_tool_call", lambda: bob.record_tool_call("lint", arguments={"path": "app.py"})),
        ("inbox", lambda: bob.inbox()),
        ("get_request", lambda: bob.get_request(requests[0])),
        ("approve_request", lambda: bob.approve_request(requests[0])),
        ("reject_request", lambda: bob.reject_request(requests[1], note="not now")),
        ("remember", lambda: entry.setdefault("e", bob.remember("the CI caches the venv"))),
        ("recall", lambda: bob.recall("venv")),
        ("list_memory", lambda: bob.list_memory(pads=[TEAM_PAD, "builder"])),
        ("share_memory", lambda: bob.share_memory("bob", "builder")),
        ("forget", lambda: bob.forget(entry["e"].id)),
        ("export_memory", lease("doc", lambda: bob.export_memory("bob"))),
        ("import_memory", lambda: bob.import_memory("bob", state["doc"])),
        ("consolidate_memory", lambda: bob.consolidate_memory(pads=["bob", TEAM_PAD])),
        ("send_message", lease("message", lambda: bob.send_message("builder", "please look at task 1"))),
        ("thread", lambda: bob.thread(state["message"].thread_id)),
        ("list_runs", lambda: bob.list_runs()),
        ("list_requests", lambda: bob.list_requests()),
        ("list_escalations", lambda: bob.list_escalations()),
        ("resolve_escalation", lambda: bob.resolve_escalation(escalation.id, note="unblocked")),
        ("set_goal", lambda: bob.set_goal("reader", "read the backlog", check=GoalCheck(command="true"),
                                          budget=GoalBudget(runs=3))),
        ("get_goal", lambda: bob.get_goal(goal.id)),
        ("list_goals", lambda: bob.list_goals()),
        ("presence", lambda: bob.presence()),
        ("move_goal", lambda: bob.move_goal(goal.id, "pause", note="waiting for the release")),
        ("hold_plan", lambda: bob.hold_plan("builder", note="rewriting it")),
        ("revise_plan", lambda: bob.revise_plan("builder", Plan(priorities=["fix lint"], no_kpi_goal_because="none yet"),
                                                reason="a first plan")),
        ("release_plan", lambda: bob.release_plan("builder", note="done")),
        ("plan", lambda: bob.plan("builder")),
        ("plan_history", lambda: bob.plan_history("builder")),
        ("record_kpi", lambda: bob.record_kpi("lint", 3.0)),
        ("pause", lambda: bob.pause("default/default")),
        ("resume", lambda: bob.resume("default/default")),
        ("webhook_deliveries", lambda: bob.webhook_deliveries()),
        ("replay_webhooks", lambda: bob.replay_webhooks(failed=True)),
    ]


def test_every_mapped_verb_reaches_the_one_decision_with_its_actions(acme, decided):
    store, company = acme
    calls = verb_calls(store, company)
    assert {verb for verb, _ in calls} == {v for v, actions in VERB_DECISIONS.items() if actions}
    missing = {}
    for verb, call in calls:
        decided.clear()
        call()
        actions = {action for who, action in decided if who == "bob"}
        if not set(VERB_DECISIONS[verb]) <= actions:
            missing[verb] = sorted(set(VERB_DECISIONS[verb]) - actions)
    assert missing == {}
    # and the interfaces' entry point decides whatever it is asked, through the same function
    bob = session_of(store, company, "bob")
    for action, resource in EXPLAINED:
        decided.clear()
        bob.authorize(action, resource.format(task=1, request=1))
        assert ("bob", action) in decided, action


def test_the_session_only_methods_reach_the_one_decision(acme, decided):
    """escalate decides read on its task; company_for decides what it is asked, refuses (audited) before it
    hands over the company, and hands it over once allowed."""
    store, company = acme
    task = new_task(company)
    builder = session_of(store, company, "builder")
    decided.clear()
    builder.escalate(task, category="judgment", reason="stuck")
    assert ("builder", "read") in decided
    assert [e.task_id for e in company.list_escalations(actor="alice")] == [task]
    decided.clear()
    assert isinstance(builder.company_for("brief.preview", "principal:builder"), CompanyStore)  # its own
    assert ("builder", "brief.preview") in decided
    for action, resource in (("brief.preview", "principal:reader"), ("admin", "company"), ("oversee", "company"),
                             ("read", "company")):
        decided.clear()
        with pytest.raises(Denied):
            builder.company_for(action, resource)
        assert ("builder", action) in decided, action
        assert rejected(company, f"{action}.rejected") == ["builder"], action
    bob = session_of(store, company, "bob")
    for action, resource in (("admin", "company"), ("oversee", "company"), ("read", "company"),
                             ("brief.preview", "principal:builder")):
        assert isinstance(bob.company_for(action, resource), CompanyStore), action


def test_a_denied_verb_is_refused_by_a_policy_of_the_decision(acme):
    """The reader (read-only) is refused by Cedar, naming the forbid, for verbs of each kind."""
    store, company = acme
    task = new_task(company)
    reader = session_of(store, company, "reader")
    for call, policy in ((lambda: reader.claim(task, run_id="r", ttl=30), "tier:read-only"),
                         (lambda: reader.hold(task), "tier:read-only"),
                         (lambda: reader.record_kpi("lint", 1.0), "kpi:measured-not-reported"),
                         (lambda: reader.add_principal("eve", kind="human"), "agents-never-admin")):
        with pytest.raises(Denied) as refused:
            call()
        assert policy in refused.value.policies


# -- each moved rule, from the outside -----------------------------------------------------------------


@pytest.fixture
def rest(acme):
    store, company = acme
    tokens = {h: company.issue_token(h, actor="alice").token for h in ("alice", "bob", "builder", "reader")}
    with TestClient(create_app(store)) as client:
        yield client, (lambda handle: {"Authorization": f"Bearer {tokens[handle]}"})


def test_memory_pads_over_rest(acme, rest):
    store, company = acme
    api, auth = rest
    assert api.post(f"{API}/memory", json={"text": "mine", "pad": "builder"}, headers=auth("builder")).status_code \
        in (200, 201)
    # another agent's pad is private until shared; the team pad follows team_memory
    assert api.get(f"{API}/memory", params={"pad": "builder"}, headers=auth("reader")).status_code == 403
    assert rejected(company, "memory.read.rejected") == ["reader"]
    assert api.post(f"{API}/memory", json={"text": "x", "pad": TEAM_PAD}, headers=auth("reader")).status_code == 403
    assert api.post(f"{API}/memory", json={"text": "y", "pad": TEAM_PAD}, headers=auth("builder")).status_code \
        in (200, 201)
    assert api.get(f"{API}/memory", params={"pad": TEAM_PAD}, headers=auth("reader")).status_code == 200
    company.share_memory("builder", "reader", actor="builder")
    shared = api.get(f"{API}/memory", params={"pad": "builder"}, headers=auth("reader"))
    assert shared.status_code == 200 and [e["text"] for e in shared.json()] == ["mine"]
    assert company.explain("reader", "memory.read", "pad:builder").policies == ("memory:shared",)
    assert company.explain("builder", "memory.write", "pad:builder").policies == ("memory:own-pad",)
    assert company.explain("builder", "memory.write", f"pad:{TEAM_PAD}").policies == (
        "memory:team:default/default:write",)


def test_messages_follow_rights_message_over_rest(acme, rest):
    store, company = acme
    api, auth = rest
    refused = api.post(f"{API}/messages", json={"to": "bob", "body": "hi"}, headers=auth("builder"))
    assert refused.status_code == 403, refused.text
    assert "rights.message grants only reader" in refused.json()["detail"]
    assert rejected(company, "message.send.rejected") == ["builder"]
    assert api.post(f"{API}/messages", json={"to": "reader", "body": "hi"}, headers=auth("builder")).status_code \
        in (200, 201)
    # the reader has no rights.message: the default lets it message humans only
    assert api.post(f"{API}/messages", json={"to": "alice", "body": "hi"}, headers=auth("reader")).status_code \
        in (200, 201)
    assert api.post(f"{API}/messages", json={"to": "builder", "body": "hi"}, headers=auth("reader")).status_code \
        == 403
    assert company.explain("reader", "message", "principal:alice").policies == ("message:default",)
    assert company.explain("builder", "message", "principal:reader").policies == ("agent:builder:message:reader",)


def test_only_humans_record_kpi_readings_over_rest(acme, rest):
    store, company = acme
    api, auth = rest
    refused = api.post(f"{API}/kpis/lint/readings", json={"value": 0}, headers=auth("builder"))
    assert refused.status_code == 403, refused.text
    assert refused.json()["policies"] == ["kpi:measured-not-reported"]
    assert rejected(company, "kpi.reading.rejected") == ["builder"]
    assert api.post(f"{API}/kpis/lint/readings", json={"value": 2}, headers=auth("bob")).status_code in (200, 201)
    assert [r.value for r in company.kpi_readings("lint", actor="alice")] == [2.0]


def test_nobody_approves_their_own_request_over_rest(acme, rest):
    store, company = acme
    api, auth = rest
    task = new_task(company)
    company.transition(task, "plan", actor="alice", expected_version=1)
    with pytest.raises(ApprovalPending) as pending:
        company.transition(task, "ship", actor="alice", expected_version=2)
    request_id = pending.value.request_id
    own = api.post(f"{API}/approvals/{request_id}/approve", json={"note": ""}, headers=auth("alice"))
    assert own.status_code == 403, own.text
    assert own.json()["policies"] == ["separation-of-duties"]
    assert rejected(company, "approval.approve.rejected") == ["alice"]
    assert company.explain("alice", "approve", f"approval:{request_id}").policies == ("separation-of-duties",)
    assert company.explain("bob", "approve", f"approval:{request_id}").allowed
    assert api.post(f"{API}/approvals/{request_id}/approve", json={"note": "ok"}, headers=auth("bob")).status_code == 200
    assert company.get_task(task).state == "done"


def test_claims_and_holds_over_rest(acme, rest):
    store, company = acme
    api, auth = rest
    task = new_task(company)
    refused = api.post(f"{API}/tasks/{task}/hold", json={"seconds": 600}, headers=auth("reader"))
    assert refused.status_code == 403, refused.text
    assert api.post(f"{API}/tasks/{task}/claim", json={"seconds": 60}, headers=auth("reader")).status_code == 403
    assert rejected(company, "lease.claim.rejected") == ["reader", "reader"]
    assert company.get_task(task).lease_holder is None
    assert company.explain("reader", "claim", f"task:{task}").policies == ("tier:read-only",)
    assert company.explain("builder", "claim", f"task:{task}").policies == ("agent:builder:transition:fix-lint.plan",)
    assert company.explain("builder", "hold", f"task:{task}").policies == ("agent:builder:write:default/default/fix-lint",)
    company.transition(task, "plan", actor="builder", expected_version=1)
    # out of 'planned' the builder is named by 'finish' (ship is humans'): still claimable; the reader is not
    assert company.explain("builder", "claim", f"task:{task}").allowed
    assert company.explain("builder", "claim", "workflow:fix-lint", "ship").policies == ("claim:named", "tier:approval-gated")
    assert api.post(f"{API}/tasks/{task}/hold", json={"seconds": 600}, headers=auth("bob")).status_code == 200


def test_mcp_tool_visibility_is_the_decision(acme):
    store, company = acme
    token = {h: company.issue_token(h, actor="alice").token for h in ("reader", "builder", "alice")}

    async def listed(handle: str) -> set[str]:
        async with Client(create_mcp_server(store, token=token[handle])) as client:
            return {t.name for t in (await client.list_tools()).tools}

    async def hidden_claim() -> tuple[bool, str]:
        async with Client(create_mcp_server(store, token=token["reader"])) as client:
            result = await client.call_tool("claim", {"task_id": task})
            return result.is_error, " ".join(getattr(c, "text", "") for c in result.content)

    task = new_task(company)
    seen = {h: asyncio.run(listed(h)) for h in token}
    assert seen["reader"] == set(TOOL_SET_OF["everyone"])
    assert seen["builder"] == set(TOOL_SET_OF["everyone"]) | set(TOOL_SET_OF["movers"]) | set(TOOL_SET_OF["evidence"])
    assert seen["alice"] == {t for tools in TOOL_SET_OF.values() for t in tools}
    is_error, text = asyncio.run(hidden_claim())
    assert is_error and "denied: " in text and "tier:read-only" in text
    assert rejected(company, "lease.claim.rejected") == ["reader"]
    assert company.explain("reader", "tool.see", "toolset:movers").explain() == \
        "deny: no policy permits it (default deny)"
    assert company.explain("builder", "tool.see", "toolset:movers").policies == ("agent:builder:see:movers",)


def test_mcp_agent_profiles_are_the_decision(acme):
    store, company = acme
    token = {h: company.issue_token(h, actor="alice").token for h in ("reader", "alice")}

    async def read(handle: str, profile: str) -> str:
        async with Client(create_mcp_server(store, token=token[handle])) as client:
            try:
                result = await client.read_resource(f"roster://agents/{profile}")
            except Exception as exc:  # noqa: BLE001 - the SDK raises its own error type for a refused read
                return f"refused: {exc}"
            return json.loads(result.contents[0].text)["handle"]

    assert asyncio.run(read("reader", "reader")) == "reader"
    assert asyncio.run(read("reader", "builder")).startswith("refused")
    assert asyncio.run(read("alice", "builder")) == "builder"
    assert "no agent 'nobody' in company 'acme'" in asyncio.run(read("alice", "nobody"))  # an answer, not a crash
    assert company.explain("reader", "profile.read", "principal:reader").policies == ("profile:own",)
    assert not company.explain("reader", "profile.read", "principal:builder").allowed


# -- the CLI: brief previews, administration, rights explain -------------------------------------------


@pytest.fixture
def ws(cli, db_url, monkeypatch, tmp_path):
    (cli.workspace / "roster.yaml").write_text(SPEC)
    monkeypatch.setenv("ROSTER_DB", db_url)
    result = cli("apply")
    assert result.exit_code == 0, result.output
    return cli


def cli_token(cli, handle: str) -> str:
    issued = cli("token", "issue", handle, "--json")
    assert issued.exit_code == 0, issued.output
    return json.loads(issued.stdout)["token"]


def audit_actions(cli, action: str) -> list[str]:
    result = cli("audit", "log", "--action", action, "--json")
    assert result.exit_code == 0, result.output
    return [e["principal"] for e in json.loads(result.stdout)]


def test_brief_preview_and_roster_up_ask_the_decision(ws):
    created = ws("task", "create", "fix-lint", "--title", "t", "--set", "rule=E501", "--json")
    assert created.exit_code == 0, created.output
    builder = cli_token(ws, "builder")
    other = ws("--token", builder, "context", "1", "--as", "reader")
    assert other.exit_code == Denied.exit_code, other.output
    assert "brief:own" not in other.output and "default deny" in other.output
    own = ws("--token", builder, "context", "1", "--as", "builder", "--json")
    assert own.exit_code == 0, own.output
    assert ws("context", "1", "--as", "reader", "--json").exit_code == 0  # the operator is a human
    assert audit_actions(ws, "brief.preview.rejected") == ["builder"]
    up = ws("--token", builder, "up", "--once")
    assert up.exit_code == Denied.exit_code, up.output
    assert "agents-never-admin" in up.output
    assert audit_actions(ws, "admin.rejected") == ["builder"]


def test_status_and_costs_ask_the_decision_before_they_read_the_whole_company(ws):
    """roster status shows every agent's queue, the leases and the fleet: overseeing (humans); roster costs
    shows the company's spend and budgets: read on the whole company. An agent is refused, audited."""
    builder = cli_token(ws, "builder")
    status = ws("--token", builder, "status", "--json")
    assert status.exit_code == Denied.exit_code, status.output
    assert audit_actions(ws, "oversee.rejected") == ["builder"]
    costs = ws("--token", builder, "costs", "--json")
    assert costs.exit_code == Denied.exit_code, costs.output
    assert ws("status", "--json").exit_code == 0  # the operator is a human
    assert ws("costs", "--json").exit_code == 0


EXPLAINED = (
    ("read", "task:{task}"), ("create", "workflow:fix-lint"), ("write", "task:{task}"),
    ("assign", "task:{task}"), ("transition", "workflow:fix-lint"), ("approve", "approval:{request}"),
    ("call_tool", "tool:lint"), ("admin", "company"), ("claim", "task:{task}"), ("hold", "task:{task}"),
    ("memory.read", "pad:builder"), ("memory.write", f"pad:{TEAM_PAD}"), ("message", "principal:reader"),
    ("kpi.record", "kpi:lint"), ("brief.preview", "principal:builder"), ("profile.read", "principal:builder"),
    ("tool.see", "toolset:movers"), ("oversee", "company"), ("goal.set", "principal:builder"),
    ("plan.edit", "principal:builder"),
)


def test_rights_explain_covers_every_action_and_names_the_deciding_policy(ws):
    assert {a for a, _ in EXPLAINED} == set(ACTIONS)
    assert ws("task", "create", "fix-lint", "--title", "t", "--set", "rule=E501").exit_code == 0
    seen = {}
    for action, resource in EXPLAINED:
        for who in ("builder", "reader"):
            named = f"{action}:plan" if action == "transition" else action
            result = ws("rights", "explain", who, named, resource.format(task=1, request=1), "--json")
            if action == "approve":  # no request 1 yet: the resource is checked, not guessed
                assert result.exit_code != 0 and "no approval request 1" in result.output
                continue
            assert result.exit_code == 0, (action, result.output)
            decision = json.loads(result.stdout)
            seen[(who, action)] = (decision["allowed"], decision["policies"])
    assert seen[("builder", "claim")] == (True, ["agent:builder:transition:fix-lint.plan"])
    assert seen[("reader", "claim")] == (False, ["tier:read-only"])
    assert seen[("builder", "memory.read")] == (True, ["memory:own-pad"])
    assert seen[("reader", "memory.read")] == (False, [])
    assert seen[("builder", "kpi.record")] == (False, ["kpi:measured-not-reported"])
    assert seen[("builder", "brief.preview")] == (True, ["brief:own"])
    assert seen[("builder", "plan.edit")] == (True, ["plan:own"])
    assert seen[("reader", "plan.edit")] == (False, [])
    assert seen[("reader", "tool.see")] == (False, [])
    assert seen[("builder", "admin")] == (False, ["agents-never-admin"])
    assert seen[("builder", "oversee")] == (False, [])
    assert json.loads(ws("rights", "explain", "alice", "oversee", "company", "--json").stdout)["policies"] == [
        "humans"]
    text = ws("rights", "explain", "reader", "memory.write", f"pad:{TEAM_PAD}")
    assert text.exit_code == 0 and text.stdout.startswith("DENY") and "default deny" in text.stdout
    unknown = ws("rights", "explain", "reader", "fly", "company")
    assert unknown.exit_code != 0 and "unknown action 'fly'" in unknown.output
