"""Issue 18, part 6: webhooks. The events humans should hear about are followed from the audit chain,
enqueued once per hook, signed (Standard Webhooks), posted to a real HTTP server on 127.0.0.1 with
retries and backoff, kept in a delivery log, and replayed after a restart; on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path

import pytest
from conftest import FIX_LINT, GOOD_SPEC, js, ok, wait_for

from roster.errors import ApprovalPending, Denied, NotFound, UsageError
from roster.kernel.goals import GoalBudget, GoalCheck
from roster.kernel.webhooks import EVENT_OF_ACTION, EVENTS, MAX_ATTEMPTS, new_secret, retry_delay
from roster.runtime.dispatcher import Dispatcher
from roster.runtime.webhooks import WebhookWorker
from roster.store import faults
from roster.store.faults import InjectedFault
from roster.store import Store

SECRET = new_secret()
ENV = {"OPS_SECRET": SECRET, "CHAT_SECRET": SECRET}


class Receiver:
    """A real HTTP server on 127.0.0.1 (an ephemeral port) that records every POST (path, headers, body)
    and answers with the next of ``statuses`` (200 once they run out)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                          "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args) -> None:  # noqa: ANN002 - quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path: str | None = None) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests if path is None or r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()


def spec_with_hooks(url: str, *, ops_events: str = "[approval.requested, task.held, task.released]",
                    chat_events: str = "[approval.requested]") -> str:
    return FIX_LINT + textwrap.dedent(f"""\
        webhooks:
          ops:
            url: {url}/ops
            events: {ops_events}
            secret_env: OPS_SECRET
          chat:
            url: {url}/chat
            events: {chat_events}
            secret_env: CHAT_SECRET
            format: slack
        """)


def signature_of(secret: str, headers: dict, body: bytes) -> str:
    """The Standard Webhooks signature, recomputed here with the stdlib: base64 HMAC-SHA256 of
    ``id.timestamp.body`` under the base64-decoded secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def worker(company, *, environ=ENV, **kwargs) -> WebhookWorker:  # noqa: ANN001
    return WebhookWorker(company, environ=environ, rng=random.Random(7), **kwargs)


def request_approval(company) -> int:  # noqa: ANN001
    """A task moved up to the merge edge: merger's move opens an approval request. Returns its id."""
    task = company.create_task(workflow="fix-lint", title="E501", actor="alice", fields={"rule": "E501"})[0]
    def version() -> int:
        return company.get_task(task.id).version

    company.transition(task.id, "plan", actor="planner", expected_version=version(), writes={"spec": GOOD_SPEC})
    company.record_artifact(task.id, "patch", b"diff\n", actor="builder")
    company.transition(task.id, "build", actor="builder", expected_version=version(), writes={"branch": "b"})
    company.record_check(task.id, "lint_clean", passed=True, actor="qa")
    company.transition(task.id, "verify", actor="qa", expected_version=version())
    with pytest.raises(ApprovalPending) as pending:
        company.transition(task.id, "merge", actor="merger", expected_version=version())
    return pending.value.request_id


# -- what reaches the receiver -----------------------------------------------------------------------


def test_an_approval_request_reaches_each_hook_signed_and_is_logged_delivered(opened, receiver):
    company = opened(spec_with_hooks(receiver.url))
    request_id = request_approval(company)
    done = worker(company).run_once()
    assert sorted(d.status for d in done) == ["delivered", "delivered"]
    ops = [r for r in receiver.requests if r["path"] == "/ops"]
    assert len(ops) == 1
    body, headers = ops[0]["body"], ops[0]["headers"]
    sent = json.loads(body)
    assert sent["type"] == "approval.requested"
    assert sent["data"]["company"] == "acme" and sent["data"]["action"] == "approval.request"
    assert sent["data"]["principal"] == "merger" and sent["data"]["subject"] == "task:1"
    assert sent["data"]["details"]["request_id"] == request_id
    assert "evidence" not in sent["data"]["details"]
    assert sent["data"]["command"] == f"roster approvals show {request_id}"
    assert "merger asks for approval" in sent["data"]["text"]
    seq = sent["data"]["seq"]
    assert any(e.seq == seq for e in company.audit_log(action="approval.request"))
    # signed over the exact body, as the receiver recomputes it with the secret
    assert headers["webhook-signature"] == signature_of(SECRET, headers, body)
    assert headers["webhook-signature"] != signature_of(new_secret(), headers, body)
    assert headers["content-type"] == "application/json"
    assert int(headers["webhook-timestamp"]) == int(company.store.clock().timestamp())
    log = company.webhook_deliveries(hook="ops", actor="alice")
    assert [(d.event, d.status, d.attempts, d.last_status, d.seq) for d in log] == [
        ("approval.requested", "delivered", 1, 200, seq)]
    assert headers["webhook-id"] == f"msg_acme_{log[0].id}"
    assert json.loads(log[0].payload) == sent


def test_the_standard_webhooks_library_verifies_what_was_sent(opened, receiver, clock):
    """A receiver using the reference library (with its clock tolerance) accepts the delivery."""
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    clock.now = datetime.now(UTC)
    company = opened(spec_with_hooks(receiver.url))
    request_approval(company)
    worker(company).run_once()
    for request in receiver.requests:
        assert Webhook(SECRET).verify(request["body"], request["headers"])


def test_an_event_a_hook_did_not_subscribe_to_is_not_sent_to_it(opened, receiver):
    company = opened(spec_with_hooks(receiver.url))
    task = company.create_task(workflow="fix-lint", title="E501", actor="alice", fields={"rule": "E501"})[0]
    company.hold(task.id, actor="alice", note="looking at it myself")
    company.release_hold(task.id, actor="alice", note="over to you")
    worker(company).run_once()
    assert [r["path"] for r in receiver.requests] == ["/ops", "/ops"]  # chat takes approvals only
    held, released = receiver.bodies("/ops")
    assert (held["type"], released["type"]) == ("task.held", "task.released")
    assert held["data"]["text"] == "alice holds task 1: looking at it myself"
    assert released["data"]["command"] == "roster task show 1"
    assert company.webhook_deliveries(hook="chat", actor="alice") == []


def test_slack_format_posts_one_line_of_text_still_signed(opened, receiver):
    company = opened(spec_with_hooks(receiver.url))
    request_id = request_approval(company)
    worker(company).run_once()
    (chat,) = [r for r in receiver.requests if r["path"] == "/chat"]
    body = json.loads(chat["body"])
    assert list(body) == ["text"]
    assert body["text"] == (f"[acme] merger asks for approval of fix-lint.merge on task 1 (request {request_id}). "
                            f"See `roster approvals show {request_id}`")
    assert "\n" not in body["text"]
    assert chat["headers"]["webhook-signature"] == signature_of(SECRET, chat["headers"], chat["body"])


# -- retries, giving up, secrets ---------------------------------------------------------------------


def test_a_receiver_that_fails_twice_gets_three_attempts_with_growing_delays(opened, receiver, clock):
    company = opened(spec_with_hooks(receiver.url, chat_events="[goal.met]"))
    receiver.statuses = [500, 500, 200]
    request_approval(company)
    work = worker(company)
    delays = []
    for _ in range(2):
        (attempt,) = work.run_once()
        assert (attempt.status, attempt.last_status) == ("pending", 500)
        assert attempt.last_error.startswith("HTTP 500")
        due = (attempt.next_attempt_at, company.store.now())
        from datetime import datetime

        wait = (datetime.fromisoformat(due[0]) - datetime.fromisoformat(due[1])).total_seconds()
        delays.append(wait)
        assert work.run_once() == []  # not due yet: nothing is sent before its time
        clock.advance(wait)
    (attempt,) = work.run_once()
    assert (attempt.status, attempt.attempts, attempt.last_status, attempt.last_error) == ("delivered", 3, 200, "")
    assert 8 <= delays[0] <= 12 and 24 <= delays[1] <= 36 and delays[1] > delays[0]
    assert len(receiver.requests) == 3
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1  # one message, three attempts
    assert len({r["body"] for r in receiver.requests}) == 1


def test_410_gives_up_at_once_and_other_failures_after_the_last_attempt(opened, receiver, clock):
    company = opened(spec_with_hooks(receiver.url, chat_events="[approval.requested]"))
    receiver.statuses = [410] + [503] * 10  # ops: 410; chat: 503 every time
    request_approval(company)
    work = worker(company, max_attempts=3)
    for _ in range(5):
        work.run_once()
        clock.advance(3600)
    ops, chat = (company.webhook_deliveries(hook=h, actor="alice")[0] for h in ("ops", "chat"))
    first = receiver.requests[0]["path"]
    gone, busy = (ops, chat) if first == "/ops" else (chat, ops)
    assert (gone.status, gone.attempts, gone.last_status) == ("failed", 1, 410)
    assert "not retried" in gone.last_error
    assert (busy.status, busy.attempts, busy.last_status) == ("failed", 3, 503)
    assert "gave up after 3 attempts" in busy.last_error
    assert len(receiver.requests) == 4


def test_a_refused_connection_is_retried(opened, clock):
    company = opened(spec_with_hooks("http://127.0.0.1:9", chat_events="[goal.met]"))  # discard: nothing listens
    request_approval(company)
    (attempt,) = worker(company).run_once()
    assert (attempt.status, attempt.attempts, attempt.last_status) == ("pending", 1, None)
    assert "ConnectError" in attempt.last_error


def test_a_missing_secret_fails_the_delivery_and_sends_nothing_unsigned(opened, receiver):
    company = opened(spec_with_hooks(receiver.url))
    request_approval(company)
    logged = []
    done = worker(company, environ={"CHAT_SECRET": SECRET}, log=logged.append).run_once()
    assert {d.hook: d.status for d in done} == {"ops": "failed", "chat": "delivered"}
    assert [r["path"] for r in receiver.requests] == ["/chat"]
    (failed,) = company.webhook_deliveries(status="failed", actor="alice")
    assert "OPS_SECRET" in failed.last_error and "not set" in failed.last_error
    assert failed.last_status is None
    assert any("OPS_SECRET" in line for line in logged)
    # set it, replay the failed one: it goes out signed
    assert company.replay_webhooks(failed=True, actor="alice") == [failed.id]
    (again,) = worker(company).run_once()
    assert (again.id, again.status) == (failed.id, "delivered")
    assert [r["path"] for r in receiver.requests] == ["/chat", "/ops"]
    ops = receiver.requests[1]
    assert ops["headers"]["webhook-signature"] == signature_of(SECRET, ops["headers"], ops["body"])
    (replayed,) = company.audit_log(action="webhook.replay")
    assert (replayed.principal, replayed.data["deliveries"]) == ("alice", [failed.id])


def test_a_secret_in_the_spec_is_refused_by_validate_with_file_and_line(cli):
    (cli.workspace / "roster.yaml").write_text(textwrap.dedent("""\
        company: acme
        humans:
          alice: {}
        webhooks:
          ops:
            url: https://hooks.example.com/roster
            events: [approval.requested, goal.mett]
            secret_env: OPS_SECRET
            secret: whsec_c2VjcmV0
        """), encoding="utf-8")
    result = cli("validate")
    assert result.exit_code == 3
    assert "roster.yaml:9: webhooks.ops.secret: a webhook's secret never goes in the spec file" in result.stderr
    assert "secret_env" in result.stderr.split("roster.yaml:9:")[1]
    assert "roster.yaml:7: webhooks.ops.events[1]: unknown webhook event 'goal.mett' (did you mean 'goal.met'?)" \
        in result.stderr


def test_every_event_has_its_audit_action_and_the_spec_refuses_unknown_keys(cli):
    assert len(set(EVENTS)) == len(EVENT_OF_ACTION) == 8
    (cli.workspace / "roster.yaml").write_text(textwrap.dedent("""\
        company: acme
        humans:
          alice: {}
        webhooks:
          ops:
            url: ftp://hooks.example.com
            events: [escalation.raised]
            secret_env: OPS_SECRET
            retries: 3
        """), encoding="utf-8")
    result = cli("validate")
    assert result.exit_code == 3
    assert "roster.yaml:9: webhooks.ops.retries: unknown key 'retries'" in result.stderr


def test_every_event_comes_from_its_audit_action_with_a_sentence_and_a_command(opened, receiver):
    """One hook on every event: an approval requested, an escalation to a human, a budget warning and
    hard stop, a task held and released, a goal met and one exhausted (which escalates too)."""
    company = opened(spec_with_hooks(receiver.url, ops_events="[" + ", ".join(EVENTS) + "]",
                                     chat_events="[budget.exhausted]"))
    request_approval(company)
    task = company.create_task(workflow="fix-lint", title="x", actor="alice", fields={"rule": "E1"})[0]
    company.escalate(task.id, from_agent="builder", category="governance", reason="the linter crashes")
    company.note_budget_warning("company", "month", "budget company per month: 85% spent")
    company.note_budget_exhausted("company", "hard stop, budget company per month: 100% spent")
    company.hold(task.id, actor="alice")
    company.release_hold(task.id, actor="alice", note="fixed the linter")
    met = company.set_goal("builder", "no E501 left", actor="alice", check=GoalCheck(command="true"),
                           budget=GoalBudget(runs=5))
    company.record_goal_check(met.id, passed=True, evidence={"exit": 0})
    spent = company.set_goal("planner", "plan the backlog", actor="alice", check=GoalCheck(command="false"),
                             budget=GoalBudget(runs=1))
    company.record_goal_spend(spent.id, usd=0.0, tokens=10, seconds=1.0, changed=True)
    company.enqueue_webhooks()
    sent = {d.event: json.loads(d.payload)["data"] for d in company.webhook_deliveries(hook="ops", actor="alice")}
    assert set(sent) == set(EVENTS)
    assert {sent[e]["action"] for e in EVENTS} == set(EVENT_OF_ACTION)
    assert all(EVENT_OF_ACTION[sent[e]["action"]] == e for e in EVENTS)
    assert sent["escalation.raised"]["command"] == "roster escalations list"
    assert "the linter crashes" in sent["escalation.raised"]["text"]
    assert sent["budget.warned"]["text"] == "budget warning for company: budget company per month: 85% spent"
    assert sent["budget.exhausted"]["command"] == "roster costs"
    assert sent["goal.met"]["command"] == f"roster goal show {met.id}"
    assert sent["goal.exhausted"]["text"].startswith(f"goal {spent.id} exhausted")
    assert sent["task.released"]["text"] == "alice released task 2: fixed the linter"
    (chat,) = company.webhook_deliveries(hook="chat", actor="alice")
    assert json.loads(chat.payload)["text"].startswith("[acme] budget of company exhausted, hard stop")


# -- exactly once, and after a restart ---------------------------------------------------------------


def test_each_event_is_enqueued_once_however_often_the_record_is_followed(opened, receiver):
    company = opened(spec_with_hooks(receiver.url))
    request_approval(company)
    assert company.enqueue_webhooks() == 2
    assert company.enqueue_webhooks() == 0
    other = opened()  # a second store on the database: another process
    assert other.enqueue_webhooks() == 0
    request_approval(other)
    assert other.enqueue_webhooks() == 2
    assert company.enqueue_webhooks() == 0
    assert len(company.webhook_deliveries(actor="alice")) == 4


@pytest.mark.parametrize("point", ["store.before_commit", "store.after_commit"])
def test_a_crash_while_enqueueing_neither_loses_nor_repeats_an_event(opened, receiver, point):
    """Killed before the commit: nothing was enqueued and the cursor did not move, so the next round
    enqueues the event; killed after it: the next round finds nothing new. One delivery either way."""
    company = opened(spec_with_hooks(receiver.url))
    request_approval(company)
    with faults.armed(point), pytest.raises(InjectedFault):
        company.enqueue_webhooks()
    again = opened()  # the next process
    worker(again).run_once()
    assert sorted(d.hook for d in again.webhook_deliveries(actor="alice")) == ["chat", "ops"]
    assert sorted(r["path"] for r in receiver.requests) == ["/chat", "/ops"]


def test_a_hook_added_later_sends_only_what_happened_after_it_was_added(opened, receiver):
    company = opened(FIX_LINT)
    request_approval(company)  # before any hook
    company = opened(spec_with_hooks(receiver.url))
    assert company.enqueue_webhooks() == 0
    task = company.create_task(workflow="fix-lint", title="x", actor="alice", fields={"rule": "E1"})[0]
    company.hold(task.id, actor="alice")
    worker(company).run_once()
    assert [b["type"] for b in receiver.bodies()] == ["task.held"]


def test_a_hook_removed_and_added_again_is_not_sent_what_happened_meanwhile(opened, receiver):
    company = opened(spec_with_hooks(receiver.url))
    first = company.create_task(workflow="fix-lint", title="x", actor="alice", fields={"rule": "E1"})[0]
    company.hold(first.id, actor="alice", note="with the hook")
    worker(company).run_once()
    company = opened(FIX_LINT)  # the hooks removed
    second = company.create_task(workflow="fix-lint", title="y", actor="alice", fields={"rule": "E2"})[0]
    company.hold(second.id, actor="alice", note="without it")
    company = opened(spec_with_hooks(receiver.url))  # and back
    third = company.create_task(workflow="fix-lint", title="z", actor="alice", fields={"rule": "E3"})[0]
    company.hold(third.id, actor="alice", note="with it again")
    worker(company).run_once()
    assert [b["data"]["subject"] for b in receiver.bodies()] == [f"task:{first.id}", f"task:{third.id}"]


def test_a_delivery_pending_when_the_worker_stops_is_delivered_after_a_restart(opened, receiver, clock):
    company = opened(spec_with_hooks(receiver.url, chat_events="[goal.met]"))
    receiver.statuses = [503]
    request_approval(company)
    first = worker(company)
    (attempt,) = first.run_once()
    assert attempt.status == "pending"
    first.stop()
    company.store.close()
    clock.advance(60)
    restarted = opened()  # a new store on the same database: a new roster up
    (delivered,) = worker(restarted).run_once()
    assert (delivered.id, delivered.status, delivered.attempts) == (attempt.id, "delivered", 2)
    assert len(receiver.requests) == 2


def test_the_leaders_dispatcher_delivers_from_its_own_thread(opened, receiver, tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_SECRET", SECRET)
    monkeypatch.setenv("CHAT_SECRET", SECRET)
    company = opened(spec_with_hooks(receiver.url))
    task = company.create_task(workflow="fix-lint", title="x", actor="alice", fields={"rule": "E1"})[0]
    company.hold(task.id, actor="alice", note="mine for now")
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={})
    try:
        dispatcher.step()
        assert dispatcher.webhooks._thread is not None  # the leader started it
        wait_for(lambda: len(receiver.requests) == 1, 10, "the held task's webhook")
    finally:
        dispatcher.close()
    assert receiver.bodies()[0]["type"] == "task.held"
    assert company.webhook_deliveries(actor="alice")[0].status == "delivered"


def test_a_company_without_hooks_starts_no_thread(opened, tmp_path):
    company = opened(FIX_LINT)
    dispatcher = Dispatcher(company, workdir=tmp_path, runners={})
    try:
        dispatcher.step()
        assert dispatcher.webhooks._thread is None
    finally:
        dispatcher.close()


# -- who may read and replay -------------------------------------------------------------------------


def test_the_log_needs_read_on_the_company_and_replay_needs_admin(opened, receiver):
    company = opened(spec_with_hooks(receiver.url))
    request_approval(company)
    company.enqueue_webhooks()
    with pytest.raises(Denied):
        company.webhook_deliveries(actor="planner")
    ids = [d.id for d in company.webhook_deliveries(actor="alice")]
    with pytest.raises(Denied):
        company.replay_webhooks(ids, actor="merger")
    assert [e.principal for e in company.audit_log(action="webhook.replay.rejected")] == ["merger"]
    with pytest.raises(NotFound):
        company.replay_webhooks([9999], actor="alice")
    with pytest.raises(UsageError):
        company.replay_webhooks(ids, failed=True, actor="alice")
    with pytest.raises(UsageError):
        company.webhook_deliveries(status="lost", actor="alice")


def test_retry_delays_grow_to_a_cap_with_jitter():
    rng = random.Random(1)
    steps = [retry_delay(n, rng) for n in range(1, MAX_ATTEMPTS)]
    assert all(later > earlier for earlier, later in pairwise(steps))
    assert 8 <= steps[0] <= 12 and steps[-1] <= 7200 * 1.2
    assert retry_delay(30, rng) <= 7200 * 1.2


# -- the CLI -----------------------------------------------------------------------------------------


def test_cli_log_and_replay(cli, receiver):
    ok(cli("init"))
    spec_path = cli.workspace / "roster.yaml"
    spec_path.write_text(spec_path.read_text(encoding="utf-8") + textwrap.dedent(f"""\
        webhooks:
          ops:
            url: {receiver.url}/ops
            events: [task.held]
            secret_env: OPS_SECRET
        """), encoding="utf-8")
    ok(cli("apply"))
    js(cli("task", "create", "fix-lint", "--title", "E501", "--set", "rule=E501", "--json"))
    ok(cli("task", "hold", "1"))
    store = Store.open(f"sqlite:///{Path(cli.workspace) / '.roster' / 'roster.db'}")
    try:
        company = store.company("example")
        worker(company, environ={}).run_once()  # no secret: failed, nothing sent
        logged = js(cli("webhooks", "log", "--json"))
        assert [(d["hook"], d["event"], d["status"]) for d in logged] == [("ops", "task.held", "failed")]
        assert logged[0]["payload"]["type"] == "task.held"
        assert "OPS_SECRET" in ok(cli("webhooks", "log", "--status", "failed"))
        assert js(cli("webhooks", "log", "--hook", "other", "--json")) == []
        planner = js(cli("token", "issue", "planner", "--json"))["token"]
        refused = cli("--token", planner, "webhooks", "replay", "--failed")
        assert refused.exit_code != 0 and "admin" in refused.stderr
        assert js(cli("webhooks", "replay", str(logged[0]["id"]), "--json")) == {"replayed": [logged[0]["id"]]}
        assert js(cli("webhooks", "log", "--status", "pending", "--json"))[0]["attempts"] == 0
        worker(company, environ={"OPS_SECRET": SECRET}).run_once()
        assert [b["type"] for b in receiver.bodies()] == ["task.held"]
        assert js(cli("webhooks", "log", "--json"))[0]["status"] == "delivered"
        assert cli("webhooks", "replay").exit_code == 2
        assert ok(cli("webhooks", "secret")).startswith("whsec_")
    finally:
        store.close()
