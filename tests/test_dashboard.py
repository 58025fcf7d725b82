"""The dashboard over the real app and a real database (SQLite and PostgreSQL): signing in with a token
or a one-time link, the session cookie's flags, form tokens (CSRF) on every post, each page, and the
forms that act (approve, reject, bulk, resolve, reply, hold/edit/release, pause/resume, kill switch,
verify). Every assertion is on what reached the outside: the HTTP status, the rows and the audit chain.
The browser's side is tests/test_dashboard_browser.py."""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import FIX_LINT, GOOD_SPEC, js
from dashboard_support import form_token, sign_in
from fastapi.testclient import TestClient
from test_api import to_verified

from roster.api import create_app
from roster.errors import ApprovalPending
from roster.store import audit as store_audit

HANDLES = ("alice", "bob", "planner", "builder", "qa", "merger")
FIX_LINT_HOOKED = FIX_LINT + """webhooks:
  ops: {url: "http://127.0.0.1:9/hook", events: [task.held], secret_env: OPS_SECRET}
"""
PAGES = ("/", "/inbox", "/org", "/boards", "/boards/fix-lint", "/boards/fix-lint/found", "/agents",
         "/agents/builder", "/audit", "/costs", "/webhooks", "/parts/overview", "/parts/boards/fix-lint")


@pytest.fixture
def tokens(company) -> dict[str, str]:
    return {h: company.issue_token(h, actor="alice", name=f"{h} web").token for h in HANDLES}


@pytest.fixture
def web(store, company):
    with TestClient(create_app(store)) as client:
        yield client


def new_task(company, title: str = "fix E501") -> int:
    return company.create_task(workflow="fix-lint", title=title, actor="alice", fields={"rule": "E501"})[0].id


def record_view(store, company, task_id: int, principal: str) -> None:
    with store.write() as conn:
        head = store_audit.read_head(conn, company.company)
        company.record_view_txn(conn, head, task_id, principal)
        store_audit.save_head(conn, head)


# -- signing in ----------------------------------------------------------------------------------------


def test_pages_need_a_session_and_a_token_opens_one_in_a_strict_httponly_cookie(web, company, tokens):
    for path in PAGES:
        response = web.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/sign-in"), path
    assert web.get("/parts/overview", headers={"HX-Request": "true"}, follow_redirects=False).status_code == 401
    nonce = form_token(web.get("/sign-in").text)
    signed = web.post("/sign-in", data={"csrf": nonce, "token": tokens["alice"], "next": "/org"},
                      follow_redirects=False)
    assert (signed.status_code, signed.headers["location"]) == (303, "/org")
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith("roster_session=rds.acme.")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
    for path in PAGES:
        page = web.get(path)
        assert page.status_code == 200, (path, page.text[:300])
    assert "alice" in web.get("/").text
    [event] = company.audit_log(action="dashboard.sign_in")
    assert (event.principal, event.data["with"], event.data["via"]) == ("alice", "token", "dashboard")
    # the session row holds only a hash of the cookie's secret
    secret = cookie.split(";")[0].split(".")[-1]
    with company.store.read() as conn:
        stored = [r.secret_sha256 for r in conn.exec_driver_sql("SELECT secret_sha256 FROM dashboard_sessions")]
    assert stored and all(secret not in s for s in stored)


def test_agents_bad_tokens_and_forged_sign_in_forms_are_refused(web, company, tokens):
    nonce = form_token(web.get("/sign-in").text)
    agent = web.post("/sign-in", data={"csrf": nonce, "token": tokens["builder"]}, follow_redirects=False)
    assert agent.status_code == 401 and "agents cannot sign in" in agent.text
    assert "set-cookie" not in agent.headers or "roster_session=" not in agent.headers["set-cookie"]
    nonce = form_token(agent.text)
    bad = web.post("/sign-in", data={"csrf": nonce, "token": "rst.acme.000000000000.nope"}, follow_redirects=False)
    assert bad.status_code == 401 and "token refused" in bad.text
    rejected = company.audit_log(action="auth.rejected")
    assert any(e.principal == "builder" and "agents cannot sign in" in e.data["reason"] for e in rejected)
    # a sign-in form from elsewhere carries no nonce of this browser's
    web.cookies.clear()
    forged = web.post("/sign-in", data={"csrf": "x" * 32, "token": tokens["alice"]}, follow_redirects=False)
    assert forged.status_code == 403
    assert company.audit_log(action="dashboard.sign_in") == []
    # a redirect after signing in stays on this site
    nonce = form_token(web.get("/sign-in").text)
    signed = web.post("/sign-in", data={"csrf": nonce, "token": tokens["alice"], "next": "//evil.example/x"},
                      follow_redirects=False)
    assert signed.headers["location"] == "/"


def test_a_one_time_link_from_roster_dashboard_signs_in_once(cli, monkeypatch):
    from conftest import ok

    ok(cli("init"))
    link = js(cli("dashboard", "--url", "http://127.0.0.1:9999", "--json"))
    assert link["url"].startswith("http://127.0.0.1:9999/sign-in?link=rdl.")
    from roster.cli.context import operator_handle
    from roster.store import Store

    store = Store.open(f"sqlite:///{cli.workspace / '.roster' / 'roster.db'}")
    try:
        with TestClient(create_app(store)) as web:
            path = link["url"].removeprefix("http://127.0.0.1:9999")
            page = web.get(path)
            assert page.status_code == 200 and "Sign in with this link" in page.text
            code = re.search(r'name="link" value="([^"]+)"', page.text).group(1)
            used = web.post("/sign-in", data={"csrf": form_token(page.text), "link": code}, follow_redirects=False)
            assert used.status_code == 303 and "roster_session=" in used.headers["set-cookie"]
            assert operator_handle() in web.get("/").text
            web.cookies.clear()
            again = web.get(path)
            second = web.post("/sign-in", data={"csrf": form_token(again.text), "link": code}, follow_redirects=False)
            assert second.status_code == 401 and "already used" in second.text
    finally:
        store.close()


def test_a_link_expires_and_signing_out_or_pausing_the_human_ends_the_session(store, company, tokens, web):
    from roster.store import dashboard_sessions

    link, _ = dashboard_sessions.open_link(store, store.session(tokens["bob"]))
    store.clock.now += dashboard_sessions.LINK_LIFETIME  # StepClock: move past the link's lifetime
    page = web.get(f"/sign-in?link={link}")
    late = web.post("/sign-in", data={"csrf": form_token(page.text), "link": link}, follow_redirects=False)
    assert late.status_code == 401 and "expired" in late.text

    csrf = sign_in(web, tokens["bob"])
    out = web.post("/sign-out", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert web.get("/", follow_redirects=False).status_code == 303
    [event] = company.audit_log(action="dashboard.sign_out")
    assert event.principal == "bob"

    sign_in(web, tokens["bob"])
    assert web.get("/", follow_redirects=False).status_code == 200
    company.set_status("bob", "paused", actor="alice", reason="on leave")
    assert web.get("/", follow_redirects=False).status_code == 303


# -- form tokens -------------------------------------------------------------------------------------------


def test_a_post_without_this_sessions_form_token_is_refused_and_changes_nothing(web, store, company, tokens):
    task = new_task(company)
    csrf_alice = sign_in(web, tokens["alice"])
    seq = company.audit_log(newest_first=True, limit=1)[0].seq
    for data in ({"note": "x"}, {"note": "x", "csrf": ""}, {"note": "x", "csrf": "0" * 64}):
        refused = web.post(f"/tasks/{task}/hold", data=data, follow_redirects=False)
        assert refused.status_code == 403 and "security token" in refused.text
    # another session's token (bob's) does not open alice's forms
    csrf_bob = sign_in(TestClient(web.app), tokens["bob"])  # a second browser (the app is already started)
    assert csrf_bob != csrf_alice
    assert web.post(f"/tasks/{task}/hold", data={"csrf": csrf_bob}, follow_redirects=False).status_code == 403
    # a post from another site is refused even with the token
    cross = web.post(f"/tasks/{task}/hold", data={"csrf": csrf_alice}, headers={"Origin": "http://evil.example"},
                     follow_redirects=False)
    assert cross.status_code == 403
    assert company.get_task(task).lease_holder is None
    assert [e.action for e in company.audit_log(after_seq=seq)] == ["dashboard.sign_in"]  # bob's sign-in only
    # with it, the same post works
    assert web.post(f"/tasks/{task}/hold", data={"csrf": csrf_alice}, follow_redirects=False).status_code == 303
    assert company.get_task(task).lease_holder == "alice"


# -- acting ------------------------------------------------------------------------------------------------


def test_approve_from_the_inbox_runs_the_transition_as_the_agent_with_the_human_recorded(web, company, tokens):
    task = new_task(company)
    version = to_verified(company, task)
    with pytest.raises(ApprovalPending):
        company.transition(task, "merge", actor="merger", expected_version=version, rationale="lint is clean")
    [pending] = company.inbox(actor="alice")
    csrf = sign_in(web, tokens["alice"])
    inbox = web.get("/inbox").text
    assert f"Request {pending.id}" in inbox and "lint is clean" in inbox and "merge" in inbox
    assert "Reply to merger" in inbox  # the message form to the requesting agent
    approved = web.post(f"/approvals/{pending.id}/approve", data={"csrf": csrf, "note": "ship it"},
                        follow_redirects=False)
    assert approved.status_code == 303
    assert company.get_task(task).state == "merged"
    [move] = company.audit_log(task_id=task, action="task.transition")[-1:]
    assert (move.principal, move.data["approved_by"]) == ("merger", "alice")
    [decision] = company.audit_log(action="approval.approve")
    assert (decision.principal, decision.data["via"]) == ("alice", "dashboard")
    # deciding it again is refused with the store's reason, and nothing moves
    again = web.post(f"/approvals/{pending.id}/approve", data={"csrf": csrf}, follow_redirects=False)
    assert again.status_code == 400 and "approved" in again.text


def test_reject_needs_a_note_bulk_decides_each_and_escalations_and_replies_land(web, company, tokens):
    requests = []
    for title in ("a", "b", "c"):
        task = new_task(company, title)
        version = to_verified(company, task)
        with pytest.raises(ApprovalPending):
            company.transition(task, "merge", actor="merger", expected_version=version)
        requests.append(company.inbox(actor="alice")[-1].id)
    csrf = sign_in(web, tokens["alice"])
    assert web.post(f"/approvals/{requests[0]}/reject", data={"csrf": csrf}, follow_redirects=False).status_code == 400
    rejected = web.post(f"/approvals/{requests[0]}/reject", data={"csrf": csrf, "note": "tests are missing"},
                        follow_redirects=False)
    assert rejected.status_code == 303
    assert company.get_request(requests[0], actor="alice").status == "rejected"
    bulk = web.post("/approvals/bulk", data={"csrf": csrf, "decision": "approve", "ids": [requests[1], requests[2], 999],
                                             "note": "batch"})
    assert bulk.status_code == 200
    assert [company.get_request(r, actor="alice").status for r in requests[1:]] == ["approved", "approved"]
    assert "refused" in bulk.text and "999" in bulk.text

    task = new_task(company, "stuck")
    escalation = company.escalate(task, from_agent="builder", category="judgment", reason="which rule?")
    assert "which rule?" in web.get("/inbox").text
    assert web.post(f"/escalations/{escalation.id}/resolve", data={"csrf": csrf}, follow_redirects=False).status_code == 400
    done = web.post(f"/escalations/{escalation.id}/resolve", data={"csrf": csrf, "note": "use E501"},
                    follow_redirects=False)
    assert done.status_code == 303
    assert company.list_escalations(status="open") == []
    reply = web.post("/messages", data={"csrf": csrf, "recipient": "builder", "body": "use E501", "task_id": task},
                     follow_redirects=False)
    assert reply.status_code == 303
    [message] = company.message_inbox(actor="builder")
    assert (message.sender, message.body, message.task_id) == ("alice", "use E501", task)


def test_hold_edit_and_release_reach_the_agents_next_brief_with_the_diff_and_the_note(web, store, company, tokens):
    from roster.runtime.context import ContextAssembler, Wakeup

    task = new_task(company)
    record_view(store, company, task, "planner")  # the planner saw it as it was
    csrf = sign_in(web, tokens["alice"])
    assert "Hold this task" in web.get(f"/tasks/{task}").text
    assert web.post(f"/tasks/{task}/hold", data={"csrf": csrf, "note": "checking"}, follow_redirects=False).status_code == 303
    page = web.get(f"/tasks/{task}").text
    assert "Save fields" in page and "Release" in page
    version = company.get_task(task).version
    bad = web.post(f"/tasks/{task}/edit", data={"csrf": csrf, "version": version, "fields": "{not json"},
                   follow_redirects=False)
    assert bad.status_code == 400 and "not valid JSON" in bad.text
    invalid = web.post(f"/tasks/{task}/edit", data={"csrf": csrf, "version": version,
                                                    "fields": json.dumps({"rule": "E401", "count": -1})},
                       follow_redirects=False)
    assert invalid.status_code == 422  # the workflow's schema: count >= 0
    edited = web.post(f"/tasks/{task}/edit", data={"csrf": csrf, "version": version, "note": "wrong rule",
                                                   "fields": json.dumps({"rule": "E401"})}, follow_redirects=False)
    assert edited.status_code == 303
    assert web.post(f"/tasks/{task}/release", data={"csrf": csrf, "note": "it was E401, not E501"},
                    follow_redirects=False).status_code == 303
    moved = company.get_task(task)
    assert (moved.fields, moved.lease_holder) == ({"rule": "E401"}, None)
    brief = ContextAssembler(company).brief("planner", moved, Wakeup("preview", None)).data
    handoff = brief["handoff"]
    assert handoff["fields"] == {"rule": {"before": "E501", "after": "E401"}}
    assert any(n["note"] == "it was E401, not E501" and n["by"] == "alice" for n in handoff["notes"])


def test_pausing_an_agent_from_the_org_chart_releases_its_leases_and_the_kill_switch_pauses_all(web, company,
                                                                                                 tokens):
    task = new_task(company)
    company.claim(task, actor="planner", run_id="run-1")
    assert company.get_task(task).lease_holder == "planner"
    csrf = sign_in(web, tokens["alice"])
    org = web.get("/org").text
    assert "Pause planner" in org and "reports to" in org
    assert web.post("/principals/planner/pause", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert company.get_principal("planner").status == "paused"
    assert company.get_task(task).lease_holder is None
    assert "Resume planner" in web.get("/org").text
    assert web.post("/principals/planner/resume", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert company.get_principal("planner").status == "active"
    assert web.post("/scopes/pause", data={"csrf": csrf, "scope": "*", "reason": "incident"},
                    follow_redirects=False).status_code == 303
    assert "*" in company.paused() or "company" in company.paused()
    assert "kill switch is on" in web.get("/org").text
    assert web.post("/scopes/resume", data={"csrf": csrf, "scope": "*"}, follow_redirects=False).status_code == 303
    assert company.paused() == []


def test_the_task_page_shows_fields_history_artifacts_with_diffs_checks_runs_and_blocking_clauses(web, company,
                                                                                                   tokens):
    task = new_task(company)
    company.transition(task, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    company.record_artifact(task, "patch", b"import os, sys\n", actor="builder")
    company.record_artifact(task, "patch", b"import os\nimport sys\n", actor="builder")
    company.record_check(task, "lint_clean", passed=False, actor="qa")
    sign_in(web, tokens["alice"])
    page = web.get(f"/tasks/{task}").text
    assert GOOD_SPEC in page  # the typed field
    assert "patch v2" in page and "+import sys" in page  # the artifact's diff to v1
    assert "lint_clean" in page and "failed" in page
    assert "task.transition" in page  # the timeline
    assert "<code>build</code>" in page and "patch" in page  # build, from here, blocked by its missing artifact
    assert web.get("/tasks/999").status_code == 404


def test_the_audit_page_filters_verifies_the_chain_and_exports_json_lines(web, company, tokens):
    task = new_task(company)
    csrf = sign_in(web, tokens["alice"])
    filtered = web.get("/audit", params={"action": "task.create"}).text
    assert "task.create" in filtered and "dashboard.sign_in" not in filtered
    started = web.post("/audit/verify", data={"csrf": csrf}, follow_redirects=False)
    assert (started.status_code, started.headers["location"]) == (303, "/audit/verify")
    for _ in range(100):  # the walk runs in a thread of its own; the page shows its progress, then this
        verified = web.get("/audit/verify").text
        if "the chain is intact" in verified:
            break
        assert "Verifying the chain" in verified
        time.sleep(0.05)
    assert "events verified: the chain is intact" in verified
    export = web.get("/audit/export", params={"task": str(task)})
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert lines and all(e["subject"] == f"task:{task}" for e in lines) and all(len(e["hash"]) == 64 for e in lines)


def test_the_board_counts_every_state_and_pages_a_long_column(web, company, tokens):
    for i in range(60):
        new_task(company, f"task {i:02d}")
    company.create_task(workflow="fix-lint", title="owned one", actor="alice", fields={"rule": "E501"},
                        owner="builder")
    sign_in(web, tokens["alice"])
    board = web.get("/boards/fix-lint").text
    assert re.search(r'found <span class="count">61</span>', board)
    assert "All 61 in found" in board
    first = web.get("/boards/fix-lint/found").text
    assert first.count('<li><a href="/tasks/') == 50 and "Next" in first
    second = web.get("/boards/fix-lint/found", params={"offset": 50}).text
    assert second.count('<li><a href="/tasks/') == 11 and "Previous" in second
    only = web.get("/boards/fix-lint", params={"owner": "builder"}).text
    assert re.search(r'found <span class="count">1</span>', only) and "owned one" in only
    titled = web.get("/boards/fix-lint", params={"q": "TASK 0"}).text
    assert "task 05" in titled and "task 15" not in titled
    assert re.search(r'found <span class="count">10</span>', titled)  # task 00 .. task 09
    assert web.get("/boards/nope").status_code in (403, 404)


def test_swagger_ui_is_served_from_the_package_not_a_cdn(web):
    docs = web.get("/api/v1/docs")
    assert docs.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', docs.text) + re.findall(r"url: '([^']+)'", docs.text)
    assert urls and all(u.startswith(("http://testserver/", "/")) for u in urls), urls
    for asset in ("/static/swagger/swagger-ui-bundle.js", "/static/swagger/swagger-ui.css"):
        assert web.get(asset).status_code == 200 and len(web.get(asset).content) > 10_000
    for asset in ("/static/vendor/htmx-2.min.js", "/static/vendor/ext/hx-sse-2.min.js", "/static/roster.css"):
        assert web.get(asset).status_code == 200


def test_a_human_of_one_portfolio_sees_only_it_and_no_company_wide_page(store, tokens):
    from dashboard_support import TWO_PORTFOLIOS

    from roster.specfile import parse_spec

    store.apply(parse_spec(TWO_PORTFOLIOS), applied_by="alice")
    company = store.company("acme")
    company.create_task(workflow="fix-lint", title="core secret", actor="alice", fields={"rule": "E501"})
    web_task = company.create_task(workflow="site", title="web page", actor="alice")[0].id
    carol = company.issue_token("carol", actor="alice").token
    with TestClient(create_app(store)) as web:
        sign_in(web, carol)
        overview = web.get("/").text
        assert 'href="/costs"' not in overview and 'href="/audit"' not in overview  # not in her bar
        for path in ("/", "/inbox", "/org", "/boards", "/boards/site", f"/tasks/{web_task}", "/agents",
                     "/agents/builder", "/parts/overview"):
            page = web.get(path)
            assert page.status_code == 200 and "core secret" not in page.text, path
        for path in ("/boards/fix-lint", "/boards/fix-lint/found", "/tasks/1", "/audit", "/costs", "/audit/export"):
            page = web.get(path)
            assert page.status_code in (403, 404) and "core secret" not in page.text, path
        assert "fix-lint" not in web.get("/boards").text
        org = web.get("/org").text  # her portfolio only, and no buttons she may not press
        assert "eng/web" in org and "eng/core" not in org and "fix-lint" not in org
        assert "Kill switch" not in org and "Pause planner" not in org


def test_a_human_makes_a_transition_from_the_task_page_under_the_contract(web, company, tokens):
    task = new_task(company)
    csrf = sign_in(web, tokens["alice"])
    page = web.get(f"/tasks/{task}").text
    assert "Make reject" in page and "Make plan" not in page  # plan is the planner's
    refused = web.post(f"/tasks/{task}/move", data={"csrf": csrf, "transition": "plan", "version": 1},
                       follow_redirects=False)
    assert refused.status_code in (403, 409) and company.get_task(task).state == "found"
    stale = web.post(f"/tasks/{task}/move", data={"csrf": csrf, "transition": "reject", "version": 7},
                     follow_redirects=False)
    assert stale.status_code == 409 and company.get_task(task).state == "found"
    made = web.post(f"/tasks/{task}/move", data={"csrf": csrf, "transition": "reject", "version": 1,
                                                 "rationale": "not a real finding"}, follow_redirects=False)
    assert made.status_code == 303 and company.get_task(task).state == "rejected"
    [event] = company.audit_log(task_id=task, action="task.transition")
    assert (event.principal, event.data["via"]) == ("alice", "dashboard")


def test_the_org_chart_nests_agents_under_whom_they_report_to(web, company, tokens):
    from html.parser import HTMLParser

    class Managers(HTMLParser):
        """Each principal's item and the item it is nested in."""

        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str | None] = []
            self.parent: dict[str, str | None] = {}

        def handle_starttag(self, tag, attrs):
            if tag == "li":
                found = dict(attrs).get("id", "") or ""
                handle = found.removeprefix("principal-") if found.startswith("principal-") else None
                if handle:
                    self.parent[handle] = next((h for h in reversed(self.stack) if h), None)
                self.stack.append(handle)

        def handle_endtag(self, tag):
            if tag == "li" and self.stack:
                self.stack.pop()

    sign_in(web, tokens["alice"])
    parsed = Managers()
    parsed.feed(web.get("/org").text)
    assert parsed.parent == {"alice": None, "bob": None, "planner": "alice", "builder": "alice", "qa": "alice",
                             "merger": "alice"}


def test_the_task_page_links_the_brief_each_agent_would_read_and_the_inbox_shows_the_patch(web, company, tokens):
    task = new_task(company)
    sign_in(web, tokens["alice"])
    page = web.get(f"/tasks/{task}").text
    assert f'href="/tasks/{task}/brief/planner"' in page
    brief = web.get(f"/tasks/{task}/brief/planner")
    assert brief.status_code == 200 and "fix E501" in brief.text and "tokens" in brief.text
    assert web.get(f"/tasks/{task}/brief/nobody").status_code == 404
    version = to_verified(company, task)
    with pytest.raises(ApprovalPending):
        company.transition(task, "merge", actor="merger", expected_version=version)
    inbox = web.get("/inbox").text
    assert "+import sys" in inbox and "lint_clean</strong> passed" in inbox  # the patch and the checks, readable


def test_the_event_stream_sends_the_kinds_that_changed_and_ends_when_the_session_does(store, company, tokens):
    import threading

    import httpx

    from roster.api.server import ApiServer

    server = ApiServer(store, host="127.0.0.1", port=0)
    base = server.start()
    try:
        with httpx.Client(base_url=base, timeout=20) as web, httpx.Client(base_url=base, timeout=20) as other:
            sign_in(web, tokens["alice"])
            csrf = sign_in(other, tokens["alice"])  # the same human in another browser
            seen: list[str] = []
            with web.stream("GET", "/events") as events:
                assert events.status_code == 200
                assert events.headers["content-type"].startswith("text/event-stream")
                lines = events.iter_lines()
                assert next(line for line in lines if line.startswith("event:")) == "event: hello"
                threading.Timer(0.3, lambda: new_task(company)).start()  # a commit in this process
                seen.append(next(line for line in lines if line.startswith("event:")))
                assert seen == ["event: task"]
                # this browser's session ends: signed out from the dashboard's own form
                web.post("/sign-out", data={"csrf": form_token(web.get("/").text)})
                threading.Timer(0.3, lambda: new_task(company, "again")).start()
                kinds = [line for line in lines if line.startswith("event:")]
            assert "event: signed-out" in kinds and kinds[-1] == "event: signed-out"  # then it ended
            assert other.get("/", follow_redirects=False).status_code == 200 and csrf  # the other one lives on
            assert web.get("/events", follow_redirects=False).status_code in (303, 401)
    finally:
        server.stop(timeout=2)


def test_field_edits_that_are_too_deep_or_hold_a_nul_are_refused_and_nothing_changes(web, company, tokens):
    task = new_task(company)
    csrf = sign_in(web, tokens["alice"])
    web.post(f"/tasks/{task}/hold", data={"csrf": csrf})
    version = company.get_task(task).version
    for fields in ('{"rule": ' + "[" * 5000 + "]" * 5000 + "}", '{"rule": "E\\u0000"}'):
        refused = web.post(f"/tasks/{task}/edit", data={"csrf": csrf, "version": version, "fields": fields},
                           follow_redirects=False)
        assert refused.status_code == 400 and "cannot be stored" in refused.text
    too_big = web.post(f"/tasks/{task}/edit", data={"csrf": csrf, "version": version, "fields": "x" * 3_000_000},
                       follow_redirects=False)
    assert too_big.status_code == 413
    assert company.get_task(task).fields == {"rule": "E501"}


def test_the_webhooks_page_shows_the_delivery_log_and_sends_a_failed_delivery_again(store, tokens):
    from roster.specfile import parse_spec

    store.apply(parse_spec(FIX_LINT_HOOKED), applied_by="alice")
    company = store.company("acme")
    task = new_task(company)
    company.hold(task, actor="alice", note="mine now")  # a task.held event for the hook
    assert company.enqueue_webhooks() == 1
    [delivery] = company.webhook_deliveries(actor="alice")
    company.record_webhook_attempt(delivery.id, outcome="failed", http_status=410, error="gone")
    with TestClient(create_app(store)) as web:
        csrf = sign_in(web, tokens["alice"])
        page = web.get("/webhooks").text
        assert "ops" in page and "task.held" in page and "failed" in page and "$OPS_SECRET" in page
        assert web.post("/webhooks/replay", data={"csrf": csrf}, follow_redirects=False).status_code == 400
        again = web.post("/webhooks/replay", data={"csrf": csrf, "ids": [delivery.id]}, follow_redirects=False)
        assert again.status_code == 303
    [replayed] = company.webhook_deliveries(actor="alice")
    assert replayed.status == "pending"
    [event] = company.audit_log(action="webhook.replay")
    assert (event.principal, event.data["via"]) == ("alice", "dashboard")


def test_another_processs_commit_reaches_an_open_stream(store, company, tokens, databases, db_backend):
    """A second Store on the same database stands for another process: its commits never run this store's
    hooks. On PostgreSQL they are heard through LISTEN at once; on SQLite by the 5 s read of the chain."""
    import threading

    import httpx

    from roster.api.server import ApiServer
    from roster.store import Store

    other = Store.open(databases("roster"))
    server = ApiServer(store, host="127.0.0.1", port=0)
    base = server.start()
    try:
        with httpx.Client(base_url=base, timeout=20) as web:
            sign_in(web, tokens["alice"])
            with web.stream("GET", "/events") as events:
                lines = events.iter_lines()
                assert next(line for line in lines if line.startswith("event:")) == "event: hello"
                time.sleep(0.5)  # listening
                began = time.monotonic()
                threading.Timer(0.2, lambda: new_task(other.company("acme"), "from elsewhere")).start()
                assert next(line for line in lines if line.startswith("event:")) == "event: task"
                waited = time.monotonic() - began
        assert waited < (2.0 if db_backend == "postgresql" else 8.0), waited
    finally:
        server.stop(timeout=2)
        other.close()


def test_the_audit_page_pages_back_by_sequence_and_the_export_streams_every_event(web, company, tokens,
                                                                                  monkeypatch):
    from roster.web import views

    monkeypatch.setattr(views, "EXPORT_PAGE", 7)  # the export crosses many pages
    for i in range(60):
        new_task(company, f"t{i}")
    sign_in(web, tokens["alice"])
    first = web.get("/audit").text
    seqs = [int(s) for s in re.findall(r"<tr><td>(\d+)</td>", first)]
    assert len(seqs) == 50 and seqs == sorted(seqs, reverse=True)
    older = re.search(r'href="/audit\?before=(\d+)', first)
    assert older and int(older.group(1)) == seqs[-1]
    second = [int(s) for s in re.findall(r"<tr><td>(\d+)</td>", web.get(f"/audit?before={seqs[-1]}").text)]
    assert second and max(second) == seqs[-1] - 1
    export = web.get("/audit/export")
    lines = [json.loads(line) for line in export.text.splitlines()]
    total = len(company.audit_log())
    assert [e["seq"] for e in lines] == list(range(1, total + 1))  # every event once, in order, over pages


def test_verify_runs_in_a_child_process_and_shows_where_a_tampered_chain_breaks(web, store, company, tokens):
    from sqlalchemy import update

    from roster.store.schema import audit_events

    new_task(company)
    csrf = sign_in(web, tokens["alice"])
    with store.write() as conn:  # rewrite history behind the chain's back
        conn.execute(update(audit_events).where(audit_events.c.company_id == "acme", audit_events.c.seq == 2)
                     .values(principal="mallory"))
    assert web.post("/audit/verify", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    for _ in range(400):
        page = web.get("/audit/verify").text
        if "Verifying the chain" not in page:
            break
        time.sleep(0.05)
    assert "the chain breaks at event 2" in page


def test_a_portfolio_scoped_human_cannot_start_a_verification(store, tokens):
    from dashboard_support import TWO_PORTFOLIOS

    from roster.specfile import parse_spec

    store.apply(parse_spec(TWO_PORTFOLIOS), applied_by="alice")
    carol = store.company("acme").issue_token("carol", actor="alice").token
    with TestClient(create_app(store)) as web:
        csrf = sign_in(web, carol)
        assert web.post("/audit/verify", data={"csrf": csrf}, follow_redirects=False).status_code == 403
        assert web.get("/audit/verify").status_code == 403


def test_verify_from_a_real_roster_serve_process_walks_the_chain_in_a_child_process(cli):
    import os
    import socket
    import subprocess
    import sys

    import httpx
    from conftest import ok

    ok(cli("init"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTER_")}
    proc = subprocess.Popen([sys.executable, "-m", "roster", "serve", "--port", str(port)], cwd=cli.workspace,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        link = js(cli("dashboard", "--url", base, "--json"))["url"]
        with httpx.Client(base_url=base, timeout=20) as web:
            for _ in range(100):
                try:
                    page = web.get(link.removeprefix(base))
                    break
                except httpx.ConnectError:
                    time.sleep(0.1)
            code = re.search(r'name="link" value="([^"]+)"', page.text).group(1)
            assert web.post("/sign-in", data={"csrf": form_token(page.text), "link": code}).status_code == 303
            csrf = form_token(web.get("/audit").text)
            assert web.post("/audit/verify", data={"csrf": csrf}).status_code == 303
            for _ in range(300):
                result = web.get("/audit/verify").text
                if "Verifying the chain" not in result:
                    break
                time.sleep(0.1)
            assert "events verified: the chain is intact" in result, result[-800:]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert out.count("roster serve: dashboard at") == 1, out  # the spawned child ran the walk, not the CLI


def test_an_agents_page_shows_its_fitness_over_the_window_it_names(web, company, tokens):
    from roster.store import fitness as store_fitness

    sign_in(web, tokens["alice"])
    page = web.get("/agents/planner").text
    days = store_fitness.DEFAULT_WINDOW // 86400
    assert f"Fitness (last {days} days)" in page  # the heading is the window the figures were read over


def test_the_overview_and_costs_show_runs_per_hour_budgets_kpis_and_spend_per_day(store, tokens):
    from roster.specfile import parse_spec

    store.apply(parse_spec(FIX_LINT + """budgets:
  - {scope: company, usd: 1, period: month, warn_at: 0.5}
kpis:
  lint_findings: {direction: down}
"""), applied_by="alice")
    company = store.company("acme")
    for cost in (0.25, 0.5):
        run = company.start_run("planner", trigger="manual", task_id=None, fencing_token=None)
        company.finish_run(run, outcome="succeeded", cost_usd=cost, input_tokens=100, output_tokens=10)
    for value in (30, 25, 21):
        company.record_kpi("lint_findings", value, actor="alice")
    with TestClient(create_app(store)) as web:
        sign_in(web, tokens["alice"])
        overview = web.get("/").text
        assert "Runs in the last 24 hours: 2" in overview and "<svg" in overview  # the runs-per-hour chart
        assert re.search(r"<td>company</td><td>month</td><td>[^<]*0\.75[^<]*</td><td class=\"level-warn\">", overview)
        assert "<strong>lint_findings</strong>: 21" in overview and "3 reading(s) shown" in overview
        costs = web.get("/costs").text
        day = company.store.now()[:10]
        assert re.search(rf"<td>{day}</td><td>2</td><td>2</td><td>0\.7500</td><td>0\.3750</td>", costs)
        assert "Spend per day (USD, priced runs)" in costs and "<td>planner</td><td>2</td>" in costs
