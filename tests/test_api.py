"""The REST API under /api/v1: bearer tokens, tenancy, tasks and their transitions, approvals, artifacts,
holds, memory, messages and the record, each over the real app and a real SQLite file. Every 4xx/5xx
(and the 202 of an approval edge) must be an RFC 9457 problem whose ``status`` is the HTTP status: a hook
on the client checks every response of every test. One test goes over a real uvicorn socket."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import uvicorn
from conftest import FIX_LINT, GOOD_SPEC, ManualClock
from fastapi.testclient import TestClient

from roster.api import create_app
from roster.specfile import parse_spec

API = "/api/v1"
PROBLEM = "application/problem+json"
HANDLES = ("alice", "bob", "planner", "builder", "qa", "merger")
GLOBEX = FIX_LINT.replace("company: acme", "company: globex")
AUDITOR = "  auditor: {reports_to: alice, rights: {read: ['*']}}\n"
RECORDS_SPEC = FIX_LINT.replace("humans:\n", AUDITOR + "humans:\n") + (
    "kpis:\n"
    "  lead_time: {description: Hours from found to merged, unit: hours, direction: down, target: 24}\n"
    "  merged_per_week: {direction: up}\n")
SMALL_ARTIFACTS = FIX_LINT + "limits: {artifact_bytes: 100}\n"


# -- problem checking ------------------------------------------------------------------------------


def check_problem_shape(response: httpx.Response) -> None:
    """Every error (and every problem body) is an RFC 9457 problem whose status is the HTTP status."""
    is_problem = response.headers.get("content-type", "").startswith(PROBLEM)
    if response.status_code < 400 and not is_problem:
        return
    response.read()
    where = f"{response.request.method} {response.request.url} -> {response.status_code}"
    kind = response.headers.get("content-type")
    assert is_problem, f"{where} is not a problem: {kind} {response.text[:300]}"
    body = response.json()
    assert isinstance(body, dict), body
    for member, kind in (("type", str), ("title", str), ("status", int), ("detail", str)):
        assert isinstance(body.get(member), kind), f"problem member {member!r} missing or not {kind}: {body}"
    assert body["status"] == response.status_code, body
    assert body["type"].startswith("/problems/") and body["title"] and body["detail"], body


def problem(response: httpx.Response, status: int, code: str) -> dict:
    """The problem body of ``response``, asserting its status and type."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == f"/problems/{code}", body
    assert body["status"] == status
    return body


# -- fixtures --------------------------------------------------------------------------------------


def _client(app, **kwargs) -> TestClient:
    client = TestClient(app, **kwargs)
    client.event_hooks = {"request": [], "response": [check_problem_shape]}
    return client


@pytest.fixture
def app(store, company):
    return create_app(store)


@pytest.fixture
def api(app):
    with _client(app) as client:
        yield client


@pytest.fixture
def tokens(company) -> dict[str, str]:
    return {handle: company.issue_token(handle, actor="alice", name=f"{handle} api").token
            for handle in HANDLES}


@pytest.fixture
def auth(tokens):
    def headers(handle: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[handle]}", **extra}

    return headers


@pytest.fixture
def globex(store):
    store.apply(parse_spec(GLOBEX), applied_by="alice")
    return store.company("globex")


def create(api, auth, title: str = "fix E501", who: str = "alice", **extra) -> dict:
    body = {"workflow": "fix-lint", "title": title, "fields": {"rule": "E501"}, **extra}
    response = api.post(f"{API}/tasks", json=body, headers=auth(who))
    assert response.status_code == 201, response.text
    return response.json()


def to_verified(company, task_id: int) -> int:
    """Walk a found task to verified through the store, as its agents. Returns its version."""
    company.transition(task_id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    company.record_artifact(task_id, "patch", b"-import os, sys\n+import os\n+import sys\n", actor="builder")
    task = company.get_task(task_id)
    company.transition(task_id, "build", actor="builder", expected_version=task.version,
                       writes={"branch": "fix/e501"})
    company.record_check(task_id, "lint_clean", passed=True, actor="qa")
    task = company.get_task(task_id)
    verified = company.transition(task_id, "verify", actor="qa", expected_version=task.version)
    assert verified.state == "verified"
    return verified.version


# -- authentication --------------------------------------------------------------------------------


def test_refused_credentials_all_get_the_same_401_problem(api, company, store, tokens, auth):
    """Missing, malformed, unknown, revoked, expired and paused-principal tokens look alike to the caller;
    only the audit log says why."""
    assert api.get(f"{API}/tasks", headers=auth("alice")).status_code == 200
    assert api.get(f"{API}/tasks", headers={"Authorization": f"bearer {tokens['alice']}"}).status_code == 200
    revoked = company.issue_token("builder", actor="alice")
    company.revoke_token(revoked.record.id, actor="alice")
    paused = company.issue_token("qa", actor="alice")
    company.set_status("qa", "paused", actor="alice")
    clock = ManualClock(datetime(2026, 1, 2, tzinfo=UTC))
    store.clock = clock  # later than every stamp so far: the chain's timestamps stay in order
    expiring = company.issue_token("planner", actor="alice", lifetime=timedelta(minutes=5))
    assert api.get(f"{API}/tasks", headers={"Authorization": f"Bearer {expiring.token}"}).status_code == 200
    clock.advance(minutes=5)
    _, _, token_id, secret = tokens["planner"].split(".")
    forged = f"rst.acme.{token_id}.{secret[:-1] + ('A' if secret[-1] != 'A' else 'B')}"
    attempts = {
        "missing": {},
        "basic": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        "valid token, wrong scheme": {"Authorization": f"Basic {tokens['alice']}"},
        "valid token, no scheme": {"Authorization": tokens["alice"]},
        "empty bearer": {"Authorization": "Bearer "},
        "bearer only": {"Authorization": "Bearer"},
        "malformed": {"Authorization": "Bearer not-a-roster-token"},
        "unknown id": {"Authorization": "Bearer rst.acme.deadbeef0000.c2VjcmV0c2VjcmV0"},
        "unknown company": {"Authorization": f"Bearer rst.initech.{token_id}.{secret}"},
        "wrong secret": {"Authorization": f"Bearer {forged}"},
        "revoked": {"Authorization": f"Bearer {revoked.token}"},
        "expired": {"Authorization": f"Bearer {expiring.token}"},
        "paused principal": {"Authorization": f"Bearer {paused.token}"},
    }
    bodies = {}
    for name, headers in attempts.items():
        response = api.get(f"{API}/tasks", headers=headers)
        body = problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"].lower().startswith("bearer"), name
        bodies[name] = body
    first = bodies["missing"]
    assert all(body == first for body in bodies.values()), bodies
    for word in ("revoked", "expired", "unknown", "malformed", "paused", "missing", "secret", "planner"):
        assert word not in first["detail"].lower()
    # a write is refused the same way, before its body is even looked at
    refused = api.post(f"{API}/tasks", json={"workflow": 7}, headers=attempts["revoked"])
    assert problem(refused, 401, "unauthenticated") == first
    assert api.post(f"{API}/tasks", json={"workflow": 7}).json() == first
    # the reasons are on record, in the token's company
    reasons = [e.data["reason"] for e in company.audit_log(action="auth.rejected")]
    assert any("revoked" in r for r in reasons) and any("expired" in r for r in reasons)
    assert any("paused" in r for r in reasons) and "unknown token" in reasons, reasons
    assert company.list_tasks() == []


# -- tenancy ---------------------------------------------------------------------------------------


def test_another_companys_tasks_are_not_found_never_forbidden(api, auth, company, globex):
    for i in range(3):
        globex.create_task(workflow="fix-lint", title=f"globex secret {i}", actor="alice",
                           fields={"rule": "G1"})
    mine = create(api, auth, "acme work")
    assert mine["id"] == 1 and mine["company"] == "acme"
    foreign = 3  # globex has a task 3; acme has only task 1
    assert globex.get_task(foreign).title == "globex secret 2"
    for handle in ("alice", "planner"):
        body = problem(api.get(f"{API}/tasks/{foreign}", headers=auth(handle)), 404, "not-found")
        assert "globex" not in str(body)
    attempts = [
        api.post(f"{API}/tasks/{foreign}/transitions", headers=auth("planner"),
                 json={"transition": "plan", "expected_version": 1, "writes": {"spec": GOOD_SPEC}}),
        api.post(f"{API}/tasks/{foreign}/hold", headers=auth("alice"), json={}),
        api.put(f"{API}/tasks/{foreign}/artifacts/patch", headers=auth("builder"), content=b"x"),
        api.get(f"{API}/tasks/{foreign}/artifacts", headers=auth("alice")),
        api.get(f"{API}/tasks/{foreign}/context", headers=auth("alice")),
    ]
    for response in attempts:
        assert "globex" not in problem(response, 404, "not-found")["detail"]
    assert [t.state for t in globex.list_tasks()] == ["found"] * 3
    assert all(t.version == 1 and t.lease_holder is None for t in globex.list_tasks())
    listed = api.get(f"{API}/tasks", headers=auth("alice")).json()
    assert [(t["company"], t["id"], t["title"]) for t in listed["items"]] == [("acme", 1, "acme work")]
    events = api.get(f"{API}/audit", headers=auth("alice")).json()["items"]
    assert events and {e["company"] for e in events} == {"acme"}
    assert not any("globex" in str(e["data"]) for e in events)


# -- tasks -----------------------------------------------------------------------------------------


def test_create_is_idempotent_with_an_idempotency_key(api, auth, company):
    body = {"workflow": "fix-lint", "title": "fix E501", "fields": {"rule": "E501"}, "priority": 3}
    first = api.post(f"{API}/tasks", json=body, headers=auth("alice", **{"Idempotency-Key": "ticket-42"}))
    assert first.status_code == 201
    created = first.json()
    assert (created["state"], created["version"], created["created_by"], created["idempotency_key"],
            created["priority"]) == ("found", 1, "alice", "ticket-42", 3)
    again = api.post(f"{API}/tasks", json=body, headers=auth("alice", **{"Idempotency-Key": "ticket-42"}))
    assert again.status_code == 200 and again.json() == created
    assert [t.id for t in company.list_tasks()] == [created["id"]]
    other = api.post(f"{API}/tasks", json=body, headers=auth("alice", **{"Idempotency-Key": "ticket-43"}))
    assert other.status_code == 201 and other.json()["id"] != created["id"]
    assert len(company.list_tasks()) == 2
    assert api.get(f"{API}/tasks/{created['id']}", headers=auth("planner")).json() == created


def test_create_refusals_are_problems(api, auth, company):
    invalid = api.post(f"{API}/tasks", headers=auth("alice"),
                       json={"workflow": "fix-lint", "title": "t", "fields": {"rule": "E1", "count": -1}})
    assert problem(invalid, 422, "invalid-fields")["problems"]
    problem(api.post(f"{API}/tasks", headers=auth("alice"), json={"workflow": "nope", "title": "t"}), 404,
            "not-found")
    assert company.list_tasks() == []


def test_list_pages_chain_through_next_cursor(api, auth):
    ids = [create(api, auth, f"task {i}")["id"] for i in range(5)]
    seen, pages, cursor = [], [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor is not None else {})}
        page = api.get(f"{API}/tasks", params=params, headers=auth("alice"))
        assert page.status_code == 200
        items, cursor = page.json()["items"], page.json()["next_cursor"]
        pages.append(len(items))
        seen += [t["id"] for t in items]
        if cursor is None:
            break
        assert cursor == str(items[-1]["id"])
        assert len(pages) < 10
    assert pages == [2, 2, 1] and seen == ids
    whole = api.get(f"{API}/tasks", headers=auth("alice")).json()
    assert [t["id"] for t in whole["items"]] == ids and whole["next_cursor"] is None
    api.post(f"{API}/tasks/{ids[1]}/transitions", headers=auth("planner"),
             json={"transition": "plan", "expected_version": 1, "writes": {"spec": GOOD_SPEC}})
    planned = api.get(f"{API}/tasks", params={"state": "planned"}, headers=auth("alice")).json()
    assert [t["id"] for t in planned["items"]] == [ids[1]]


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "1e3", "9" * 16, " 2"])
def test_a_cursor_this_api_did_not_hand_out_is_a_400_problem(api, auth, cursor):
    create(api, auth)
    body = problem(api.get(f"{API}/tasks", params={"cursor": cursor}, headers=auth("alice")), 400, "usage")
    assert "cursor" in body["detail"]
    problem(api.get(f"{API}/audit", params={"cursor": cursor}, headers=auth("alice")), 400, "usage")


def test_get_one_task_and_an_unknown_one(api, auth):
    task = create(api, auth)
    got = api.get(f"{API}/tasks/{task['id']}", headers=auth("builder"))
    assert got.status_code == 200 and got.json() == task and got.json()["fields"] == {"rule": "E501"}
    problem(api.get(f"{API}/tasks/999", headers=auth("alice")), 404, "not-found")


def test_transitions_under_contract_over_http(api, auth, company):
    task = create(api, auth)
    url = f"{API}/tasks/{task['id']}/transitions"
    # the builder cannot build a task that is not planned yet: the clause is named
    build = {"transition": "build", "expected_version": 1, "writes": {"branch": "b"}}
    violation = problem(api.post(url, headers=auth("builder"), json=build), 409, "contract-violation")
    assert (violation["clause"], violation["transition"], violation["task_id"]) == (
        "from", "build", task["id"])
    short = problem(api.post(url, headers=auth("planner"), json={"transition": "plan", "expected_version": 1,
                                                                 "writes": {"spec": "too short"}}),
                    409, "contract-violation")
    assert short["clause"] in ("fields", "writes")
    stale = problem(api.post(url, headers=auth("planner"), json={"transition": "plan", "expected_version": 7,
                                                                 "writes": {"spec": GOOD_SPEC}}),
                    409, "stale-version")
    assert (stale["expected"], stale["actual"], stale["task_id"]) == (7, 1, task["id"])
    assert company.get_task(task["id"]).version == 1
    plan = {"transition": "plan", "expected_version": 1, "writes": {"spec": GOOD_SPEC},
            "rationale": "clear rule"}
    moved = api.post(url, headers=auth("planner"), json=plan)
    assert moved.status_code == 200, moved.text
    assert (moved.json()["state"], moved.json()["version"], moved.json()["fields"]["spec"]) == (
        "planned", 2, GOOD_SPEC)
    assert company.get_task(task["id"]).state == "planned"
    rejected = company.audit_log(task_id=task["id"], action="task.transition.rejected")
    assert [e.principal for e in rejected] == ["builder", "planner", "planner"]
    [done] = company.audit_log(task_id=task["id"], action="task.transition")
    assert (done.principal, done.data["to"], done.data["rationale"]) == ("planner", "planned", "clear rule")
    problem(api.post(f"{API}/tasks/999/transitions", headers=auth("planner"),
                     json={"transition": "plan", "expected_version": 1}), 404, "not-found")


def test_an_approval_edge_answers_202_and_the_approver_runs_it(api, auth, company):
    task = create(api, auth)
    version = to_verified(company, task["id"])
    pending = api.post(f"{API}/tasks/{task['id']}/transitions", headers=auth("merger"),
                       json={"transition": "merge", "expected_version": version,
                             "rationale": "lint is clean"})
    body = problem(pending, 202, "approval-pending")
    request_id = body["request_id"]
    assert body["approvers"] == ["human"]
    assert api.get(f"{API}/tasks/{task['id']}", headers=auth("merger")).json()["state"] == "verified"
    assert api.get(f"{API}/approvals/inbox", headers=auth("merger")).json() == []
    inbox = api.get(f"{API}/approvals/inbox", headers=auth("alice"))
    assert inbox.status_code == 200
    [request] = inbox.json()
    assert (request["id"], request["task_id"], request["transition"], request["requested_by"],
            request["status"], request["rationale"]) == (
        request_id, task["id"], "merge", "merger", "pending", "lint is clean")
    # the merger may not approve its own request
    problem(api.post(f"{API}/approvals/{request_id}/approve", headers=auth("merger"), json={}), 409,
            "contract-violation")
    approved = api.post(f"{API}/approvals/{request_id}/approve", headers=auth("alice"),
                        json={"note": "ship it"})
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["decided_by"], approved.json()["note"]) == (
        "approved", "alice", "ship it")
    merged = api.get(f"{API}/tasks/{task['id']}", headers=auth("alice")).json()
    assert (merged["state"], merged["version"]) == ("merged", version + 1)
    assert api.get(f"{API}/approvals/inbox", headers=auth("alice")).json() == []
    [event] = company.audit_log(task_id=task["id"], action="task.transition")[-1:]
    assert (event.principal, event.data["approved_by"], event.data["approval_request"]) == (
        "merger", "alice", request_id)
    problem(api.post(f"{API}/approvals/{request_id}/approve", headers=auth("bob"), json={}), 400, "usage")
    problem(api.post(f"{API}/approvals/999/approve", headers=auth("alice"), json={}), 404, "not-found")


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, body, field", [
    ("/tasks", {}, "workflow"),
    ("/tasks", {"workflow": "fix-lint"}, "title"),
    ("/tasks", {"workflow": 5, "title": "t"}, "workflow"),
    ("/tasks", {"workflow": "fix-lint", "title": "t", "priority": "high"}, "priority"),
    ("/tasks", {"workflow": "fix-lint", "title": "t", "fields": []}, "fields"),
    ("/tasks", {"workflow": "fix-lint", "title": "t", "sneaky": True}, "sneaky"),
    ("/tasks", {"workflow": "fix-lint", "title": "t", "parent_id": 2**70}, "parent_id"),
    ("/tasks/1/transitions", {"transition": "plan"}, "expected_version"),
    ("/tasks/1/transitions", {"transition": "plan", "expected_version": "one"}, "expected_version"),
    ("/tasks/1/transitions", {"transition": "plan", "expected_version": 1, "actor": "alice"}, "actor"),
    ("/tasks/1/hold", {"seconds": -5}, "seconds"),
    ("/memory", {"text": "x", "confidence": 2}, "confidence"),
    ("/messages", {"to": "alice"}, "body"),
    ("/messages", {"to": "alice", "body": "hi", "thread_id": 2**64}, "thread_id"),
])
def test_invalid_bodies_are_422_problems_with_errors(api, auth, company, path, body, field):
    create(api, auth)
    before = company.verify_audit()[0]
    response = api.post(f"{API}{path}", json=body, headers=auth("planner"))
    found = problem(response, 422, "validation")
    assert found["errors"] and all(set(e) == {"loc", "msg"} for e in found["errors"])
    assert any(e["loc"][:1] == ["body"] and field in e["loc"] for e in found["errors"]), found["errors"]
    assert field in found["detail"]
    assert company.verify_audit()[0] == before, "nothing was done"
    assert company.get_task(1).version == 1


def test_invalid_json_and_parameters_are_422_problems(api, auth):
    create(api, auth)
    raw = api.post(f"{API}/tasks", content=b"{not json",
                   headers=auth("alice", **{"Content-Type": "application/json"}))
    assert problem(raw, 422, "validation")["errors"]
    problem(api.get(f"{API}/tasks", params={"limit": 0}, headers=auth("alice")), 422, "validation")
    problem(api.get(f"{API}/tasks/abc", headers=auth("alice")), 422, "validation")
    for huge in ("99999999999999999999999", str(2**63)):
        problem(api.get(f"{API}/tasks/{huge}", headers=auth("alice")), 422, "validation")
        problem(api.get(f"{API}/threads/{huge}", headers=auth("alice")), 422, "validation")
        problem(api.get(f"{API}/runs", params={"task_id": huge}, headers=auth("alice")), 422, "validation")
        problem(api.post(f"{API}/approvals/{huge}/approve", json={}, headers=auth("alice")), 422,
                "validation")


# -- artifacts -------------------------------------------------------------------------------------


def test_artifact_upload_versions_download_and_diff(api, auth, company, store):
    task = create(api, auth)
    url = f"{API}/tasks/{task['id']}/artifacts/fix.diff"
    v1_bytes, v2_bytes = b"import os, sys\nprint(os, sys)\n", b"import os\nimport sys\nprint(os, sys)\n"
    first = api.put(url, params={"kind": "patch", "reason": "first try"}, content=v1_bytes,
                    headers=auth("builder", **{"Content-Type": "application/octet-stream"}))
    assert first.status_code == 200, first.text
    assert (first.json()["version"], first.json()["kind"], first.json()["name"], first.json()["size"],
            first.json()["created_by"], first.json()["reason"], first.json()["parent_id"]) == (
        1, "patch", "fix.diff", len(v1_bytes), "builder", "first try", None)
    assert first.json()["sha256"] == hashlib.sha256(v1_bytes).hexdigest()
    second = api.put(url, params={"kind": "patch"}, content=v2_bytes, headers=auth("builder"))
    assert second.status_code == 200
    assert (second.json()["version"], second.json()["parent_id"]) == (2, first.json()["id"])
    same = api.put(url, params={"kind": "patch"}, content=v2_bytes, headers=auth("builder"))
    assert same.json() == second.json(), "the same content again is not a new version"
    versions = api.get(f"{url}/versions", headers=auth("planner"))
    assert [v["version"] for v in versions.json()] == [1, 2]
    latest = api.get(f"{url}/content", headers=auth("planner"))
    assert latest.status_code == 200 and latest.content == v2_bytes
    assert latest.headers["etag"] == f'"{hashlib.sha256(v2_bytes).hexdigest()}"'
    assert latest.headers["x-roster-version"] == "2"
    assert latest.headers["content-type"].startswith("application/octet-stream")
    old = api.get(f"{url}/content", params={"version": 1}, headers=auth("planner"))
    assert old.content == v1_bytes and old.headers["etag"] == f'"{hashlib.sha256(v1_bytes).hexdigest()}"'
    problem(api.get(f"{url}/content", params={"version": 3}, headers=auth("planner")), 404, "not-found")
    diff = api.get(f"{url}/diff", headers=auth("planner")).json()
    assert (diff["task_id"], diff["name"]) == (task["id"], "fix.diff")
    assert "-import os, sys\n" in diff["diff"] and "+import os\n" in diff["diff"]
    assert "fix.diff@v1" in diff["diff"] and "fix.diff@v2" in diff["diff"]
    listed = api.get(f"{API}/tasks/{task['id']}/artifacts", headers=auth("alice")).json()
    assert [(a["name"], a["version"]) for a in listed] == [("fix.diff", 2)]
    assert api.get(f"{API}/tasks/{task['id']}/artifacts", params={"all_versions": "true"},
                   headers=auth("alice")).json() == versions.json()
    problem(api.get(f"{API}/tasks/{task['id']}/artifacts/nope/versions", headers=auth("alice")), 404,
            "not-found")
    events = company.audit_log(task_id=task["id"], action="artifact.record")
    assert [(e.principal, e.data["artifact_version"]) for e in events] == [("builder", 1), ("builder", 2)]
    # stored data that no longer matches its hash is a 500 problem, not the bytes
    store.blobs.path(company.company, hashlib.sha256(v2_bytes).hexdigest()).write_bytes(b"tampered\n")
    corrupt = problem(api.get(f"{url}/content", headers=auth("planner")), 500, "corrupt-artifact")
    assert corrupt["sha256"] == hashlib.sha256(v2_bytes).hexdigest() and "tampered" not in corrupt["detail"]


def test_an_artifact_over_the_specs_limit_is_413_and_nothing_is_stored(api, auth, company, store):
    store.apply(parse_spec(SMALL_ARTIFACTS), applied_by="alice")
    task = create(api, auth)
    url = f"{API}/tasks/{task['id']}/artifacts/fix.diff"
    big = b"x" * 101
    body = problem(api.put(url, params={"kind": "patch"}, content=big, headers=auth("builder")), 413,
                   "payload-too-large")
    assert (body["size"], body["limit"]) == (101, 100)
    assert company.list_artifacts(task["id"]) == []
    assert company.get_task(task["id"]).version == task["version"]
    assert not store.blobs.path(company.company, hashlib.sha256(big).hexdigest()).exists()
    problem(api.get(f"{url}/versions", headers=auth("builder")), 404, "not-found")
    assert [e.principal for e in company.audit_log(action="artifact.record.rejected")] == ["builder"]
    at_limit = api.put(url, params={"kind": "patch"}, content=b"y" * 100, headers=auth("builder"))
    assert at_limit.status_code == 200 and at_limit.json()["size"] == 100


# -- holds -----------------------------------------------------------------------------------------


def test_a_human_holds_a_task_and_agents_wait_until_released(api, auth, company):
    task = create(api, auth)
    company.transition(task["id"], "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    held = api.post(f"{API}/tasks/{task['id']}/hold", headers=auth("alice"),
                    json={"seconds": 600, "note": "mine"})
    assert held.status_code == 200, held.text
    lease = held.json()
    assert lease["holder"] == "alice" and lease["task_id"] == task["id"] and lease["fencing_token"] >= 1
    assert api.get(f"{API}/tasks/{task['id']}", headers=auth("builder")).json()["lease_holder"] == "alice"
    version = company.get_task(task["id"]).version
    build = {"transition": "build", "expected_version": version, "writes": {"branch": "fix/e501"}}
    blocked = problem(api.post(f"{API}/tasks/{task['id']}/transitions", headers=auth("builder"), json=build),
                      409, "lease-held")
    assert blocked["holder"] == "alice"
    problem(api.put(f"{API}/tasks/{task['id']}/artifacts/patch", content=b"p", headers=auth("builder")), 409,
            "lease-held")
    problem(api.post(f"{API}/tasks/{task['id']}/hold", headers=auth("bob"), json={}), 409, "lease-held")
    problem(api.post(f"{API}/tasks/{task['id']}/release", headers=auth("bob"), json={}), 400, "usage")
    released = api.post(f"{API}/tasks/{task['id']}/release", headers=auth("alice"),
                        json={"note": "all yours"})
    assert released.status_code == 204 and released.content == b""
    assert company.get_task(task["id"]).lease_holder is None
    assert api.put(f"{API}/tasks/{task['id']}/artifacts/patch", content=b"p",
                   headers=auth("builder")).status_code == 200
    build["expected_version"] = company.get_task(task["id"]).version
    built = api.post(f"{API}/tasks/{task['id']}/transitions", headers=auth("builder"), json=build)
    assert built.status_code == 200 and built.json()["state"] == "built"
    actions = [(e.principal, e.action) for e in company.audit_log(task_id=task["id"])
               if e.action in ("task.hold", "task.handoff")]
    assert actions == [("alice", "task.hold"), ("alice", "task.handoff")]


def test_a_holder_writes_with_its_fencing_token_and_a_stale_one_is_refused(api, auth, company):
    task = create(api, auth)
    lease = api.post(f"{API}/tasks/{task['id']}/hold", headers=auth("alice"), json={}).json()
    url = f"{API}/tasks/{task['id']}/transitions"
    stale = problem(api.post(url, headers=auth("alice"), json={"transition": "reject", "expected_version": 1,
                                                              "fencing_token": lease["fencing_token"] - 1}),
                    409, "stale-fencing-token")
    assert (stale["presented"], stale["current"]) == (lease["fencing_token"] - 1, lease["fencing_token"])
    assert company.get_task(task["id"]).state == "found"
    done = api.post(url, headers=auth("alice"), json={"transition": "reject", "expected_version": 1,
                                                      "fencing_token": lease["fencing_token"]})
    assert done.status_code == 200 and done.json()["state"] == "rejected"


# -- memory ----------------------------------------------------------------------------------------


def test_memory_is_written_and_searched_in_ones_own_pad(api, auth, company):
    added = api.post(f"{API}/memory", headers=auth("builder"),
                     json={"text": "The lint settings live in pyproject.toml under tool.ruff",
                           "kind": "lesson", "confidence": 0.9, "provenance": {"task": 1}})
    assert added.status_code == 201, added.text
    entry = added.json()
    assert (entry["pad"], entry["kind"], entry["created_by"], entry["confidence"]) == (
        "builder", "lesson", "builder", 0.9)
    api.post(f"{API}/memory", headers=auth("builder"), json={"text": "Bob prefers small patches"})
    found = api.get(f"{API}/memory", params={"q": "where are the ruff settings"}, headers=auth("builder"))
    assert found.status_code == 200
    assert found.json()[0]["id"] == entry["id"] and found.json()[0]["score"] is not None
    assert api.get(f"{API}/memory", params={"q": "ruff"}, headers=auth("planner")).json() == []
    other_pad = {"pad": "builder", "q": "ruff"}
    denied = problem(api.get(f"{API}/memory", params=other_pad, headers=auth("planner")), 403, "denied")
    assert denied["principal"] == "planner"
    problem(api.post(f"{API}/memory", headers=auth("planner"), json={"text": "sneaky", "pad": "builder"}),
            403, "denied")
    assert [e.principal for e in company.audit_log(action="memory.read.rejected")] == ["planner"]
    human = api.get(f"{API}/memory", params=other_pad, headers=auth("alice"))
    assert [e["id"] for e in human.json()] == [entry["id"]]


# -- messages --------------------------------------------------------------------------------------


def test_messages_and_threads(api, auth, company, globex):
    sent = api.post(f"{API}/messages", headers=auth("builder"),
                    json={"to": "alice", "body": "Which rule first?"})
    assert sent.status_code == 201, sent.text
    message = sent.json()
    assert (message["sender"], message["recipient"], message["thread_id"], message["read_at"]) == (
        "builder", "alice", message["id"], None)
    cross = problem(api.post(f"{API}/messages", headers=auth("builder"),
                             json={"to": "globex/alice", "body": "hello over there"}), 403, "denied")
    assert "company" in cross["detail"]
    problem(api.post(f"{API}/messages", headers=auth("alice"), json={"to": "globex/alice", "body": "hi"}),
            403, "denied")
    problem(api.post(f"{API}/messages", headers=auth("builder"), json={"to": "planner", "body": "psst"}), 403,
            "denied")
    problem(api.post(f"{API}/messages", headers=auth("alice"), json={"to": "nobody", "body": "hi"}), 404,
            "not-found")
    assert globex.message_inbox(actor="alice") == []
    inbox = api.get(f"{API}/messages", headers=auth("alice"))
    assert [(m["id"], m["body"]) for m in inbox.json()["items"]] == [(message["id"], "Which rule first?")]
    assert inbox.json()["next_cursor"] is None
    reply = api.post(f"{API}/messages", headers=auth("alice"),
                     json={"to": "builder", "body": "E501 first.", "thread_id": message["thread_id"]})
    assert reply.status_code == 201 and reply.json()["thread_id"] == message["thread_id"]
    for handle in ("alice", "builder"):
        thread = api.get(f"{API}/threads/{message['thread_id']}", headers=auth(handle))
        assert [(m["sender"], m["body"]) for m in thread.json()] == [
            ("builder", "Which rule first?"), ("alice", "E501 first.")]
    problem(api.get(f"{API}/threads/{message['thread_id']}", headers=auth("planner")), 404, "not-found")
    problem(api.get(f"{API}/threads/999", headers=auth("alice")), 404, "not-found")
    assert [m["body"] for m in api.get(f"{API}/messages", headers=auth("builder")).json()["items"]] == [
        "E501 first."]
    sends = company.audit_log(action="message.send")
    assert [(e.principal, e.subject) for e in sends] == [
        ("builder", "principal:alice"), ("alice", "principal:builder")]


# -- the record ------------------------------------------------------------------------------------


def test_runs_costs_and_kpis(api, auth, company, store, tokens):
    store.apply(parse_spec(RECORDS_SPEC), applied_by="alice")
    auditor = company.issue_token("auditor", actor="alice").token
    task = create(api, auth)
    for agent, cost in (("builder", 0.25), ("planner", 0.5)):
        run = company.start_run(agent, trigger="task", task_id=task["id"], fencing_token=None)
        company.finish_run(run, outcome="succeeded", model="m", input_tokens=100, output_tokens=10,
                           cost_usd=cost)
    mine = api.get(f"{API}/runs", headers=auth("builder"))
    assert mine.status_code == 200 and [r["agent"] for r in mine.json()["items"]] == ["builder"]
    others = api.get(f"{API}/runs", params={"agent": "planner"}, headers=auth("builder")).json()["items"]
    assert [r["agent"] for r in others] == ["builder"], "an agent's filter cannot widen its view"
    everyone = api.get(f"{API}/runs", headers=auth("alice")).json()["items"]
    assert sorted(r["agent"] for r in everyone) == ["builder", "planner"]
    first = api.get(f"{API}/runs", params={"limit": 1}, headers=auth("alice")).json()
    rest = api.get(f"{API}/runs", params={"limit": 1, "cursor": first["next_cursor"]}, headers=auth("alice")).json()
    assert [r["id"] for r in first["items"] + rest["items"]] == [r["id"] for r in everyone]
    assert rest["next_cursor"] is None
    assert {r["cost_usd"] for r in everyone} == {0.25, 0.5}
    assert api.get(f"{API}/runs", params={"task_id": 99}, headers=auth("alice")).json()["items"] == []
    problem(api.get(f"{API}/costs", headers=auth("builder")), 403, "denied")
    assert [e.principal for e in company.audit_log(action="costs.read.rejected")] == ["builder"]
    granted = api.get(f"{API}/costs", headers={"Authorization": f"Bearer {auditor}"})
    assert granted.status_code == 200, granted.text
    costs = api.get(f"{API}/costs", headers=auth("alice"))
    assert costs.status_code == 200 and costs.json() == granted.json()
    spend = {a["name"]: a for a in costs.json()["agents"]}
    builder = spend["builder"]
    assert (builder["runs"], builder["successes"], builder["cost_usd"]) == (1, 1, 0.25)
    assert spend["planner"]["cost_per_success_usd"] == 0.5
    kpis = api.get(f"{API}/kpis", headers=auth("planner"))
    assert kpis.status_code == 200
    none = {"first": None, "latest": None, "readings": 0, "change": None}
    assert kpis.json() == [
        {"name": "lead_time", "description": "Hours from found to merged", "unit": "hours",
         "direction": "down", "target": 24.0, **none},
        {"name": "merged_per_week", "description": "", "unit": "", "direction": "up", "target": None, **none}]


def test_kpi_readings_are_recorded_by_humans_and_read_by_anyone_in_the_company(api, auth, company, store):
    store.apply(parse_spec(RECORDS_SPEC), applied_by="alice")
    url = f"{API}/kpis/lead_time/readings"
    first = api.post(url, headers=auth("alice"), json={"value": 30, "source": "from the tracker"})
    assert first.status_code == 201
    assert (first.json()["value"], first.json()["recorded_by"], first.json()["source"]) == (
        30.0, "alice", "from the tracker")
    api.post(url, headers=auth("bob"), json={"value": 26.5})
    # an agent never records its own KPI: refused, audited, nothing stored
    refused = api.post(url, headers=auth("planner"), json={"value": 1})
    assert refused.status_code == 403
    check_problem_shape(refused)
    assert company.audit_log(action="kpi.reading.rejected")[-1].principal == "planner"
    for bad in ({"value": "NaN"}, {"value": 1, "extra": True}, {}):
        assert api.post(url, headers=auth("alice"), json=bad).status_code == 422
    missing = api.post(f"{API}/kpis/uptime/readings", headers=auth("alice"), json={"value": 1})
    assert missing.status_code == 404
    check_problem_shape(missing)
    assert api.get(f"{API}/kpis/uptime/readings", headers=auth("planner")).status_code == 404

    readings = api.get(url, headers=auth("planner"))
    assert readings.status_code == 200
    assert [(r["value"], r["recorded_by"]) for r in readings.json()] == [(30.0, "alice"), (26.5, "bob")]
    assert [r["value"] for r in api.get(url, headers=auth("planner"), params={"limit": 1}).json()] == [26.5]
    [lead_time, _] = api.get(f"{API}/kpis", headers=auth("qa")).json()
    assert (lead_time["first"]["value"], lead_time["latest"]["value"], lead_time["readings"],
            lead_time["change"]) == (30.0, 26.5, 2, -3.5)


def test_audit_pages_verify_and_attribution(api, auth, company):
    start = company.audit_log()[-1].seq
    task = create(api, auth)
    api.post(f"{API}/tasks/{task['id']}/transitions", headers=auth("planner"),
             json={"transition": "plan", "expected_version": 1, "writes": {"spec": GOOD_SPEC}})
    api.put(f"{API}/tasks/{task['id']}/artifacts/patch", content=b"diff", headers=auth("builder"))
    api.post(f"{API}/memory", headers=auth("qa"), json={"text": "qa runs ruff"})
    api.post(f"{API}/tasks/{task['id']}/transitions", headers=auth("qa"),
             json={"transition": "verify", "expected_version": 3})
    events = company.audit_log(after_seq=start)
    assert [(e.principal, e.action) for e in events] == [
        ("alice", "task.create"), ("planner", "task.transition"), ("builder", "artifact.record"),
        ("qa", "memory.add"), ("qa", "task.transition.rejected")]
    assert all(e.data.get("via") == "api" for e in events)
    total = len(company.audit_log())
    seqs, cursor, pages = [], None, 0
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = api.get(f"{API}/audit", params=params, headers=auth("alice")).json()
        pages += 1
        seqs += [e["seq"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert cursor == str(page["items"][-1]["seq"]) and len(page["items"]) == 4
        assert pages < 50
    assert seqs == list(range(1, total + 1)) and pages == -(-total // 4)  # no empty last page
    by_planner = api.get(f"{API}/audit", params={"principal": "planner"},
                         headers=auth("alice")).json()["items"]
    assert [e["action"] for e in by_planner] == ["task.transition"]
    on_task = api.get(f"{API}/audit", params={"task_id": task["id"]}, headers=auth("alice")).json()["items"]
    assert {e["subject"] for e in on_task} == {f"task:{task['id']}"} and len(on_task) == 4
    problem(api.get(f"{API}/audit", headers=auth("planner")), 403, "denied")
    problem(api.get(f"{API}/audit/verify", headers=auth("builder")), 403, "denied")
    verified = api.get(f"{API}/audit/verify", headers=auth("alice"))
    assert verified.status_code == 200
    assert verified.json() == {"events": len(company.audit_log()), "intact": True, "first_bad_seq": None,
                               "reason": None}


def test_audit_verify_reports_a_broken_chain(api, auth, company, db_path):
    create(api, auth)
    con = sqlite3.connect(db_path)
    try:
        con.execute("UPDATE audit_events SET principal = 'mallory' WHERE company_id = 'acme' AND seq = 2")
        con.commit()
    finally:
        con.close()
    report = api.get(f"{API}/audit/verify", headers=auth("alice")).json()
    assert report["intact"] is False and report["first_bad_seq"] == 2 and report["reason"]


# -- problems everywhere ---------------------------------------------------------------------------


def test_unknown_routes_and_methods_are_problems_too(api, auth):
    problem(api.get(f"{API}/nope", headers=auth("alice")), 404, "not-found")
    problem(api.get("/nope"), 404, "not-found")
    wrong = problem(api.delete(f"{API}/tasks", headers=auth("alice")), 405, "method-not-allowed")
    assert wrong["title"]
    assert "GET" in api.delete(f"{API}/tasks", headers=auth("alice")).headers["allow"]


def test_an_unexpected_failure_is_a_500_problem_without_internals(app, auth, monkeypatch):
    from roster.store.company import CompanyStore

    def broken(*_args, **_kwargs):
        raise RuntimeError("secret internals: /var/lib/roster")

    monkeypatch.setattr(CompanyStore, "list_tasks", broken)
    with _client(app, raise_server_exceptions=False) as client:
        body = problem(client.get(f"{API}/tasks", headers=auth("alice")), 500, "internal")
    assert "secret" not in str(body) and "RuntimeError" not in str(body)


def test_the_openapi_document_is_served_and_names_the_problem_model(api):
    document = api.get(f"{API}/openapi.json").json()
    assert "/api/v1/tasks/{task_id}/transitions" in document["paths"]
    assert "Problem" in document["components"]["schemas"]
    assert "204" in document["paths"]["/api/v1/tasks/{task_id}/release"]["post"]["responses"]
    assert "202" in document["paths"]["/api/v1/tasks/{task_id}/transitions"]["post"]["responses"]


# -- over a real socket ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_over_a_real_uvicorn_socket(app, auth, company):
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10,
                          event_hooks={"response": [check_problem_shape]}) as client:
            refused = client.get(f"{API}/tasks")
            problem(refused, 401, "unauthenticated")
            assert refused.headers["www-authenticate"].lower().startswith("bearer")
            body = {"workflow": "fix-lint", "title": "over the wire", "fields": {"rule": "E1"}}
            keyed = auth("alice", **{"Idempotency-Key": "socket"})
            created = client.post(f"{API}/tasks", headers=keyed, json=body)
            assert created.status_code == 201
            again = client.post(f"{API}/tasks", headers=keyed, json=body)
            assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
            notes, binary = f"{API}/tasks/{created.json()['id']}/artifacts/notes", b"\x00\x01binary\xff"
            uploaded = client.put(notes, params={"kind": "report"}, content=binary, headers=auth("builder"))
            assert uploaded.status_code == 200 and uploaded.json()["size"] == len(binary)
            content = client.get(f"{notes}/content", headers=auth("qa"))
            assert content.content == binary
            listed = client.get(f"{API}/tasks", headers=auth("planner")).json()
            assert [t["title"] for t in listed["items"]] == ["over the wire"]
            problem(client.get(f"{API}/tasks/42", headers=auth("alice")), 404, "not-found")
    finally:
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive()
    assert [t.title for t in company.list_tasks()] == ["over the wire"]


def test_a_value_the_audit_hash_cannot_represent_is_a_400_and_nothing_is_stored(api, auth, company):
    # JSON allows integers past 2**53; the audit chain's RFC 8785 hash does not. Found by schemathesis.
    response = api.post(f"{API}/memory", json={"text": "hello", "provenance": {"x": 2**60}}, headers=auth("planner"))
    body = problem(response, 400, "usage")
    assert "outside +/-(2**53 - 1)" in body["detail"]
    assert company.list_memory(actor="planner") == []
    assert company.verify_audit()[1] is None


@pytest.mark.parametrize("cursor", ["²", "1e3", "-1", "9" * 16, " 1"])
def test_a_cursor_this_api_did_not_hand_out_is_a_400_not_a_crash(api, auth, cursor):
    # Found by schemathesis: str.isdigit() accepts '²', which int() then refused with a 500.
    for path in ("/tasks", "/audit", "/messages"):
        problem(api.get(f"{API}{path}", params={"cursor": cursor}, headers=auth("alice")), 400, "usage")


# -- the verbs an agent has everywhere (issue 14, item 2) ------------------------------------------


def test_a_check_recorded_over_rest_is_what_lets_verify_through(api, auth, company, store):
    store.apply(parse_spec(RECORDS_SPEC), applied_by="alice")
    auditor = {"Authorization": f"Bearer {company.issue_token('auditor', actor='alice').token}"}
    task = create(api, auth)
    company.transition(task["id"], "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    company.record_artifact(task["id"], "patch", b"-a\n+b\n", actor="builder")
    version = company.get_task(task["id"]).version
    company.transition(task["id"], "build", actor="builder", expected_version=version, writes={"branch": "b"})
    url = f"{API}/tasks/{task['id']}"
    version = company.get_task(task["id"]).version
    early = problem(api.post(f"{url}/transitions", headers=auth("qa"),
                             json={"transition": "verify", "expected_version": version}), 409, "contract-violation")
    assert early["clause"] == "requires.checks"
    problem(api.post(f"{url}/checks", headers=auditor, json={"name": "lint_clean", "passed": True}), 403, "denied")
    problem(api.post(f"{url}/checks", headers=auth("qa"), json={"name": "lint_clean"}), 422, "validation")
    problem(api.post(f"{API}/tasks/99/checks", headers=auth("qa"), json={"name": "x", "passed": True}), 404,
            "not-found")
    recorded = api.post(f"{url}/checks", headers=auth("qa"),
                        json={"name": "lint_clean", "passed": True, "detail": "ruff: 0 findings"})
    assert recorded.status_code == 201, recorded.text
    assert recorded.json() == {"task_id": task["id"], "name": "lint_clean", "passed": True,
                               "detail": "ruff: 0 findings", "version": version + 1}
    moved = api.post(f"{url}/transitions", headers=auth("qa"),
                     json={"transition": "verify", "expected_version": version + 1})
    assert moved.status_code == 200 and moved.json()["state"] == "verified"
    checks = [(e.principal, e.action, e.data.get("via")) for e in company.history(task["id"])
              if e.action.startswith("check.record")]
    assert checks == [("auditor", "check.record.rejected", "api"), ("qa", "check.record", "api")]


def test_delegation_over_rest_files_a_child_with_its_packet_once_per_key(api, auth, company):
    parent = create(api, auth)
    url = f"{API}/tasks/{parent['id']}/children"
    packet = {"subproblem": "Find which files break E501", "context": "ruff reports 12", "tried": [],
              "desired_output": "a list of files", "success_condition": "every file named"}
    body = {"workflow": "fix-lint", "title": "list E501 files", "fields": {"rule": "E501"}, "packet": packet,
            "key": "e501-files", "artifacts": [{"kind": "notes", "content": "start with src/"}]}
    first = api.post(url, headers=auth("alice"), json=body)
    assert first.status_code == 201, first.text
    child = first.json()
    assert (child["parent_id"], child["title"], child["packet"]["subproblem"], child["created_by"]) == (
        parent["id"], "list E501 files", "Find which files break E501", "alice")
    again = api.post(url, headers=auth("alice"), json=body)
    assert again.status_code == 200 and again.json()["id"] == child["id"]
    assert [a.name for a in company.list_artifacts(child["id"])] == ["notes"]  # saved once
    problem(api.post(url, headers=auth("alice"), json={**body, "packet": None}), 422, "validation")
    problem(api.post(url, headers=auth("alice"), json={**body, "key": None, "packet": {"subproblem": "x"}}), 400,
            "usage")
    problem(api.post(url, headers=auth("planner"), json={**body, "key": "other"}), 403, "denied")
    assert [t.id for t in company.children(parent["id"])] == [child["id"]]


def test_escalation_over_rest_goes_up_the_ladder_and_is_on_the_record(api, auth, company, globex):
    task = create(api, auth)
    globex.create_task(workflow="fix-lint", title="globex work", actor="alice", fields={"rule": "G1"})
    url = f"{API}/tasks/{task['id']}/escalations"
    problem(api.post(url, headers=auth("planner"), json={"reason": "stuck", "category": "sloppy"}), 422,
            "validation")
    problem(api.post(f"{API}/tasks/99/escalations", headers=auth("planner"), json={"reason": "stuck"}), 404,
            "not-found")
    stepped = api.post(url, headers=auth("planner"), json={"reason": "the rule is ambiguous", "category": "judgment"})
    assert stepped.status_code == 201, stepped.text
    assert (stepped.json()["from_agent"], stepped.json()["step"], stepped.json()["to"]) == ("planner", "human", "human")
    [escalation] = company.list_escalations()
    assert (escalation.task_id, escalation.from_agent) == (task["id"], "planner")
    [event] = company.audit_log(action="escalation.human")
    assert (event.principal, event.data["via"]) == ("planner", "api")
    assert globex.list_escalations() == []


def test_messages_are_marked_read_over_rest_only_by_their_recipient(api, auth):
    sent = api.post(f"{API}/messages", headers=auth("builder"), json={"to": "alice", "body": "Which rule first?"})
    message_id = sent.json()["id"]

    def unread(handle: str) -> list[int]:
        return [m["id"] for m in api.get(f"{API}/messages", params={"unread": True}, headers=auth(handle))
                .json()["items"]]

    assert unread("alice") == [message_id]
    assert api.post(f"{API}/messages/read", headers=auth("builder"), json={"ids": [message_id]}).json() == {
        "marked": 0}
    assert unread("alice") == [message_id]
    assert api.post(f"{API}/messages/read", headers=auth("alice"), json={"ids": [message_id]}).json() == {
        "marked": 1}
    assert unread("alice") == []
    problem(api.post(f"{API}/messages/read", headers=auth("alice"), json={"ids": []}), 422, "validation")


def test_bulk_decisions_decide_each_request_on_its_own(api, auth, company):
    requests = []
    for title in ("first", "second", "third"):
        task = create(api, auth, title)
        version = to_verified(company, task["id"])
        pending = api.post(f"{API}/tasks/{task['id']}/transitions", headers=auth("merger"),
                           json={"transition": "merge", "expected_version": version})
        requests.append((task["id"], problem(pending, 202, "approval-pending")["request_id"]))
    (t1, r1), (t2, r2), (t3, r3) = requests
    decided = api.post(f"{API}/approvals/decisions", headers=auth("alice"), json={"decisions": [
        {"id": r1, "decision": "approve", "note": "ship it"},
        {"id": r2, "decision": "reject"},  # no note: refused, and nothing else is undone
        {"id": 999, "decision": "approve"},
        {"id": r3, "decision": "reject", "note": "wrong branch"},
        {"id": r1, "decision": "approve"},  # already decided
    ]})
    assert decided.status_code == 200, decided.text
    results = decided.json()["results"]
    assert [(r["id"], r["outcome"], r["error"]) for r in results] == [
        (r1, "approved", None), (r2, "refused", "usage"), (999, "refused", "not-found"), (r3, "rejected", None),
        (r1, "refused", "usage")]
    assert "note" in results[1]["detail"] and results[0]["request"]["decided_by"] == "alice"
    assert [company.get_task(t).state for t in (t1, t2, t3)] == ["merged", "verified", "verified"]
    assert {r.id: r.status for r in company.list_requests()} == {r1: "approved", r2: "pending", r3: "rejected"}
    merger = api.post(f"{API}/approvals/decisions", headers=auth("merger"),
                      json={"decisions": [{"id": r2, "decision": "approve"}]}).json()["results"]
    assert [(r["outcome"], r["error"]) for r in merger] == [("refused", "contract-violation")], merger  # its own
    problem(api.post(f"{API}/approvals/decisions", headers=auth("alice"), json={"decisions": []}), 422, "validation")
    problem(api.post(f"{API}/approvals/decisions", headers=auth("alice"),
                     json={"decisions": [{"id": r2, "decision": "maybe"}]}), 422, "validation")


def test_costs_say_unknown_for_a_run_that_could_not_be_priced(api, auth, company):
    """A run whose model has no price: GET /costs answers 200 with cost_usd null and the run counted as
    unpriced, never 0 (and GET /runs shows its cost as null)."""
    priced = company.start_run("planner", trigger="test", task_id=None, fencing_token=None)
    company.finish_run(priced, outcome="succeeded", model="openai:gpt-4o-mini", input_tokens=10, cost_usd=0.25)
    unpriced = company.start_run("planner", trigger="test", task_id=None, fencing_token=None)
    company.finish_run(unpriced, outcome="succeeded", model="openai:my-finetune", input_tokens=10, cost_usd=None)

    response = api.get(f"{API}/costs", headers=auth("alice"))
    assert response.status_code == 200, response.text
    [planner] = [row for row in response.json()["agents"] if row["name"] == "planner"]
    assert (planner["runs"], planner["cost_usd"], planner["priced_cost_usd"], planner["unpriced_runs"]) == (
        2, None, 0.25, 1)
    runs = {r["id"]: r["cost_usd"] for r in api.get(f"{API}/runs", headers=auth("alice")).json()["items"]}
    assert (runs[priced], runs[unpriced]) == (0.25, None)
