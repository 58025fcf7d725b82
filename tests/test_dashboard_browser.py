"""The dashboard in a real browser: Debian's ``chromium`` driven by Playwright (``executable_path``,
headless, kept off the network: every request that is not to the test's own server is aborted and fails
the test), against a real uvicorn server over a real database (SQLite and PostgreSQL), and one test
against a real ``roster up`` process that serves the dashboard while its agent moves a task.

Each page is saved as a screenshot under ``test-artifacts/dashboard/`` (``ROSTER_TEST_ARTIFACTS`` moves
it) and scanned with axe-core (from the ``axe-playwright-python`` package): no serious or critical
violation. Without a chromium the tests skip and say how to get one; under CI (``CI=1``, set by
``.ci/run``, which installs chromium) they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIX_LINT
from dashboard_support import TWO_PORTFOLIOS, form_token
from test_api import to_verified
from test_fleet_processes import fleet  # noqa: F401 - the fixture: roster up processes on a workspace

from roster.api.server import ApiServer
from roster.errors import ApprovalPending
from roster.specfile import parse_spec

CHROMIUM = os.environ.get("ROSTER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("ROSTER_TEST_ARTIFACTS") or Path(__file__).resolve().parent.parent / "test-artifacts")
SHOTS = ARTIFACTS / "dashboard"
OFFLINE = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-default-apps", "--disable-domain-reliability", "--no-first-run", "--no-pings",
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
"""Chromium's flags that keep it off the network: no background fetches, and no name but 127.0.0.1 resolves."""
PAGES = ("/", "/inbox", "/org", "/boards", "/boards/fix-lint", "/boards/fix-lint/found", "/tasks/1",
         "/tasks/1/brief/planner", "/agents", "/agents/planner", "/audit", "/costs", "/webhooks", "/api/v1/docs")
SERIOUS = ("serious", "critical")


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM:
        why = ("no chromium on this machine: install Debian's chromium (apt-get install chromium) or point "
               "ROSTER_CHROMIUM at a Chromium binary to run the dashboard's browser tests")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=OFFLINE)
        yield browser
        browser.close()


class Browser:
    """One browser context on one server: its page, and every request it tried to send elsewhere."""

    def __init__(self, chromium, base: str) -> None:
        self.base = base
        self.outside: list[str] = []
        self.context = chromium.new_context(base_url=base, viewport={"width": 1280, "height": 900})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith((self.base, "data:")):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def sign_in(self, token: str) -> None:
        page = self.page
        page.goto("/")
        assert "/sign-in" in page.url
        page.get_by_label("API token of a human").fill(token)
        page.keyboard.press("Enter")
        page.wait_for_url(f"{self.base}/")

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert self.outside == [], f"the browser tried to leave 127.0.0.1: {self.outside}"


@pytest.fixture
def browse(chromium):
    """``browse(base_url)``: a new browser context on a server (closed, and checked offline, afterwards)."""
    opened: list[Browser] = []

    def make(base: str) -> Browser:
        opened.append(Browser(chromium, base))
        return opened[-1]

    yield make
    for b in opened:
        b.close()


@pytest.fixture
def served(store):
    """``served(spec_text)``: apply the spec, serve the store over real HTTP; returns (base URL, company)."""
    servers: list[ApiServer] = []

    def serve(text: str = FIX_LINT):
        store.apply(parse_spec(text), applied_by="alice")
        server = ApiServer(store, host="127.0.0.1", port=0)
        servers.append(server)
        return server.start(), store.company("acme")

    yield serve
    for server in servers:
        server.stop(timeout=2)


def token(company, handle: str) -> str:
    return company.issue_token(handle, actor="alice", name=f"{handle} browser").token


def axe_violations(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in found if v.get("impact") in SERIOUS]


# -- every page ---------------------------------------------------------------------------------------------


def test_sign_in_then_every_page_renders_offline_keyboard_first_and_passes_axe(served, browse, store):
    base, company = served()
    task = company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"})[0].id
    assert task == 1
    b = browse(base)
    b.sign_in(token(company, "alice"))
    problems = {}
    for path in PAGES:
        response = b.page.goto(path)
        assert response.status == 200, path
        if path == "/api/v1/docs":  # Swagger UI renders itself from the package's script
            b.page.wait_for_selector(".swagger-ui .info", timeout=15_000)
        b.shot(path.strip("/").replace("/", "_") or "overview")
        if path != "/api/v1/docs":  # Swagger UI's own markup is not ours to fix
            found = axe_violations(b.page)
            if found:
                problems[path] = found
    assert problems == {}
    # the keyboard: the first Tab lands on "Skip to content", Enter moves focus to the main content
    b.page.goto("/inbox")
    b.page.keyboard.press("Tab")
    assert b.page.evaluate("document.activeElement.textContent") == "Skip to content"
    b.page.keyboard.press("Enter")
    assert b.page.evaluate("document.activeElement.id") == "main"


def test_approve_from_the_inbox_names_the_human_and_makes_the_transition(served, browse):
    base, company = served()
    task = company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"})[0].id
    version = to_verified(company, task)
    with pytest.raises(ApprovalPending):
        company.transition(task, "merge", actor="merger", expected_version=version, rationale="lint is clean")
    [request] = company.inbox(actor="alice")
    b = browse(base)
    b.sign_in(token(company, "bob"))
    assert re.search(r"\b1\s+approval request", b.page.inner_text("main"))
    b.page.get_by_role("link", name="Inbox").click()
    b.page.get_by_label("Note", exact=True).nth(1).fill("ship it")  # [0] is the bulk form's note
    b.shot("inbox-before-approve")
    b.page.get_by_role("button", name="Approve", exact=True).click()
    b.page.wait_for_url(f"{base}/inbox")
    assert "Nothing waits for your approval." in b.page.inner_text("main")
    assert company.get_task(task).state == "merged"
    [decision] = company.audit_log(action="approval.approve")
    assert (decision.principal, decision.data["via"], decision.data.get("note")) == ("bob", "dashboard", "ship it")
    [move] = company.audit_log(task_id=task, action="task.transition")[-1:]
    assert (move.principal, move.data["approved_by"], move.data["approval_request"]) == ("merger", "bob", request.id)


def test_hold_edit_and_release_in_the_browser_reach_the_agents_next_brief(served, browse, store):
    from test_dashboard import record_view

    from roster.runtime.context import ContextAssembler, Wakeup

    base, company = served()
    task = company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"})[0].id
    record_view(store, company, task, "planner")
    b = browse(base)
    b.sign_in(token(company, "alice"))
    b.page.goto(f"/tasks/{task}")
    b.page.get_by_label("Why you hold it").fill("checking the rule")
    b.page.get_by_role("button", name="Hold this task").click()
    b.page.get_by_label("Fields (JSON object)").fill(json.dumps({"rule": "E401"}))
    b.page.get_by_label("Note", exact=True).fill("wrong rule")
    b.shot("task-held")
    b.page.get_by_role("button", name="Save fields").click()
    b.page.get_by_label("Note for whoever works on it next").fill("it was E401, not E501")
    b.page.get_by_role("button", name="Release").click()
    b.page.wait_for_selector("text=Hold this task")
    moved = company.get_task(task)
    assert (moved.fields, moved.lease_holder) == ({"rule": "E401"}, None)
    handoff = ContextAssembler(company).brief("planner", moved, Wakeup("preview", None)).data["handoff"]
    assert handoff["fields"] == {"rule": {"before": "E501", "after": "E401"}}
    assert any(n["note"] == "it was E401, not E501" for n in handoff["notes"])


def test_pausing_an_agent_from_the_org_chart_releases_its_leases(served, browse):
    base, company = served()
    task = company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"})[0].id
    company.claim(task, actor="planner", run_id="run-1")
    b = browse(base)
    b.sign_in(token(company, "alice"))
    b.page.get_by_role("link", name="Org chart").click()
    b.shot("org")
    b.page.get_by_role("button", name="Pause planner").click()
    b.page.wait_for_selector("button:has-text('Resume planner')")
    assert company.get_principal("planner").status == "paused"
    assert company.get_task(task).lease_holder is None
    [event] = company.audit_log(action="principal.pause")
    assert (event.principal, event.data["via"]) == ("alice", "dashboard")


def test_a_form_without_its_token_is_refused_in_the_browser(served, browse):
    base, company = served()
    task = company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"})[0].id
    b = browse(base)
    b.sign_in(token(company, "alice"))
    b.page.goto(f"/tasks/{task}")
    b.page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    b.page.get_by_role("button", name="Hold this task").click()
    assert "Form refused" in b.page.inner_text("h1")
    assert company.get_task(task).lease_holder is None


def test_a_human_of_one_portfolio_cannot_see_or_act_on_another_through_pages_or_forged_posts(served, browse):
    base, company = served(TWO_PORTFOLIOS)
    core = company.create_task(workflow="fix-lint", title="core secret", actor="alice", fields={"rule": "E501"})[0].id
    web = company.create_task(workflow="site", title="web page", actor="alice")[0].id
    version = to_verified(company, core)
    with pytest.raises(ApprovalPending):
        company.transition(core, "merge", actor="merger", expected_version=version)
    [request] = company.inbox(actor="alice")
    b = browse(base)
    b.sign_in(token(company, "carol"))
    b.page.goto("/boards")
    listed = b.page.inner_text("main")
    assert "site" in listed and "fix-lint" not in listed
    b.page.goto("/boards/site")
    assert "web page" in b.page.inner_text("main")
    assert b.page.goto("/boards/fix-lint").status == 403
    assert "core secret" not in b.page.content()
    assert b.page.goto(f"/tasks/{core}").status in (403, 404)
    assert "core secret" not in b.page.content()
    b.page.goto("/inbox")
    assert "Nothing waits for your approval." in b.page.inner_text("main")
    b.page.goto("/audit")
    assert "core secret" not in b.page.content()
    # forged posts with carol's own, valid form token
    csrf = form_token(b.page.goto(f"/tasks/{web}").text())
    for path, data in ((f"/tasks/{core}/hold", {}), (f"/approvals/{request.id}/approve", {}),
                       ("/scopes/pause", {"scope": "eng/core"}), ("/principals/planner/pause", {})):
        forged = b.page.request.post(f"{base}{path}", form={"csrf": csrf, **data}, max_redirects=0)
        assert forged.status in (403, 404), (path, forged.status)
    assert company.get_task(core).lease_holder is None
    assert company.get_request(request.id, actor="alice").status == "pending"
    assert company.paused() == [] and company.get_principal("planner").status == "active"
    # and in her own portfolio she acts
    held = b.page.request.post(f"{base}/tasks/{web}/hold", form={"csrf": csrf}, max_redirects=0)
    assert held.status == 303 and company.get_task(web).lease_holder == "carol"


# -- live: a board follows roster up's moves --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_board_updates_live_while_roster_up_moves_a_task(fleet, backend, browse):  # noqa: F811 - the fixture
    f = fleet(backend)
    f.write_spec({"fix-lint": "planner"}, {"p1": (["planner"], f.command(2.0))})
    port = _free_port()
    out, err = f.root / "up.out", f.root / "up.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "roster", "up", "--port", str(port)], cwd=f.root,
                                env=f.env("roster-up"), stdout=stdout, stderr=stderr, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while "dashboard at" not in out.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, err.read_text()
            time.sleep(0.1)
        link = f.js("dashboard", "--url", base, "--json")["url"]
        b = browse(base)
        b.page.goto(link)
        b.page.get_by_role("button", name="Sign in with this link").click()
        b.page.wait_for_url(f"{base}/")
        b.page.goto("/boards/fix-lint")
        b.page.evaluate("window.notReloaded = true")
        [task] = f.create(1)
        planned = f"section[data-state='planned'] li[data-task='{task}']"
        b.page.wait_for_selector(planned, timeout=40_000)  # the runner sleeps 2 s, then plans it
        assert b.page.evaluate("window.notReloaded === true")  # swapped in over SSE, not a reload
        assert re.search(r"planned\s*1", b.page.inner_text("section[data-state='planned'] h2"))
        b.shot(f"board-live-{backend}")
        assert f.company.get_task(task).state == "planned"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert "Traceback" not in err.read_text(), err.read_text()


def test_an_approval_request_arrives_in_an_open_inbox_without_a_reload(served, browse):
    base, company = served()
    task = company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"})[0].id
    version = to_verified(company, task)
    b = browse(base)
    b.sign_in(token(company, "alice"))
    b.page.goto("/inbox")
    assert "Nothing waits for your approval." in b.page.inner_text("main")
    b.page.evaluate("window.notReloaded = true")
    b.page.wait_for_function("document.body.getAttribute('sse-connect') === '/events'")
    time.sleep(0.5)  # the stream is open before the request arrives
    with pytest.raises(ApprovalPending):
        company.transition(task, "merge", actor="merger", expected_version=version, rationale="lint is clean")
    [request] = company.inbox(actor="alice")
    # within 3 s: pushed by the commit's hook, not found by the 5 s check for other processes' commits
    b.page.wait_for_selector(f"#approval-{request.id}", timeout=3_000)
    assert b.page.evaluate("window.notReloaded === true")
    assert "lint is clean" in b.page.inner_text(f"#approval-{request.id}")
