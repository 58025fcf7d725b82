"""The fleet as real processes: several ``python -m roster up`` processes sharing one company on a real
SQLite file and on the real PostgreSQL server (127.0.0.1:5432, database ``test``, a schema per test),
agents that are real commands, ``kill -9`` crash loops, PostgreSQL connections killed (and the server
restarted, when that is safe) under a running ``roster up``, and ``--agents``. Nothing is mocked: every
assertion reads what reached the outside (rows, audit events, the CLI's JSON, exit codes, the runners'
own log of calls)."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import GOOD_SPEC, alive, need_pg, pg_reachable, read_lines, wait_for

from roster.cli.context import operator_handle
from roster.store import Store

PY = sys.executable
OPERATOR = operator_handle()
PG_DSN = "host=127.0.0.1 port=5432 user=root dbname=test"
SERVER = "postgresql+psycopg://root@127.0.0.1:5432/test"

# A command agent: logs every call (agent, task, the state its brief showed, pid, parent pid) to a shared
# JSONL file with O_APPEND (one write per line: lines of concurrent runners never interleave), sleeps,
# logs its end and plans the task. A task titled "slow..." sleeps SLOW seconds instead.
RUNNER_PY = f"""
import json, os, sys, time
log, seconds = sys.argv[1], float(sys.argv[2])
slow = float(sys.argv[3]) if len(sys.argv) > 3 else seconds
brief = json.load(sys.stdin)
task = brief["task"]
entry = {{"agent": brief["agent"]["handle"], "task": task["id"], "state": task["state"], "pid": os.getpid(),
          "ppid": os.getppid(), "attempt": brief.get("attempt"), "t": time.time()}}

def note(phase):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps({{**entry, "phase": phase, "t": time.time()}}) + "\\n").encode())
    finally:
        os.close(fd)

note("start")
time.sleep(slow if task["title"].startswith("slow") else seconds)
note("end")
print(json.dumps({{"transition": "plan", "writes": {{"spec": {GOOD_SPEC!r}}}, "rationale": "planned"}}))
"""

WORKFLOW = """\
  {name}:
    states: [found, planned]
    initial: found
    fields:
      rule: {{type: string}}
      spec: {{type: string, minLength: 20}}
    transitions:
      plan: {{from: found, to: planned, by: [{by}], writes: [spec], requires: {{fields: [rule]}}}}
"""


BACKENDS = ["sqlite", "postgresql"]


def _pg(sql: str, *params: object) -> list[tuple]:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as admin:
        cur = admin.execute(sql, params or None)
        return cur.fetchall() if cur.description else []


class Up:
    """One ``roster up`` process (its own session: its pid is its process group)."""

    def __init__(self, proc: subprocess.Popen, out: Path, err: Path) -> None:
        self.proc, self.out, self.err = proc, out, err

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def started(self) -> bool:
        return "agent(s) with a runner" in self.stdout()

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, and the exit code (the runs in flight finish first)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group (the agents' commands lead groups of their own: see Fleet.close)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)


class Fleet:
    """A workspace (roster.yaml, its credentials, the runner script) on SQLite or PostgreSQL, the test's
    own store on it, and the ``roster up`` processes started from it (all killed by :meth:`close`)."""

    def __init__(self, root: Path, backend: str) -> None:
        self.root, self.backend = root, backend
        self.root.mkdir(parents=True, exist_ok=True)
        self.schema: str | None = None
        self.url: str | None = None
        if backend == "postgresql":
            need_pg()
            self.schema = f"roster_fleetp_{secrets.token_hex(4)}"
            _pg(f"CREATE SCHEMA {self.schema}")
            self.url = f"{SERVER}?options=-csearch_path%3D{self.schema}"
        self.calls = root / "calls.jsonl"
        self.runner = root / "runner.py"
        self.runner.write_text(textwrap.dedent(RUNNER_PY), encoding="utf-8")
        self.ups: list[Up] = []
        self.store: Store | None = None

    # -- the workspace --------------------------------------------------------------------------------

    def command(self, seconds: float, slow: float | None = None) -> str:
        args = [PY, str(self.runner), str(self.calls), str(seconds)] + ([str(slow)] if slow is not None else [])
        return " ".join(shlex.quote(a) for a in args)

    def write_spec(self, workflows: dict[str, str], agents: dict[str, str], runner_timeout: float = 120,
                   max_concurrent_runs: int = 1) -> None:
        """``workflows``: name -> who may plan (its ``by``); ``agents``: handle -> its command (roles:
        ``planner`` and, for the --agents test, a role of its own named in ``by``); each agent's
        ``max_concurrent_runs``, which holds across every process."""
        lines = ["company: acme", "workflows:"]
        lines += [WORKFLOW.format(name=name, by=by).rstrip("\n") for name, by in workflows.items()]
        lines.append("agents:")
        for handle, (roles, command) in agents.items():
            runner = json.dumps({"kind": "program", "command": command, "timeout": runner_timeout})
            lines.append(f"  {handle}: {{roles: [{', '.join(roles)}], tier: bounded-mutator, runner: {runner}, "
                         f"max_concurrent_runs: {max_concurrent_runs}}}")
        lines += ["humans:", f"  {OPERATOR}: {{display_name: Operator}}", ""]
        (self.root / "roster.yaml").write_text("\n".join(lines), encoding="utf-8")
        applied = self.cli("apply", "--json")
        assert applied.returncode == 0, applied.stderr
        self.store = Store.open(self.db_url("roster-test"), artifact_root=self.root / ".roster" / "artifacts")

    def db_url(self, application: str) -> str | None:
        """The store's URL; on PostgreSQL its connections carry ``application`` as their application_name
        (so a test can find, and kill, the connections of one process and no one else's)."""
        if self.url is None:
            return f"sqlite:///{self.root / '.roster' / 'roster.db'}"
        return f"{self.url}&application_name={application}"

    def env(self, application: str = "roster-cli", extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTER_")}
        if self.url is not None:
            env["ROSTER_DB"] = self.db_url(application)
        env.update(extra or {})
        return env

    @property
    def company(self):
        assert self.store is not None
        return self.store.company("acme")

    def create(self, n: int, *, workflow: str = "fix-lint", title: str = "fix") -> list[int]:
        return [self.company.create_task(workflow=workflow, title=f"{title} {i}", actor=OPERATOR,
                                         fields={"rule": "E501"})[0].id for i in range(n)]

    # -- processes ------------------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """``python -m roster ARGS`` in the workspace, as the local operator."""
        return subprocess.run([PY, "-m", "roster", *args], check=False, cwd=self.root, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def js(self, *args: str):
        done = self.cli(*args)
        assert done.returncode == 0, f"roster {' '.join(args)}: exit {done.returncode}\n{done.stderr}"
        return json.loads(done.stdout)

    def many(self, *commands: tuple[str, ...], timeout: float = 60) -> list[subprocess.CompletedProcess]:
        """Several CLI commands at once (each is a process of its own: startup dominates)."""
        procs = [subprocess.Popen([PY, "-m", "roster", *args], cwd=self.root, env=self.env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in commands]
        done = []
        for args, proc in zip(commands, procs, strict=True):
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
        return done

    def up(self, *args: str, application: str = "roster-up", name: str | None = None,
           env: dict[str, str] | None = None) -> Up:
        """Start ``roster up --no-serve ARGS`` (``env``: more variables for it, such as ``ROSTER_FAULTS``)."""
        name = name or f"up{len(self.ups)}"
        out, err = self.root / f"{name}.out", self.root / f"{name}.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            proc = subprocess.Popen([PY, "-m", "roster", "up", "--no-serve", *args], cwd=self.root,
                                    env=self.env(application, env), stdout=stdout, stderr=stderr,
                                    start_new_session=True)
        up = Up(proc, out, err)
        self.ups.append(up)
        return up

    def calls_of(self, phase: str = "start") -> list[dict]:
        return [c for c in read_lines(self.calls) if c["phase"] == phase]

    def workers(self) -> set[int]:
        return {c["pid"] for c in read_lines(self.calls)}

    def close(self) -> None:
        for up in self.ups:
            up.kill()
        for pid in self.workers():  # the agents' commands: own process groups, PDEATHSIG besides
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        try:
            wait_for(lambda: not any(alive(p) for p in self.workers()), 5, "the agents' commands to die")
        finally:
            if self.store is not None:
                self.store.close()
            if self.schema is not None:
                _pg(f"DROP SCHEMA {self.schema} CASCADE")


@pytest.fixture
def fleet(tmp_path):
    """``fleet(backend)`` makes a :class:`Fleet`; every process it started is killed afterwards."""
    made: list[Fleet] = []

    def make(backend: str) -> Fleet:
        made.append(Fleet(tmp_path / f"ws-{len(made)}", backend))
        return made[-1]

    yield make
    for f in made:
        f.close()


def _tasks(listed) -> list[dict]:
    return listed["tasks"] if isinstance(listed, dict) else listed


def _no_runtime_errors(*ups: Up) -> None:
    for up in ups:
        err = up.stderr()
        assert "Traceback" not in err and "the runtime failed" not in err, err


POOL_AGENTS = ("p1", "p2", "p3", "p4")


def _most_at_once(calls: list[dict]) -> dict[str, int]:
    """Per agent, the most runs of it in flight at once (from the runners' own start and end lines)."""
    edges = sorted((c["t"], 1 if c["phase"] == "start" else -1, c["agent"]) for c in calls)
    now: Counter[str] = Counter()
    most: Counter[str] = Counter()
    for _, step, agent in sorted(edges, key=lambda e: (e[0], e[1])):
        now[agent] += step
        most[agent] = max(most[agent], now[agent])
    return dict(most)


# -- 1. several roster up processes share one company ----------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("processes", [2, 4])
def test_several_roster_up_processes_share_a_pool_and_do_each_task_exactly_once(fleet, backend, processes):
    ws = fleet(backend)
    # Each agent may run in every process at once (its limit holds across processes): the pool is worked
    # by all of them, not by whichever process wakes first.
    ws.write_spec({"fix-lint": "planner"}, {a: (["planner"], ws.command(0.15)) for a in POOL_AGENTS},
                  max_concurrent_runs=processes)
    ups = [ws.up("--lease-seconds", "5", "--poll", "0.2", "--max-runs", "4") for _ in range(processes)]
    # Every process is up and registered before the work arrives, so all of them compete for it.
    wait_for(lambda: all(u.started() or u.proc.poll() is not None for u in ups), 60, "the processes to start")
    assert all(u.proc.poll() is None for u in ups), [u.stderr() for u in ups]
    wait_for(lambda: len(ws.company.list_dispatchers()) == processes, 20, "every process to register")

    ids = ws.create(40)
    wait_for(lambda: all(t.state == "planned" for t in ws.company.list_tasks(limit=1000)), 90,
             "all 40 tasks to be planned")
    # The heartbeats (every lease/3) carry each process's counters: they add up to the 40 runs.
    wait_for(lambda: sum(d.runs_started for d in ws.company.list_dispatchers()) == 40, 15,
             "the heartbeats to report every run")
    # What the CLI shows while the processes are up and idle (each command is a process: run them at once).
    status, escalations, transitions = ws.many(
        ("status", "--json"), ("escalations", "--all", "--json"),
        ("audit", "log", "--json", "--action", "task.transition", "--limit", "1000"))
    for done in (status, escalations, transitions):
        assert done.returncode == 0, (done.args, done.stderr)
    assert all(u.proc.poll() is None for u in ups)
    for u in ups:  # SIGTERM to all at once: each stops after its runs in flight (none now)
        u.proc.send_signal(signal.SIGTERM)
    codes = [u.proc.wait(timeout=30) for u in ups]
    assert codes == [0] * processes, [(u.stdout(), u.stderr()) for u in ups]
    _no_runtime_errors(*ups)
    assert all("roster up: stopped" in u.stdout() for u in ups)

    fleet_status = json.loads(status.stdout)["fleet"]
    assert sorted(d["pid"] for d in fleet_status["dispatchers"]) == sorted(u.pid for u in ups)
    assert all(d["agents"] is None and d["max_runs"] == 4 for d in fleet_status["dispatchers"])
    assert sum(d["runs_started"] for d in fleet_status["dispatchers"]) == 40
    assert fleet_status["lost_races"] == sum(d["lost_races"] for d in fleet_status["dispatchers"])
    assert fleet_status["in_flight"] == []
    assert json.loads(status.stdout)["leases"] == []
    assert json.loads(escalations.stdout) == []
    moves = json.loads(transitions.stdout)
    assert len(moves) == 40 and sorted(int(e["subject"].split(":")[1]) for e in moves) == ids  # one each
    assert {e["principal"] for e in moves} <= set(POOL_AGENTS)
    verify = ws.cli("audit", "verify")
    assert verify.returncode == 0 and "verifies" in verify.stdout, verify.stderr

    tasks = ws.company.list_tasks(limit=1000)
    assert sorted(t.id for t in tasks) == ids and {t.state for t in tasks} == {"planned"}
    assert ws.company.list_dispatchers() == []  # every process recorded its stop

    calls = ws.calls_of("start")
    assert sorted(c["task"] for c in calls) == ids  # the runner ran exactly once per task...
    assert {c["state"] for c in calls} == {"found"}  # ...and never on a task that had moved on
    assert len(ws.calls_of("end")) == 40

    runs = ws.company.list_runs(limit=1000)
    assert len(runs) == 40 and Counter(r.outcome for r in runs) == {"succeeded": 40}  # no failed run
    assert sorted(r.task_id for r in runs) == ids and {r.attempt for r in runs} == {1}
    pid_of = {d.id: d.pid for d in ws.company.list_dispatchers(live=False)}
    ran_in = Counter(pid_of[r.dispatcher_id] for r in runs)
    assert set(ran_in) <= {u.pid for u in ups}
    assert len(ran_in) > 1, ran_in  # more than one process actually ran runs
    # The runners' parents say the same: the process that claimed a run is the one that ran its command.
    parent = {c["task"]: c["ppid"] for c in calls}
    assert all(parent[r.task_id] == pid_of[r.dispatcher_id] for r in runs)
    claims = ws.company.audit_log(action="lease.claim", limit=1000)
    assert len(claims) == 40  # a lost race claims nothing


# -- 2. kill -9 in a loop: crashes counted as attempts, then a blocker and an escalation -----------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_kill_9_crash_loop_ends_after_max_attempts_with_a_blocker_and_an_escalation(fleet, backend):
    ws = fleet(backend)
    ws.write_spec({"fix-lint": "planner"}, {"planner": (["planner"], ws.command(60))})
    [task] = ws.create(1)
    args = ("--max-attempts", "3", "--lease-seconds", "2", "--poll", "0.2")
    killed: list[int] = []
    for crash in (1, 2, 3):
        up = ws.up(*args)
        # The restarted process ends the dead one's run as crashed at once (same host, its pid is gone),
        # then waits out the backoff (2 s base, doubling, jitter 50-100%) before its own attempt.
        wait_for(lambda n=crash, up=up: len(ws.calls_of()) == n or up.proc.poll() is not None, 30,
                 f"attempt {crash} to start")
        assert up.proc.poll() is None, up.stderr()
        call = ws.calls_of()[-1]
        assert (call["task"], call["attempt"], call["ppid"]) == (task, crash, up.pid)
        up.kill()  # SIGKILL to roster up's process group, mid-run
        assert up.proc.returncode == -signal.SIGKILL
        killed.append(call["pid"])
        if alive(call["pid"]):  # PDEATHSIG should have taken it; the test makes sure either way
            os.kill(call["pid"], signal.SIGKILL)
        wait_for(lambda p=call["pid"]: not alive(p), 5, "the agent's command to die")
        [running] = [r for r in ws.company.list_runs(task_id=task) if r.outcome == "running"]
        assert running.attempt == crash

    # One more roster up: its sweep ends the third crashed run; the attempts have run out.
    once = ws.cli("up", "--once", "--no-serve", *args)
    assert once.returncode == 0, once.stderr
    assert "crashed" in once.stderr and "blocked" in once.stderr, once.stderr
    assert len(ws.calls_of()) == 3  # no fourth attempt

    runs = sorted(ws.company.list_runs(task_id=task), key=lambda r: r.attempt)
    assert [(r.outcome, r.failure_category, r.failure_code, r.attempt) for r in runs] == [
        ("crashed", "transient", "crashed", n) for n in (1, 2, 3)]
    pid_of = {d.id: d.pid for d in ws.company.list_dispatchers(live=False)}
    assert len({pid_of[r.dispatcher_id] for r in runs}) == 3  # each crash in a process of its own
    [attempt] = ws.company.attempts_of(task)
    assert attempt.agent == "planner" and attempt.failures == 3 and attempt.blocked_reason  # persisted blocker

    shown, status, escalations, verify = ws.many(
        ("task", "show", str(task), "--json"), ("status", "--json"), ("escalations", "--all", "--json"),
        ("audit", "verify"))
    for done in (shown, status, escalations, verify):
        assert done.returncode == 0, (done.args, done.stderr)
    assert "verifies" in verify.stdout
    shown_task = json.loads(shown.stdout)["task"]
    assert shown_task["state"] == "found" and shown_task["lease_holder"] is None
    assert [e for e in json.loads(shown.stdout)["history"] if e["action"] == "task.transition"] == []
    [planner] = [a for a in json.loads(status.stdout)["agents"] if a["agent"] == "planner"]
    assert planner["pending"] == []  # blocked for the planner: it no longer picks the task
    assert json.loads(status.stdout)["leases"] == [] and json.loads(status.stdout)["fleet"]["in_flight"] == []
    [escalation] = json.loads(escalations.stdout)
    assert (escalation["task_id"], escalation["from_agent"], escalation["status"]) == (task, "planner", "open")
    assert escalation["step"] in ("peer", "human") and escalation["category"] == "transient"

    audit = ws.company.audit_log(task_id=task)
    assert [e for e in audit if e.action == "task.transition"] == []  # nothing was committed
    crashes = ws.company.audit_log(action="run.crash")  # about the run (run:<id>), naming the task
    assert sorted(e.subject for e in crashes) == sorted(f"run:{r.id}" for r in runs)
    assert {e.data["task_id"] for e in crashes} == {task} and all("died" in e.data["reason"] for e in crashes)
    assert [e.data["reason"] for e in audit if e.action == "lease.release"] == ["crashed"] * 3
    assert [e.data["fencing_token"] for e in audit if e.action == "lease.claim"] == [1, 2, 3]
    assert len(ws.company.audit_log(action="run.blocked")) == 1
    assert not any(alive(p) for p in killed)


# -- 3. PostgreSQL connections killed (and the server restarted) under a running roster up ---------


def _terminate(application: str) -> int:
    """Kill every connection of the test database opened by ``application`` (one roster up process)."""
    [(n,)] = _pg("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'test' "
                 "AND application_name = %s AND pid <> pg_backend_pid()", application)
    return int(n)


def _outage_fleet(fleet, tasks: int = 6):
    ws = fleet("postgresql")
    ws.write_spec({"fix-lint": "planner"}, {a: (["planner"], ws.command(3.0)) for a in POOL_AGENTS})
    application = f"roster-up-{secrets.token_hex(3)}"
    up = ws.up("--lease-seconds", "6", "--poll", "0.2", "--max-runs", "4", application=application)
    wait_for(lambda: up.started() or up.proc.poll() is not None, 60, "roster up to start")
    assert up.proc.poll() is None, up.stderr()
    return ws, up, application, ws.create(tasks)


def _after_outage(ws: Fleet, up: Up, ids: list[int], application: str) -> None:
    """What must hold once the store is back: every task planned exactly once, no run left running,
    the listener listening again, the audit chain whole; then SIGTERM stops it with 0."""
    wait_for(lambda: all(t.state == "planned" for t in ws.company.list_tasks(limit=100)) or up.proc.poll() is not None,
             120, "every task to be planned after the outage")
    assert up.proc.poll() is None, up.stderr()  # an outage never ends roster up
    wait_for(lambda: all(r.outcome != "running" for r in ws.company.list_runs(limit=100)), 30, "the runs to end")
    wait_for(lambda: _pg("SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND query ILIKE 'LISTEN%%'",
                         application) != [], 30, "roster up to LISTEN again")
    for task in ids:
        assert len(ws.company.audit_log(action="task.transition", task_id=task)) == 1, task  # once, not twice
    calls = ws.calls_of("start")
    assert {c["task"] for c in calls} == set(ids) and {c["state"] for c in calls} == {"found"}
    runs = ws.company.list_runs(limit=100)
    assert all(r.outcome != "running" for r in runs)
    succeeded = Counter(r.task_id for r in runs if r.outcome == "succeeded")
    assert succeeded == {task: 1 for task in ids}, [(r.task_id, r.outcome, r.failure_message) for r in runs]
    verify = ws.cli("audit", "verify")
    assert verify.returncode == 0, verify.stderr
    assert ws.company.leases() == []
    assert up.terminate() == 0, up.stderr()
    _no_runtime_errors(up)


def test_roster_up_outlives_its_postgresql_connections_killed_mid_run(fleet):
    need_pg()
    ws, up, application, ids = _outage_fleet(fleet)
    wait_for(lambda: len(ws.calls_of()) >= 4, 30, "four runs to be in flight")
    assert _terminate(application) >= 1  # the pool's connections, the lease renewals', the LISTEN one
    time.sleep(0.5)
    assert up.proc.poll() is None, up.stderr()
    # Then keep killing them, every 50 ms, across the window in which the runs end and the next start.
    storm_end = time.monotonic() + 4.0
    while time.monotonic() < storm_end:
        _terminate(application)
        time.sleep(0.05)
        assert up.proc.poll() is None, up.stderr()
    _after_outage(ws, up, ids, application)
    err = " ".join(up.stderr().split())
    if "cannot be reached" in err:  # it met the outage (it may also have slipped between the kills)
        assert "the store is unavailable" in err, err
    assert "not listening for other processes' work" in err  # the LISTEN connection was killed, and came back


def _cluster() -> list[str] | None:
    """The ``pg_ctlcluster`` command that restarts the server on 127.0.0.1:5432, if this test may: root,
    the Debian tools present, and no other client of the server (a restart would break someone else's
    work)."""
    if os.geteuid() != 0 or not shutil.which("pg_ctlcluster") or not shutil.which("pg_lsclusters"):
        return None
    try:
        listed = subprocess.run(["pg_lsclusters", "--no-header"], check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in listed.stdout.splitlines():
        version, name, port, status, *_ = line.split()
        if port == "5432" and status == "online":
            return ["pg_ctlcluster", version, name, "restart"]
    return None


def _other_clients(mine: set[str]) -> list[tuple]:
    return _pg("SELECT pid, datname, application_name FROM pg_stat_activity WHERE backend_type = 'client backend' "
               "AND pid <> pg_backend_pid() AND NOT (application_name = ANY(%s))", list(mine))


def test_roster_up_outlives_a_postgresql_server_restart_mid_run(fleet):
    need_pg()
    restart = _cluster()
    if restart is None:
        pytest.skip("cannot restart the PostgreSQL server here (needs root and pg_ctlcluster)")
    ws, up, application, ids = _outage_fleet(fleet)
    wait_for(lambda: len(ws.calls_of()) >= 4, 30, "four runs to be in flight")
    others = _other_clients({application, "roster-test", "roster-cli"})
    if others:
        pytest.skip(f"other clients use the PostgreSQL server (a restart would break them): {others}")
    done = subprocess.run(restart, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    wait_for(pg_reachable, 30, "the server to be back")
    assert up.proc.poll() is None, up.stderr()
    _after_outage(ws, up, ids, application)
    err = " ".join(up.stderr().split())
    assert "not listening for other processes' work" in err, err


# -- 4. --agents, and roster status shows the fleet ------------------------------------------------


def test_roster_up_agents_runs_only_the_named_agents_and_status_shows_the_fleet(fleet):
    ws = fleet("sqlite")
    quick = ws.command(0.1, slow=6.0)  # 0.1 s a task, 6 s for a task titled "slow ..."
    ws.write_spec({"lint-a": "alpha", "lint-b": "beta"},
                  {"p1": (["planner", "alpha"], quick), "p2": (["planner", "alpha"], quick),
                   "p3": (["planner", "beta"], quick), "p4": (["planner", "beta"], quick)})
    [slow] = ws.create(1, workflow="lint-a", title="slow")
    a_ids = [slow, *ws.create(3, workflow="lint-a")]
    b_ids = ws.create(3, workflow="lint-b")

    bad = ws.cli("up", "--once", "--no-serve", "--agents", "p1,nobody")
    assert bad.returncode == 2 and "--agents names no agent of the spec: nobody" in " ".join(bad.stderr.split())

    up = ws.up("--agents", "p1,p2", "--lease-seconds", "6", "--poll", "0.2", "--max-runs", "4")
    wait_for(lambda: any(c["task"] == slow for c in ws.calls_of()) or up.proc.poll() is not None, 60,
             "the slow run to start")
    assert up.proc.poll() is None, up.stderr()
    status = ws.js("status", "--json")  # while the slow run is going (6 s)
    assert not any(c["task"] == slow for c in ws.calls_of("end")), "the slow run ended before status looked"
    [dispatcher] = status["fleet"]["dispatchers"]
    assert (dispatcher["pid"], dispatcher["agents"], dispatcher["max_runs"]) == (up.pid, ["p1", "p2"], 4)
    flying = [r for r in status["fleet"]["in_flight"] if r["task_id"] == slow]
    assert len(flying) == 1 and flying[0]["agent"] in ("p1", "p2") and flying[0]["dispatcher_id"] == dispatcher["id"]
    assert status["fleet"]["lost_races"] == 0
    pending = {a["agent"]: a["pending"] for a in status["agents"]}
    assert pending["p3"] == b_ids and pending["p4"] == b_ids  # offered to p3 and p4, waiting: nobody runs them

    wait_for(lambda: all(ws.company.get_task(t).state == "planned" for t in a_ids), 30, "lint-a to be planned")
    time.sleep(1.0)  # five more polls: p3 and p4 still get nothing from this process
    assert up.proc.poll() is None
    assert up.terminate() == 0, up.stderr()
    _no_runtime_errors(up)
    assert "2 agent(s) with a runner: p1, p2" in up.stdout()
    assert all(ws.company.get_task(t).state == "found" for t in b_ids)
    assert {c["agent"] for c in ws.calls_of()} <= {"p1", "p2"} and sorted(c["task"] for c in ws.calls_of()) == a_ids
    runs = ws.company.list_runs(limit=100)
    assert {r.agent for r in runs} <= {"p1", "p2"} and sorted(r.task_id for r in runs) == sorted(a_ids)
    for task in b_ids:
        assert ws.company.audit_log(task_id=task, action="lease.claim") == []  # untouched: not even claimed

    # Another process by role takes the rest, and only the rest.
    beta = ws.up("--agents", "role:beta", "--lease-seconds", "6", "--poll", "0.2")
    wait_for(lambda: all(ws.company.get_task(t).state == "planned" for t in b_ids) or beta.proc.poll() is not None,
             60, "lint-b to be planned")
    assert beta.terminate() == 0, beta.stderr()
    assert "2 agent(s) with a runner: p3, p4" in beta.stdout()
    by_task = {c["task"]: c["agent"] for c in ws.calls_of()}
    assert {by_task[t] for t in b_ids} <= {"p3", "p4"} and len(by_task) == 7
    verify = ws.cli("audit", "verify")
    assert verify.returncode == 0, verify.stderr


# -- 5. an agent's max_concurrent_runs across processes --------------------------------------------


def test_an_agent_with_max_concurrent_runs_1_works_one_task_at_a_time_across_processes(fleet):
    ws = fleet("sqlite")
    ws.write_spec({"fix-lint": "planner"}, {"p1": (["planner"], ws.command(1.5))})  # max_concurrent_runs: 1
    ups = [ws.up("--lease-seconds", "6", "--poll", "0.2") for _ in range(2)]
    wait_for(lambda: all(u.started() or u.proc.poll() is not None for u in ups), 60, "the processes to start")
    wait_for(lambda: len(ws.company.list_dispatchers()) == 2, 20, "both processes to register")
    ids = ws.create(3)
    wait_for(lambda: all(ws.company.get_task(t).state == "planned" for t in ids), 60, "the tasks to be planned")
    for u in ups:
        u.proc.send_signal(signal.SIGTERM)
    assert [u.proc.wait(timeout=30) for u in ups] == [0, 0]
    assert sorted(c["task"] for c in ws.calls_of()) == ids  # each task once, whatever the limit
    # The spec: "Runs of this agent in flight at once (default 1: an agent works one task at a time)".
    assert _most_at_once(read_lines(ws.calls)) == {"p1": 1}


# -- 6. two processes share a pool; one is killed mid-run, the other finishes its work -------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_when_one_of_two_roster_up_processes_is_killed_mid_run_the_other_finishes_its_tasks(fleet, backend):
    ws = fleet(backend)
    ws.write_spec({"fix-lint": "planner"}, {a: (["planner"], ws.command(2.0)) for a in ("p1", "p2")},
                  max_concurrent_runs=2)
    args = ("--lease-seconds", "3", "--poll", "0.2", "--max-runs", "2")
    ups = [ws.up(*args) for _ in range(2)]
    wait_for(lambda: len(ws.company.list_dispatchers()) == 2, 30, "both processes to register")
    ids = ws.create(6)
    victim, survivor = ups
    wait_for(lambda: any(c["ppid"] == victim.pid for c in ws.calls_of()), 30, "the victim to start a run")
    victim.kill()  # SIGKILL mid-run: its runs were working
    wait_for(lambda: all(ws.company.get_task(t).state == "planned" for t in ids), 90,
             "the survivor to finish every task")
    assert survivor.proc.poll() is None, survivor.stderr()
    survivor.proc.send_signal(signal.SIGTERM)
    assert survivor.proc.wait(timeout=30) == 0, survivor.stderr()

    transitions = ws.company.audit_log(action="task.transition", limit=1000)
    assert sorted(int(e.subject.split(":")[1]) for e in transitions) == ids  # each task moved exactly once
    runs = ws.company.list_runs(limit=1000)
    pid_of = {d.id: d.pid for d in ws.company.list_dispatchers(live=False)}
    crashed = [r for r in runs if r.outcome == "crashed"]
    assert crashed and {pid_of[r.dispatcher_id] for r in crashed} == {victim.pid}
    assert all(r.outcome in ("succeeded", "crashed") for r in runs)
    assert {r.task_id for r in runs if r.outcome == "succeeded"} == set(ids)
    assert all(pid_of[r.dispatcher_id] == survivor.pid for r in runs
               if r.outcome == "succeeded" and r.task_id in {c.task_id for c in crashed})
    assert ws.company.leases() == [] and ws.company.list_escalations(status=None) == []
    verify = ws.cli("audit", "verify")
    assert verify.returncode == 0, verify.stderr
