"""Issue 15, deliverable 4: hostile input refused at the door.

Each test reproduces a finding of the probe and asserts what reached the outside: the HTTP status and
problem type, the rows in the tables, the audit chain, the server process's memory, the files' modes.
Store tests run on SQLite and PostgreSQL (``db_url``).
"""

from __future__ import annotations

import json
import os
import select as select_
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIX_LINT, ManualClock, ok
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from roster.api import create_app
from roster.api.auth import AuthLimits
from roster.errors import InvalidValue, Unauthenticated
from roster.specfile import parse_spec
from roster.store import Store
from roster.store import principals as principals_module
from roster.store.company import authenticate
from roster.store.schema import audit_events, memory_entries, messages, tasks

API = "/api/v1"
MIB = 1_048_576


def nested(levels: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.fixture
def acme(db_url, tmp_path):
    store = Store.open(db_url, clock=ManualClock(), artifact_root=tmp_path / "art")
    store.apply(parse_spec(FIX_LINT), applied_by="alice")
    yield store, store.company("acme")
    store.close()


def make_client(store, **kwargs) -> TestClient:
    return TestClient(create_app(store, **kwargs))


@pytest.fixture
def rest(acme):
    store, company = acme
    tokens = {h: company.issue_token(h, actor="alice").token for h in ("alice", "planner", "builder")}
    with make_client(store) as client:
        yield client, (lambda handle: {"Authorization": f"Bearer {tokens[handle]}"})


def count(store: Store, table, *where) -> int:  # noqa: ANN001
    with store.read() as conn:
        return conn.scalar(select(func.count()).select_from(table).where(*where))


# -- nothing unserializable is committed ------------------------------------------------------------


@pytest.mark.parametrize("levels", [300, 900])
def test_deeply_nested_task_fields_are_refused_by_the_store_and_reads_keep_working(acme, levels):
    store, company = acme
    with pytest.raises(InvalidValue, match="nested more than 64 levels") as refused:
        company.create_task(workflow="fix-lint", title="deep", actor="alice",
                            fields={"rule": "E501", "spec": nested(levels)})
    assert refused.value.what == "task fields"
    assert count(store, tasks, tasks.c.company_id == "acme") == 0
    task = company.create_task(workflow="fix-lint", title="ok", actor="alice", fields={"rule": "E501"})[0]
    with pytest.raises(InvalidValue):
        company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": nested(levels)})
    assert [t.title for t in company.list_tasks()] == ["ok"]
    assert company.get_task(task.id).state == "found"


def test_deeply_nested_memory_provenance_is_refused_and_the_pad_still_reads(acme):
    store, company = acme
    with pytest.raises(InvalidValue, match="memory provenance"):
        company.remember("a belief", actor="planner", provenance=nested(300))
    assert count(store, memory_entries, memory_entries.c.company_id == "acme") == 0
    company.remember("a belief", actor="planner", provenance={"task": 1})
    assert [e.text for e in company.list_memory(actor="planner")] == ["a belief"]


def test_values_json_cannot_read_back_are_refused():
    from roster.kernel.values import check_json

    for bad in ({"x": float("nan")}, {"x": float("inf")}, {1: "int key"}, {"x": b"bytes"}, {"x": {1, 2}},
                {"k\x00": 1}, {"x": ["a\x00b"]}):
        with pytest.raises(InvalidValue):
            check_json("fields", bad)
    check_json("fields", {"x": [1, 2.5, None, True, "text", {"y": nested(60)}]})


def test_nul_in_text_is_refused_by_the_store_on_both_backends(acme):
    store, company = acme
    with pytest.raises(InvalidValue, match="NUL"):
        company.create_task(workflow="fix-lint", title="a\x00b", actor="alice", fields={"rule": "E501"})
    assert count(store, tasks, tasks.c.company_id == "acme") == 0
    with pytest.raises(InvalidValue, match="NUL"):
        company.remember("belief\x00", actor="planner")
    assert count(store, memory_entries, memory_entries.c.company_id == "acme") == 0
    with pytest.raises(InvalidValue, match="NUL"):
        company.send_message("alice", "hello\x00there", actor="planner")
    assert count(store, messages, messages.c.company_id == "acme") == 0
    with pytest.raises(InvalidValue, match="NUL"):  # a NUL in a JSON field is refused too
        company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E\x00501"})
    # a query with NUL is refused the same way (PostgreSQL would answer 500), not crashed on
    with pytest.raises(InvalidValue):
        company.list_tasks(owner="al\x00ice")


def test_over_rest_nul_and_depth_are_422_problems_and_nothing_is_stored(acme, rest):
    store, _company = acme
    api, auth = rest
    for body in ({"workflow": "fix-lint", "title": "a\u0000b", "fields": {"rule": "E501"}},
                 {"workflow": "fix-lint", "title": "deep", "fields": {"rule": "E501", "spec": nested(300)}}):
        response = api.post(f"{API}/tasks", json=body, headers=auth("alice"))
        assert response.status_code == 422, response.text
        assert response.json()["type"] == "/problems/invalid-value"
    memory = api.post(f"{API}/memory", json={"text": "x", "provenance": nested(300)}, headers=auth("planner"))
    assert memory.status_code == 422 and memory.json()["type"] == "/problems/invalid-value"
    assert count(store, tasks, tasks.c.company_id == "acme") == 0
    assert count(store, memory_entries, memory_entries.c.company_id == "acme") == 0
    listed = api.get(f"{API}/tasks", headers=auth("alice"))
    assert listed.status_code == 200 and listed.json()["items"] == []


def test_depth_is_checked_before_authentication_on_rest_and_mcp(acme):
    store, _company = acme
    deep = json.dumps(nested(100)).encode()
    with make_client(store) as api:
        for path in (f"{API}/tasks", "/mcp/"):
            response = api.post(path, content=deep, headers={"Content-Type": "application/json"})
            assert response.status_code == 422, (path, response.text)
            assert response.json()["type"] == "/problems/invalid-value"
        shallow = api.post(f"{API}/tasks", content=json.dumps(nested(10)).encode(),
                           headers={"Content-Type": "application/json"})
        assert shallow.status_code == 401  # within the limit: on to authentication


def test_depth_limit_is_a_setting(acme):
    from roster.api.limits import HttpLimits

    store, _company = acme
    with make_client(store, limits=HttpLimits(max_json_depth=5)) as api:
        response = api.post(f"{API}/tasks", content=json.dumps(nested(6)).encode(),
                            headers={"Content-Type": "application/json"})
        assert response.status_code == 422
    assert HttpLimits.from_env({"ROSTER_MAX_BODY_BYTES": "2048", "ROSTER_MAX_JSON_DEPTH": "8"}) == HttpLimits(
        max_body_bytes=2048, max_json_depth=8)
    with pytest.raises(Exception, match="ROSTER_MAX_BODY_BYTES"):
        HttpLimits.from_env({"ROSTER_MAX_BODY_BYTES": "-1"})


# -- body size: limits before parsing, on a real server process ------------------------------------

SERVER = """
import sys, time
from roster.api.server import ApiServer
from roster.specfile import parse_spec
from roster.store import Store
store = Store.open(sys.argv[1])
store.apply(parse_spec(open(sys.argv[2]).read()), applied_by="alice")
server = ApiServer(store, port=0)
print(server.start(), flush=True)
while True:
    time.sleep(1)
"""


@pytest.fixture
def server(tmp_path):
    spec = tmp_path / "roster.yaml"
    spec.write_text(FIX_LINT, encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-c", SERVER, f"sqlite:///{tmp_path / 'srv.db'}", str(spec)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://"), "the server did not start"
        host, port = url.removeprefix("http://").split(":")
        yield process, (host, int(port))
    finally:
        process.kill()
        process.wait(10)


def peak_kib(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def send_body(address, head: bytes, chunks, total: int) -> tuple[bytes, int]:  # noqa: ANN001
    """Send ``head`` then body chunks until the server answers (or ``total`` bytes are sent); returns the
    response bytes and how many body bytes went out."""
    sent = 0
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        response = b""
        deadline = time.monotonic() + 60
        for chunk in chunks:
            readable, writable, _ = select_.select([sock], [sock], [], 5)
            if readable:
                break
            if writable:
                try:
                    sent += sock.send(chunk)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    break
            if sent >= total or time.monotonic() > deadline:
                break
        sock.setblocking(True)
        sock.settimeout(30)
        try:
            while b"\r\n\r\n" not in response:
                data = sock.recv(65536)
                if not data:
                    break
                response += data
        except (ConnectionResetError, TimeoutError):
            pass
    return response, sent


def test_a_100_mb_unauthenticated_post_is_refused_on_content_length_without_reading_it(server):
    process, address = server
    before = peak_kib(process.pid)
    total = 100 * MIB
    head = (f"POST {API}/tasks/1/claim HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {total}\r\n\r\n").encode()
    chunk = b" " * 65536
    response, sent = send_body(address, head, (chunk for _ in range(total // len(chunk))), total)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"payload-too-large" in response or b"413" in response
    assert sent < 8 * MIB, f"{sent} bytes went out before the refusal"
    assert peak_kib(process.pid) - before < 20 * 1024, "the server's memory grew by more than 20 MiB"


def test_a_chunked_body_is_cut_at_the_limit(server):
    process, address = server
    before = peak_kib(process.pid)
    head = (f"POST {API}/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    piece = b" " * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    total = 100 * MIB
    response, sent = send_body(address, head, (chunk for _ in range(total // len(piece))), total)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert sent < 16 * MIB, f"{sent} bytes went out before the cut"
    assert peak_kib(process.pid) - before < 20 * 1024


def test_an_artifact_upload_is_streamed_under_its_own_limit(acme, rest):
    from roster.api.limits import HttpLimits

    store, company = acme
    _api, auth = rest
    task = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})[0]
    def chunks():
        for _ in range(64):
            yield b"x" * 65536

    with make_client(store, limits=HttpLimits(max_upload_bytes=256 * 1024)) as api:
        url = f"{API}/tasks/{task.id}/artifacts/patch"
        headers = {**auth("builder"), "Content-Type": "application/octet-stream"}
        declared = api.put(url, content=b"x" * (300 * 1024), headers=headers)
        assert declared.status_code == 413, declared.text
        cut = api.put(url, content=chunks(), headers=headers)
        assert cut.status_code == 413, cut.text
        fits = api.put(url, content=b"-a\n+b\n", headers=headers)
        assert fits.status_code == 200, fits.text
        # an upload is content, never scanned as JSON: brackets in a text file are just text
        text = api.put(url, content=b"[" * 200 + b" \\u0000", headers={**auth("builder"), "Content-Type": "text/plain"})
        assert text.status_code == 200, text.text
    assert [a.version for a in company.list_artifacts(task.id, all_versions=True)] == [1, 2]


# -- failed authentication -------------------------------------------------------------------------


def test_failed_authentication_is_rate_limited_per_client_with_retry_after(acme):
    store, company = acme
    good = company.issue_token("alice", actor="alice").token
    wrong = good[:-4] + ("aaaa" if not good.endswith("aaaa") else "bbbb")
    with make_client(store, auth_limits=AuthLimits(per_client=5, per_company=1000)) as api:
        statuses = [api.get(f"{API}/tasks", headers={"Authorization": f"Bearer {wrong}"}).status_code
                    for _ in range(5)]
        assert statuses == [401] * 5
        limited = api.get(f"{API}/tasks", headers={"Authorization": f"Bearer {good}"})
        assert limited.status_code == 429, limited.text
        assert limited.json()["type"] == "/problems/too-many-attempts"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        mcp = api.post("/mcp/", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                       headers={"Authorization": f"Bearer {good}"})
        assert mcp.status_code == 429
    rejected = company.audit_log(action="auth.rejected")
    assert len(rejected) == 5  # the limited requests did no authentication work at all


def test_failures_against_one_company_stop_flooding_its_chain_but_its_tokens_keep_working(acme):
    store, company = acme
    good = company.issue_token("alice", actor="alice").token
    prefix = good.rsplit(".", 1)[0]
    with make_client(store, auth_limits=AuthLimits(per_client=1000, per_company=3)) as api:
        statuses = [api.get(f"{API}/tasks", headers={"Authorization": f"Bearer {prefix}.wrong{i}"}).status_code
                    for i in range(8)]
        assert statuses == [401, 401, 401] + [429] * 5
        assert api.get(f"{API}/tasks", headers={"Authorization": f"Bearer {good}"}).status_code == 200
    assert len(company.audit_log(action="auth.rejected")) == 3


def test_a_huge_token_writes_no_long_subject_into_the_chain(acme):
    store, _company = acme
    before = count(store, audit_events, audit_events.c.company_id == "acme")
    with make_client(store) as api:
        for token in (f"rst.acme.{'a' * 60_000}.secret", f"rst.acme.abc.{'s' * 60_000}",
                      f"rst.{'a' * 60_000}.abc.secret", "rst.acme.0123456789ab.wrongsecret"):
            assert api.get(f"{API}/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    with store.read() as conn:
        longest = conn.scalar(select(func.max(func.length(audit_events.c.subject))))
    assert longest < 100
    assert count(store, audit_events, audit_events.c.company_id == "acme") == before + 1  # only the well-formed one


def test_an_unknown_company_and_a_wrong_token_do_the_same_work(acme, monkeypatch):
    """Structural, not wall time: the same hashing, comparing and statements before the refusal."""
    store, company = acme
    good = company.issue_token("alice", actor="alice").token
    _, _, token_id, secret = good.split(".")
    hashes, compares, statements = [], [], []
    real_hash, real_compare = principals_module.hash_secret, principals_module.hmac.compare_digest
    monkeypatch.setattr(principals_module, "hash_secret", lambda s: hashes.append(s) or real_hash(s))

    class CountingHmac:
        @staticmethod
        def compare_digest(a, b):  # noqa: ANN001, ANN205
            compares.append((len(a), len(b)))
            return real_compare(a, b)

    monkeypatch.setattr(principals_module, "hmac", CountingHmac)
    listener = lambda *args: statements.append(args[2].split()[0])  # noqa: E731
    event.listen(store.engine, "before_cursor_execute", listener)
    work = {}
    try:
        for case, token in (("wrong secret", f"rst.acme.{token_id}.{secret[:-1]}x"),
                            ("unknown token id", f"rst.acme.{'f' * 12}.{secret}"),
                            ("unknown company", f"rst.nosuchco.{token_id}.{secret}")):
            hashes.clear()
            compares.clear()
            statements.clear()
            with pytest.raises(Unauthenticated):
                authenticate(store, token, audit_refusal=False)
            work[case] = (len(hashes), compares[:], statements[:])
    finally:
        event.remove(store.engine, "before_cursor_execute", listener)
    assert work["wrong secret"] == work["unknown token id"] == work["unknown company"], work
    assert work["wrong secret"][0] == 1 and work["wrong secret"][1] == [(64, 64)]


# -- names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "a\\b", "a\x00b", "x" * 201, " lead", "tab\tname", "a/b"])
def test_artifact_names_outside_the_rule_are_refused_in_process(acme, name):
    _store, company = acme
    task = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})[0]
    with pytest.raises(InvalidValue, match="artifact name"):
        company.record_artifact(task.id, "patch", b"content", name=name, actor="builder")
    assert company.list_artifacts(task.id) == []


def test_artifact_names_over_rest(acme, rest):
    _store, company = acme
    api, auth = rest
    task = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})[0]
    headers = {**auth("builder"), "Content-Type": "application/octet-stream"}
    for name in ("a%5Cb", "x" * 201, "%2E%2E", "%20x", "a%00b"):
        response = api.put(f"{API}/tasks/{task.id}/artifacts/{name}", content=b"c", headers=headers)
        assert response.status_code in (404, 422), (name, response.text)
        if response.status_code == 422:
            assert response.json()["type"] == "/problems/invalid-value"
    good = api.put(f"{API}/tasks/{task.id}/artifacts/report (v2).md", content=b"c", headers=headers)
    assert good.status_code == 200, good.text
    assert [a.name for a in company.list_artifacts(task.id)] == ["report (v2).md"]


def test_handles_follow_the_documented_rule(acme):
    _store, company = acme
    for bad in ("Bob", "9lives", "human", "a" * 64, "bo b"):
        with pytest.raises(InvalidValue, match="invalid handle"):
            company.add_principal(bad, kind="agent", actor="alice")
    with pytest.raises(InvalidValue):  # refused by the rule (or, recording the refusal, by the NUL check)
        company.add_principal("bo\x00b", kind="agent", actor="alice")
    assert {p.handle for p in company.list_principals()} == {"alice", "bob", "planner", "builder", "qa", "merger"}
    assert company.add_principal("carol-2", kind="human", actor="alice").handle == "carol-2"


# -- file modes -------------------------------------------------------------------------------------


def test_the_workspace_state_is_private(cli):
    ok(cli("init"))
    state = cli.workspace / ".roster"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "roster.db").stat().st_mode) == 0o600
    for extra in state.glob("roster.db-*"):  # -wal / -shm, when present, follow the database's mode
        assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0, extra


def test_an_existing_workspace_is_taken_back_to_private_modes(cli):
    ok(cli("init"))
    state = cli.workspace / ".roster"
    os.chmod(state, 0o755)
    os.chmod(state / "roster.db", 0o644)
    ok(cli("task", "list"))
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "roster.db").stat().st_mode) == 0o600

