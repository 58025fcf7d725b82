"""Signed checkpoints (issue 15, deliverable 1): an Ed25519 signature over the chain head, kept outside the
database (key file 0600, witnesses: a file, a webhook, a git repository). A database writer who rewrites
the chain consistently or truncates it before the newest checkpoint is caught; a checkpoint signed with
another key is refused; rotated keys keep old checkpoints verifiable."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise

import pytest
from conftest import GOOD_SPEC, js, ok
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, select, update

from roster.kernel import checkpoints as kc
from roster.kernel.audit import GENESIS_HASH, event_hash
from roster.store.checkpoints import AutoCheckpoints, attach, export, make_checkpoint, verify_chain
from roster.store.schema import audit_checkpoints, audit_events, companies
from roster.store.witness import FileWitness, GitWitness, KeyRing, WebhookWitness, read_witness

# -- the attacker: write access to the database, and the documented hash format -----------------------


def rewrite(engine, company: str, seq: int, data: dict | None = None, *, drop_after: int | None = None) -> None:
    """Edit event ``seq``'s data (or, with ``drop_after``, delete every event after that seq), recompute
    every hash after it and set the company's head: a chain that verifies on its own."""
    with engine.begin() as conn:
        if drop_after is not None:
            conn.execute(delete(audit_events).where(audit_events.c.company_id == company,
                                                    audit_events.c.seq > drop_after))
        if data is not None:
            conn.execute(update(audit_events).where(audit_events.c.company_id == company,
                                                    audit_events.c.seq == seq), {"data": json.dumps(data)})
        rows = list(conn.execute(select(audit_events).where(audit_events.c.company_id == company)
                                 .order_by(audit_events.c.seq)))
        prev = GENESIS_HASH
        for row in rows:
            digest = event_hash(seq=row.seq, ts=row.ts, company=company, principal=row.principal, action=row.action,
                                subject=row.subject, data=json.loads(row.data), prev_hash=prev,
                                state=json.loads(row.state) if row.state is not None else None)
            conn.execute(update(audit_events).where(audit_events.c.company_id == company,
                                                    audit_events.c.seq == row.seq),
                         {"prev_hash": prev, "hash": digest})
            prev = digest
        conn.execute(update(companies).where(companies.c.id == company),
                     {"audit_seq": rows[-1].seq, "audit_head": prev})


def flat(text: str) -> str:
    """Collapse whitespace, so text Rich wrapped reads as one line."""
    return " ".join(text.split())


def work(company, n: int = 1) -> None:
    for i in range(n):
        task, _ = company.create_task(workflow="fix-lint", title=f"t{i}", actor="alice", fields={"rule": "E501"})
        company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})


@pytest.fixture
def ring(tmp_path) -> KeyRing:
    return KeyRing(tmp_path / "keys" / "audit-key")


def trusted(ring: KeyRing) -> dict:
    return ring.trusted()


def problems(store, ring, witnessed=()) -> list[str]:
    return verify_chain(store, "acme", trusted(ring), witnessed).problems


# -- the store: checkpoints, rewrites, truncation, forgeries -----------------------------------------------


def test_the_key_file_is_created_0600_and_its_public_key_trusted(ring):
    key = ring.private_key()
    assert stat.S_IMODE(ring.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ring.trusted_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ring.path.parent.stat().st_mode) == 0o700
    assert list(ring.trusted()) == [kc.key_id(key.public_key())]
    assert kc.key_id(ring.private_key().public_key()) == kc.key_id(key.public_key())  # read back, not replaced
    assert b"PRIVATE KEY" in ring.path.read_bytes()


def test_a_consistent_rewrite_before_the_checkpoint_passes_the_chain_but_not_the_checkpoint(store, company, ring):
    work(company, 3)
    signed = make_checkpoint(store, "acme", ring.private_key())
    work(company, 1)
    assert problems(store, ring) == []

    first = next(e for e in company.audit_log() if e.action == "task.create")
    rewrite(store.engine, "acme", first.seq, {**first.data, "title": "never happened"})
    report = verify_chain(store, "acme", trusted(ring))
    assert report.broken is None  # the probe: the chain alone verifies after a consistent rewrite
    [problem] = report.problems
    assert problem.startswith(f"checkpoint {signed.seq} (stored): the hash at seq {signed.seq} is not the one")
    assert "rewritten" in problem


def test_a_rewrite_after_the_newest_checkpoint_is_the_documented_window(store, company, ring):
    work(company, 1)
    make_checkpoint(store, "acme", ring.private_key())
    work(company, 1)
    last = company.audit_log()[-1]
    rewrite(store.engine, "acme", last.seq, {**last.data, "rationale": "edited"})
    report = verify_chain(store, "acme", trusted(ring))
    assert report.problems == []
    assert report.unwitnessed == 2  # task.create and task.transition after the checkpoint


def test_truncation_with_the_head_rewound_is_caught_by_a_later_checkpoint(store, company, ring):
    work(company, 2)
    signed = make_checkpoint(store, "acme", ring.private_key())
    rewrite(store.engine, "acme", 0, drop_after=signed.seq - 2)
    report = verify_chain(store, "acme", trusted(ring))
    assert report.broken is None  # the probe: deleting the last events and rewinding the head passed
    [problem] = report.problems
    assert f"the chain ends at seq {signed.seq - 2} but checkpoint {signed.seq}" in problem
    assert "truncation" in problem


def test_a_checkpoint_signed_with_another_key_is_refused(store, company, ring):
    work(company, 1)
    make_checkpoint(store, "acme", ring.private_key())
    intruder = Ed25519PrivateKey.generate()  # a database writer's own key, not in the trusted file
    work(company, 1)
    forged = make_checkpoint(store, "acme", intruder)
    [problem] = problems(store, ring)
    assert problem == (f"checkpoint {forged.seq} (stored): signed by key {forged.key_id}, which is not a "
                       "trusted key")


def test_a_stored_checkpoint_edited_to_match_a_rewrite_fails_its_signature(store, company, ring):
    work(company, 2)
    signed = make_checkpoint(store, "acme", ring.private_key())
    rewrite(store.engine, "acme", 2, {"edited": True})
    with store.read() as conn:
        new_head = conn.scalar(select(companies.c.audit_head).where(companies.c.id == "acme"))
    with store.engine.begin() as conn:
        conn.execute(update(audit_checkpoints).where(audit_checkpoints.c.seq == signed.seq), {"head": new_head})
    [problem] = problems(store, ring)
    assert "the signature does not verify" in problem


def test_rotation_keeps_old_checkpoints_verifiable_and_names_each_key(store, company, ring):
    work(company, 1)
    old = make_checkpoint(store, "acme", ring.private_key())
    old_id, new_id = ring.rotate()
    assert old_id == old.key_id != new_id
    assert stat.S_IMODE(ring.path.stat().st_mode) == 0o600
    work(company, 1)
    new = make_checkpoint(store, "acme", ring.private_key())
    assert new.key_id == new_id
    report = verify_chain(store, "acme", trusted(ring))
    assert report.problems == []
    assert [(r.checkpoint.seq, r.checkpoint.key_id) for r in report.checkpoints] == [(old.seq, old_id),
                                                                                    (new.seq, new_id)]


def test_deleted_checkpoint_rows_do_not_hide_a_rewrite_from_the_witness_file(store, company, ring, tmp_path):
    work(company, 2)
    key = ring.private_key()
    signed = make_checkpoint(store, "acme", key)
    witness = tmp_path / "witness.jsonl"
    assert export(signed, key.public_key(), [FileWitness(witness)]) == []
    rewrite(store.engine, "acme", 2, {"edited": True})
    with store.engine.begin() as conn:
        conn.execute(delete(audit_checkpoints))
    assert problems(store, ring) == []  # without the witness nothing is left to compare with
    [problem] = problems(store, ring, read_witness(witness))
    assert problem.startswith(f"checkpoint {signed.seq} (witness): the hash at seq {signed.seq}")


def test_a_webhook_witness_receives_the_signed_checkpoint(store, company, ring):
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/down":
                self.send_response(503)
                self.end_headers()
                return
            received.append(body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        work(company, 1)
        key = ring.private_key()
        signed = make_checkpoint(store, "acme", key)
        url = f"http://127.0.0.1:{server.server_port}/checkpoints"
        assert export(signed, key.public_key(), [WebhookWitness(url)]) == []
        failures = export(signed, key.public_key(), [WebhookWitness(f"http://127.0.0.1:{server.server_port}/down"),
                                                     WebhookWitness("http://127.0.0.1:port/")])
    finally:
        server.shutdown()
        server.server_close()
    [line] = received
    assert kc.Checkpoint.from_dict(line) == signed
    assert kc.check(kc.Checkpoint.from_dict(line), trusted(ring)) is None
    assert len(failures) == 2
    assert "answered 503" in failures[0] and "cannot POST the checkpoint" in failures[1]


def test_a_git_witness_commits_each_checkpoint(store, company, ring, tmp_path):
    repo = tmp_path / "witness-repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    work(company, 1)
    key = ring.private_key()
    first = make_checkpoint(store, "acme", key)
    assert export(first, key.public_key(), [GitWitness(repo)]) == []
    work(company, 1)
    second = make_checkpoint(store, "acme", key)
    assert export(second, key.public_key(), [GitWitness(repo)]) == []
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert log[:2] == [f"roster checkpoint acme seq {second.seq}", f"roster checkpoint acme seq {first.seq}"]
    assert read_witness(repo / "roster-checkpoints" / "acme.jsonl") == [first, second]
    assert subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True,
                          check=True).stdout == ""
    failures = export(second, key.public_key(), [GitWitness(tmp_path / "not-a-repo")])
    assert len(failures) == 1 and "not a git work tree" in failures[0]


def test_automatic_checkpoints_every_n_events(store, company, ring, tmp_path):
    witness = tmp_path / "auto.jsonl"
    attach(store, AutoCheckpoints(ring.private_key, [FileWitness(witness)], events=5, minutes=0))
    work(company, 6)  # 12 events after spec.apply
    with store.read() as conn:
        seqs = [r.seq for r in conn.execute(select(audit_checkpoints.c.seq).order_by(audit_checkpoints.c.seq))]
    assert seqs == [5, 10]  # each commit that reached 5 more events than the last checkpoint
    assert [cp.seq for cp in read_witness(witness)] == seqs
    assert verify_chain(store, "acme", trusted(ring)).problems == []


def test_automatic_checkpoints_every_m_minutes(databases, tmp_path, ring, spec, clock):
    from roster.store import Store

    store = Store.open(databases("minutes"), clock=clock, artifact_root=tmp_path / "art")
    attach(store, AutoCheckpoints(ring.private_key, [], events=0, minutes=10))
    store.apply(spec, applied_by="alice")
    company = store.company("acme")
    work(company, 1)
    clock.advance(minutes=11)
    work(company, 1)
    with store.read() as conn:
        seqs = [r.seq for r in conn.execute(select(audit_checkpoints.c.seq))]
    assert seqs == [4]  # the first commit more than 10 minutes after the store started watching
    store.close()


def test_a_checkpoint_of_the_same_head_and_key_is_not_stored_twice(store, company, ring):
    key = ring.private_key()
    assert make_checkpoint(store, "acme", key) == make_checkpoint(store, "acme", key)
    with store.read() as conn:
        assert conn.scalar(select(audit_checkpoints.c.seq).where(audit_checkpoints.c.company_id == "acme")) == 1


# -- the CLI ------------------------------------------------------------------------------------------------


def test_cli_checkpoint_then_a_consistent_rewrite_exits_9_naming_the_checkpoint(cli, tmp_path, monkeypatch):
    ok(cli("init"))
    ok(cli("task", "create", "fix-lint", "--title", "E501 in app.py", "--set", "rule=E501"))
    witness = tmp_path / "witness.jsonl"
    out = flat(ok(cli("audit", "checkpoint", "--witness", f"file:{witness}")))
    key = cli.workspace / ".roster" / "audit-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    signed = read_witness(witness)[0]
    assert f"signed by key {signed.key_id}" in out and "sent to file:" in out
    report = js(cli("audit", "verify", "--json"))
    assert report["valid"] is True and report["newest_checkpoint"]["key_id"] == signed.key_id
    assert f"signed by key {signed.key_id} (1)" in flat(ok(cli("audit", "verify")))

    db = sqlite3.connect(cli.workspace / ".roster" / "roster.db")  # the attacker edits the database file
    db.close()
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{cli.workspace / '.roster' / 'roster.db'}")
    company = js(cli("audit", "log", "--json"))[0]["company"]
    rewrite(engine, company, 1, {"revision": 1, "spec_hash": "0" * 64, "changes": []})
    engine.dispose()
    result = cli("audit", "verify")
    assert result.exit_code == 9, result.stdout + result.stderr
    assert f"broken at seq {signed.seq}" in flat(result.stderr) and "rewritten" in result.stderr

    # Deleting the checkpoint rows leaves the witness file.
    with sqlite3.connect(cli.workspace / ".roster" / "roster.db") as conn:
        conn.execute("DELETE FROM audit_checkpoints")
    assert cli("audit", "verify").exit_code == 0
    result = cli("audit", "verify", "--witness", str(witness))
    assert result.exit_code == 9 and "(witness" in result.stderr

    monkeypatch.setenv("ROSTER_AUDIT_WITNESS", f"file:{witness}")  # a configured witness is read by default
    assert cli("audit", "verify").exit_code == 9
    refused = cli("audit", "checkpoint")  # a broken chain is never signed
    assert refused.exit_code == 9 and "rewritten" in refused.stderr
    assert len(read_witness(witness)) == 1


def test_cli_rotate_key_keeps_the_old_checkpoint_and_names_both_keys(cli):
    ok(cli("init"))
    first = js(cli("audit", "checkpoint", "--json"))
    ok(cli("task", "create", "fix-lint", "--title", "E501 in app.py", "--set", "rule=E501"))
    rotated = js(cli("audit", "rotate-key", "--json"))
    assert rotated["old_key_id"] == first["key_id"] != rotated["new_key_id"]
    assert sorted(rotated["trusted"]) == sorted([first["key_id"], rotated["new_key_id"]])
    second = js(cli("audit", "checkpoint", "--json"))
    assert second["key_id"] == rotated["new_key_id"]
    out = " ".join(ok(cli("audit", "verify")).split())
    assert f"key {first['key_id']} (1)" in out and f"key {second['key_id']} (1)" in out
    assert "0 events after it are not yet checkpointed" in out


def test_cli_key_from_the_environment(cli, tmp_path, monkeypatch):
    ok(cli("init"))
    path = tmp_path / "elsewhere" / "signing.pem"
    monkeypatch.setenv("ROSTER_AUDIT_KEY", str(path))
    signed = js(cli("audit", "checkpoint", "--json"))
    assert signed["key_file"] == str(path) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (cli.workspace / ".roster" / "audit-key").exists()
    monkeypatch.delenv("ROSTER_AUDIT_KEY")
    result = cli("audit", "verify")  # the workspace's default key file trusts nothing: refused
    assert result.exit_code == 9 and "not a trusted key" in flat(result.stderr)
    assert os.environ.get("ROSTER_AUDIT_KEY") is None


def test_cli_commands_sign_checkpoints_on_their_own_every_n_events(cli, tmp_path, monkeypatch):
    witness = tmp_path / "auto-witness.jsonl"
    monkeypatch.setenv("ROSTER_CHECKPOINT_EVENTS", "3")
    monkeypatch.setenv("ROSTER_AUDIT_WITNESS", str(witness))
    ok(cli("init"))
    for n in range(3):
        ok(cli("task", "create", "fix-lint", "--title", f"task {n}", "--set", "rule=E501"))
    signed = read_witness(witness)
    assert signed and all(b.seq - a.seq >= 3 for a, b in pairwise(signed))
    key = cli.workspace / ".roster" / "audit-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    report = js(cli("audit", "verify", "--json"))
    assert report["valid"] and [c["seq"] for c in report["checkpoints"] if c["source"] == "stored"] == [
        c.seq for c in signed]
    monkeypatch.setenv("ROSTER_CHECKPOINT_EVENTS", "many")
    result = cli("task", "list")
    assert result.exit_code == 2 and "ROSTER_CHECKPOINT_EVENTS must be a number" in " ".join(result.stderr.split())


def test_an_automatic_checkpoint_that_fails_never_fails_the_commit(store, company, tmp_path, caplog):
    unreadable = tmp_path / "not-a-key"
    unreadable.write_text("garbage")
    attach(store, AutoCheckpoints(KeyRing(unreadable).private_key, [], events=1, minutes=0))
    task, _ = company.create_task(workflow="fix-lint", title="t", actor="alice", fields={"rule": "E501"})
    assert company.get_task(task.id).title == "t"
    assert "automatic audit checkpoint of acme failed" in caplog.text and "cannot read the audit signing key" in caplog.text
    with store.read() as conn:
        assert conn.scalar(select(audit_checkpoints.c.seq)) is None
