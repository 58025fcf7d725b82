"""A database locked by another process: Roster waits ``lock_timeout`` seconds, then fails cleanly.

The lock holder is a real second process (``python -c`` with the stdlib ``sqlite3`` module) that runs
``BEGIN IMMEDIATE`` on the same file, prints ``locked`` and keeps the write lock until it reads a line
on stdin (or stdin closes, or 60 s pass, or it is killed).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import GOOD_SPEC

from roster.errors import StoreBusy
from roster.store import Store

HOLDER = r"""
import select, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("BEGIN IMMEDIATE")
for statement in sys.argv[2:]:
    conn.execute(statement)
print("locked", flush=True)
select.select([sys.stdin], [], [], 60)
conn.execute("ROLLBACK")
conn.close()
print("released", flush=True)
"""


class Holder:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def release(self) -> None:
        """Tell the holder to roll back and exit; wait until it has."""
        self.proc.stdin.write("release\n")
        self.proc.stdin.flush()
        out, err = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0, err
        assert out.strip() == "released"


@contextmanager
def lock_held(db: Path, *statements: str):
    """Run a second process holding the write lock on ``db`` (after running ``statements`` in it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), *statements], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "locked", proc.stderr.read() if proc.poll() is not None else line
        yield Holder(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def impatient(db_path: Path, company) -> Store:
    """A second store on the same file that waits only 0.5 s for a lock."""
    opened = Store.open(f"sqlite:///{db_path}", lock_timeout=0.5)
    yield opened
    opened.close()


def test_transition_on_a_locked_database_raises_store_busy_after_the_timeout(impatient, new_task, db_path):
    task = new_task()
    company = impatient.company("acme")
    with lock_held(db_path) as holder:
        started = time.monotonic()
        with pytest.raises(StoreBusy) as info:
            company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
        waited = time.monotonic() - started
        holder.release()

    assert 0.4 <= waited < 5, waited
    assert "--lock-timeout" in info.value.message and "locked" in info.value.message
    assert info.value.exit_code == 8
    assert company.get_task(task.id) == task
    assert company.verify_audit() == (2, None)

    moved = company.transition(task.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    assert (moved.state, moved.version) == ("planned", 2)
    assert company.verify_audit() == (3, None)


@pytest.mark.parametrize("identity", ["agent-token", "operator-default"])
def test_cli_on_a_locked_workspace_exits_8_with_a_clear_message(cli, identity):
    """Authenticating a token is itself a write (it records ``last_used_at``), so the lock is met at
    authentication, before the move: the user must still see exit 8, not an authentication error."""
    assert cli("init").exit_code == 0
    assert cli("task", "create", "fix-lint", "--title", "t", "--set", "rule=E501").exit_code == 0
    issued = cli("token", "issue", "planner", "--json")
    assert issued.exit_code == 0, issued.output
    token = ("--token", json.loads(issued.stdout)["token"]) if identity == "agent-token" else ()
    db = cli.workspace / ".roster" / "roster.db"
    events = cli("audit", "log", "--json")
    assert events.exit_code == 0

    with lock_held(db) as holder:
        started = time.monotonic()
        result = cli("--lock-timeout", "0.5", *token, "task", "move", "1", "plan", "--set", f"spec={GOOD_SPEC}")
        waited = time.monotonic() - started
        holder.release()

    assert result.exit_code == 8, result.output
    assert 0.4 <= waited < 5, waited
    assert "locked by another process" in result.stderr and "--lock-timeout" in result.stderr
    assert "Traceback" not in result.output
    assert integrity(db) == "ok"
    shown = cli("task", "list", "--json")
    assert '"state": "found"' in shown.stdout and '"version": 1' in shown.stdout
    assert cli("audit", "log", "--json").stdout == events.stdout  # nothing was audited, not even a refusal
    assert cli("audit", "verify").exit_code == 0
    # unlocked, the same command runs as before: the planner moves; the operator, a human, is not in plan's 'by'
    retried = cli(*token, "task", "move", "1", "plan", "--set", f"spec={GOOD_SPEC}")
    assert retried.exit_code == (0 if token else 5), retried.output


def test_reads_work_while_another_process_holds_the_write_lock(company, new_task, db_path):
    task = new_task()
    with lock_held(db_path) as holder:
        started = time.monotonic()
        assert company.get_task(task.id) == task
        assert [e.action for e in company.audit_log()] == ["spec.apply", "task.create"]
        assert time.monotonic() - started < 1
        holder.release()


@pytest.mark.sqlite_only  # SQLite's pragmas: PostgreSQL has none of them
def test_store_connections_use_wal_normal_sync_and_foreign_keys(store):
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == int(store.lock_timeout * 1000)


def test_a_lock_holder_killed_mid_transaction_leaves_no_trace(company, new_task, db_path):
    task = new_task()
    insert = ("INSERT INTO tasks (company_id, id, workflow, state, title, fields, owner, priority, parent_id, "
              "idempotency_key, version, created_by, created_at, updated_at) VALUES ('acme', 999, 'fix-lint', "
              # a 5 MB title: more than the page cache, so uncommitted pages spill into the WAL file
              "'merged', replace(hex(zeroblob(2500000)), '0', 'x'), '{}', NULL, 0, NULL, NULL, 1, 'mallory', "
              "'now', 'now')")
    wal = Path(f"{db_path}-wal")
    before = wal.stat().st_size
    with lock_held(db_path, insert) as holder:
        assert wal.stat().st_size > before + 2_000_000  # part of the uncommitted row reached the disk
        os.kill(holder.proc.pid, signal.SIGKILL)
        holder.proc.wait(timeout=10)
        assert holder.proc.returncode == -signal.SIGKILL

    assert [t.id for t in company.list_tasks()] == [task.id]
    assert integrity(db_path) == "ok"
    created, _ = company.create_task(workflow="fix-lint", title="after", actor="alice", fields={"rule": "E1"})
    moved = company.transition(created.id, "plan", actor="planner", expected_version=1, writes={"spec": GOOD_SPEC})
    assert (created.id, moved.state) == (2, "planned")
    assert company.verify_audit() == (4, None)


def test_a_pinned_connection_serves_one_thread_and_survives_a_failed_transaction(company, new_task):
    import threading

    from sqlalchemy import text

    store = company.store
    task = new_task()
    with store.pinned():
        with store.write() as first:
            pass
        with store.read() as second, store.read() as nested:
            assert nested is second  # a read inside a read joins it: one snapshot
            with store.write() as inner:  # a write inside a read takes a connection of its own, and commits
                assert inner is not second
                inner.execute(text("UPDATE tasks SET priority = 5 WHERE id = :id"), {"id": task.id})
        assert first is second  # the thread's transactions share the pinned connection
        with pytest.raises(ZeroDivisionError), store.write() as conn:  # rolled back, the connection kept
            conn.execute(text("UPDATE tasks SET priority = 9 WHERE id = :id"), {"id": task.id})
            1 / 0  # noqa: B018
        assert company.audit_log()  # streams its rows: an option of that statement, not of the connection
        with store.write() as again:
            assert again is first and not again.get_execution_options().get("yield_per")
        other: list = []
        worker = threading.Thread(target=lambda: other.append(company.get_task(task.id).priority))
        worker.start()
        worker.join()
    assert company.get_task(task.id).priority == 5 and other == [5]  # another thread: its own connection
    assert store._local.__dict__.get("pinned") is None
