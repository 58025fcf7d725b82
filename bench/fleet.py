"""The fleet runtime (issue 19): runs at once, wake-up latency, several processes on PostgreSQL.

Parts (``--parts``, comma-separated; default all but ``demo``):

- ``concurrency``: a pool of ``--agents`` agents (default 50, one role, one shared transition, each
  ``max_concurrent_runs: 1``), each run a real ``program`` command (``sh work.sh``: reads the brief JSON
  on stdin, sleeps ``--seconds``, prints a plan result on stdout), ``--tasks`` tasks (default 500),
  ``max_runs = --agents``, the dispatcher's ``run_forever`` in a thread on a SQLite file. Reports the
  wall time against the ideal (tasks / limit x seconds), their ratio (target <= 1.2), and the most runs
  in flight seen (``dispatcher.in_flight()`` sampled every 5 ms, and the overlap of the runs table's
  start and end stamps). Then the serial baseline: ``--serial-tasks`` (default 10) with ``max_runs=1``
  and with ``max_runs = --agents``.
- ``latency``: time from a task's creation (just before ``create_task``) to its run's start (the runner's
  first line, ``time.monotonic()``: CLOCK_MONOTONIC, shared by the processes of one host), over
  ``--latency-tasks`` tasks created one at a time, each waited for (until planned) before the next, after
  a random pause of 0 - 100 ms (0 - 1 s on polling SQLite, so a creation falls anywhere in the poll's
  wait: right after a run ends, the dispatcher has just started waiting). In one process
  (dispatcher in a thread, 5 s poll, SQLite: the store's in-process wake-up); across processes on
  PostgreSQL (a dispatcher in another Python process, 5 s poll: LISTEN/NOTIFY); across processes on
  SQLite (1 s poll: polling only).
- ``processes``: ``--pg-tasks`` tasks (default 600) through a pool of 4 agents, instant in-process
  runners, 1, 2 and 4 dispatcher processes (``--procs``) on PostgreSQL, each ``max_runs=4``, 0.2 s poll;
  all started and warm (one empty cycle) before the tasks are created, then told to go at once.
  Throughput (tasks/s) and double claims: ``task.transition`` events per task (must be exactly 1),
  succeeded runs per task (exactly 1), runs that did not succeed, lost races (as each process counted
  them, and the ``dispatchers`` table's ``lost_races``).
- ``demo``: ``roster demo --yes`` wall time in a fresh folder (``--demo-runs`` times); with
  ``--demo-before PATH`` (a worktree of an older commit), alternated with that commit's ``src``.

Dispatcher CPU per run with 10,000 waiting tasks is ``bench/throughput.py``'s; not repeated here.

Every PostgreSQL run uses a fresh schema of ``--pg`` (default the local server, database ``test``),
dropped afterwards.

Usage: python bench/fleet.py [--parts concurrency,latency,processes] [--tasks 500] [--agents 50]
       [--seconds 1.0] [--serial-tasks 10] [--latency-tasks 50] [--pg-tasks 600] [--procs 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

PG_SERVER = "postgresql+psycopg://root@127.0.0.1:5432/test"
PG_ADMIN = "host=127.0.0.1 port=5432 user=root dbname=test"
SPEC_TEXT = "Split the imports on line one into one import per line."
PLAN = {"transition": "plan", "writes": {"spec": SPEC_TEXT}}
WORK_SH = """cat > /dev/null
sleep {seconds}
printf '%s\\n' '{result}'
"""


def spec_text(agents: int, runner: str | None = None, concurrent: int = 1) -> str:
    """A company ``fleet``: one workflow with one transition, ``plan``, by the role ``planner``, which
    ``agents`` agents share (a pool), each with ``max_concurrent_runs: concurrent`` (a limit that holds
    across processes)."""
    run = f", runner: {{kind: program, command: '{runner}', timeout: 120}}" if runner else ""
    run += f", max_concurrent_runs: {concurrent}" if concurrent != 1 else ""
    lines = ["company: fleet", "workflows:", "  job:", "    states: [found, planned]", "    initial: found",
             "    fields:", "      rule: {type: string}", "      spec: {type: string, minLength: 20}",
             "    transitions:",
             "      plan: {from: found, to: planned, by: [planner], writes: [spec], requires: {fields: [rule]}}",
             "agents:"]
    lines += [f"  a{i:03d}: {{roles: [planner], tier: bounded-mutator{run}}}" for i in range(agents)]
    lines += ["humans:", "  lead: {}"]
    return "\n".join(lines) + "\n"


def create(company, n: int) -> list[int]:  # noqa: ANN001
    return [company.create_task(workflow="job", title=f"job {i}", actor="lead", fields={"rule": "E501"})[0].id
            for i in range(n)]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


@contextmanager
def pg_schema():
    """A fresh schema on the PostgreSQL server: yields its URL; dropped afterwards."""
    import psycopg

    schema = f"roster_fleet_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_SERVER}?options=-csearch_path%3D{schema}", schema
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


class Instant:
    """An in-process runner that plans at once; calls ``started(task_id, t)`` first (t: monotonic s)."""

    kind = "program"

    def __init__(self, started=None) -> None:  # noqa: ANN001
        from roster.runtime.runners import RunResult

        self.result = RunResult.parse(PLAN)
        self.started = started

    def run(self, brief):  # noqa: ANN001, ANN201
        if self.started is not None:
            self.started(brief.data["task"]["id"], time.monotonic())
        return self.result


def max_overlap(rows: list[tuple[str, str]]) -> int:
    """The most intervals (start, end: ISO stamps) open at once."""
    points = []
    for start, end in rows:
        points.append((datetime.fromisoformat(start), 1))
        points.append((datetime.fromisoformat(end), -1))
    now = best = 0
    for _, step in sorted(points, key=lambda p: (p[0], p[1])):  # an end before a start at the same stamp
        now += step
        best = max(best, now)
    return best


# -- 1. concurrency --------------------------------------------------------------------------------


def drain_commands(tasks: int, agents: int, seconds: float, max_runs: int) -> dict:
    """``tasks`` tasks through ``agents`` command agents (each run sleeps ``seconds``), ``max_runs`` at
    once, in a dispatcher's ``run_forever`` in a thread; the figures of the drain."""
    from sqlalchemy import text

    from roster.runtime.dispatcher import Dispatcher
    from roster.specfile import parse_spec
    from roster.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "work.sh").write_text(WORK_SH.format(seconds=seconds, result=json.dumps(PLAN)))
        store = Store.open(f"sqlite:///{work / 'fleet.db'}", artifact_root=work / "art")
        store.apply(parse_spec(spec_text(agents, runner="sh work.sh")), applied_by="lead")
        company = store.company("fleet")
        dispatcher = Dispatcher(company, workdir=work, max_runs=max_runs)
        t0 = time.perf_counter()
        dispatcher.cycle()  # warm: the agents' policies compiled, the dispatcher registered
        warm = time.perf_counter() - t0
        ids = create(company, tasks)
        outcomes: list = []
        done = threading.Event()
        peak = [0]

        def report(batch: list) -> None:
            outcomes.extend(batch)
            if sum(o.outcome == "succeeded" for o in outcomes) >= tasks:
                dispatcher.stopping.set()
                dispatcher.wake.set()
                done.set()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], sum(dispatcher.in_flight().values()))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        loop = threading.Thread(target=dispatcher.run_forever, kwargs={"poll_seconds": 1.0, "report": report})
        t0 = time.perf_counter()
        sampler.start()
        loop.start()
        finished = done.wait(timeout=tasks / max_runs * seconds * 5 + 60)
        wall = time.perf_counter() - t0
        done.set()
        if not finished:
            dispatcher.stopping.set()
            dispatcher.wake.set()
        loop.join()
        sampler.join()
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT started_at, ended_at FROM runs WHERE ended_at IS NOT NULL")).all()
            per_task = conn.execute(text("SELECT task_id, count(*) FROM runs WHERE outcome = 'succeeded' "
                                         "GROUP BY task_id")).all()
            other = conn.execute(text("SELECT outcome, count(*) FROM runs WHERE outcome != 'succeeded' "
                                      "GROUP BY outcome")).all()
        planned = len(company.list_tasks(state="planned", limit=tasks + 1))
        broken = company.verify_audit()[1]
        store.close()
    return {"tasks": tasks, "agents": agents, "max_runs": max_runs, "seconds": seconds, "wall": wall,
            "warm": warm, "finished": finished, "peak_sampled": peak[0], "peak_runs_table": max_overlap(rows),
            "planned": planned, "ids": len(ids), "double": sum(1 for _, n in per_task if n != 1),
            "other": dict(other), "audit_ok": broken is None,
            "failures": [f"{o.task_id}: {o.failure.message}" for o in outcomes if o.failure][:3]}


def print_drain(r: dict, label: str) -> float:
    ideal = -(-r["tasks"] // min(r["max_runs"], r["agents"])) * r["seconds"]
    ratio = r["wall"] / ideal
    print(f"{label}: {r['tasks']} tasks, {r['agents']} agents, max_runs {r['max_runs']}, {r['seconds']:g} s runs: "
          f"wall {r['wall']:.2f} s, ideal {ideal:.1f} s, ratio {ratio:.2f}; most runs in flight "
          f"{r['peak_sampled']} (sampled) / {r['peak_runs_table']} (runs table); tasks planned {r['planned']}/"
          f"{r['tasks']}, tasks with other than one succeeded run {r['double']}, other runs {r['other'] or 0}, "
          f"audit chain {'intact' if r['audit_ok'] else 'BROKEN'}; warm-up cycle {r['warm']:.2f} s"
          + ("" if r["finished"] else "; DID NOT FINISH") + (f"; failures e.g. {r['failures']}" if r["failures"] else ""),
          flush=True)
    return ratio


def part_concurrency(args: argparse.Namespace) -> None:
    r = drain_commands(args.tasks, args.agents, args.seconds, args.agents)
    ratio = print_drain(r, "concurrency")
    print(f"  -> wall / ideal = {ratio:.2f} (target <= 1.2)", flush=True)
    serial = drain_commands(args.serial_tasks, args.agents, args.seconds, 1)
    print_drain(serial, "serial baseline")
    wide = drain_commands(args.serial_tasks, args.agents, args.seconds, args.agents)
    print_drain(wide, "same tasks, concurrent")
    print(f"  -> serial / concurrent = {serial['wall'] / wide['wall']:.1f}x", flush=True)


# -- worker processes (latency across processes, several processes) -------------------------------


def worker(argv: list[str]) -> None:
    """A dispatcher in a process of its own. Prints READY after one empty (warming) cycle, waits for GO on
    stdin, runs ``run_forever`` until STOP (or end of input), then prints DONE with its counters. With
    ``--announce`` its runner prints ``START <task> <monotonic s>`` as each run starts."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--max-runs", type=int, default=4)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--announce", action="store_true")
    args = parser.parse_args(argv)
    from roster.runtime.dispatcher import Dispatcher
    from roster.store import Store

    lock = threading.Lock()

    def started(task_id: int, t: float) -> None:
        with lock:
            sys.stdout.write(f"START {task_id} {t:.6f}\n")
            sys.stdout.flush()

    store = Store.open(args.url, artifact_root=Path(args.workdir) / "art")
    company = store.company("fleet")
    runner = Instant(started if args.announce else None)
    agents = [a for a in company.spec().agents]
    dispatcher = Dispatcher(company, workdir=Path(args.workdir), runners={a: runner for a in agents},
                            max_runs=args.max_runs)
    dispatcher.cycle()
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        dispatcher.close()
        return
    loop = threading.Thread(target=dispatcher.run_forever, kwargs={"poll_seconds": args.poll})
    loop.start()
    sys.stdin.readline()  # STOP, or the parent gone
    dispatcher.stopping.set()
    dispatcher.wake.set()
    loop.join()
    store.close()
    print("DONE " + json.dumps({"id": dispatcher.id, "lost_races": dispatcher.lost_races,
                                "runs_started": dispatcher.runs_started}), flush=True)


class Worker:
    """The parent's handle on a worker process."""

    def __init__(self, url: str, workdir: Path, *, max_runs: int, poll: float, announce: bool = False) -> None:
        argv = [sys.executable, __file__, "_worker", "--url", url, "--workdir", str(workdir),
                "--max-runs", str(max_runs), "--poll", str(poll)] + (["--announce"] if announce else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.starts: dict[int, float] = {}
        self.arrived = threading.Condition()
        self.ready = threading.Event()
        self.done: dict | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word, _, rest = line.strip().partition(" ")
            if word == "START":
                task, t = rest.split()
                with self.arrived:
                    self.starts.setdefault(int(task), float(t))
                    self.arrived.notify_all()
            elif word == "READY":
                self.ready.set()
            elif word == "DONE":
                self.done = json.loads(rest)

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def wait_start(self, task_id: int, timeout: float) -> float | None:
        with self.arrived:
            self.arrived.wait_for(lambda: task_id in self.starts, timeout=timeout)
            return self.starts.get(task_id)

    def stop(self) -> dict | None:
        self.send("STOP")
        self.proc.stdin.close()
        self.proc.wait(timeout=120)
        self.reader.join(timeout=5)
        return self.done


# -- 2. latency ------------------------------------------------------------------------------------


def latencies_in_process(n: int) -> list[float]:
    from roster.runtime.dispatcher import Dispatcher
    from roster.specfile import parse_spec
    from roster.store import Store

    starts: dict[int, float] = {}
    arrived = threading.Condition()

    def started(task_id: int, t: float) -> None:
        with arrived:
            starts[task_id] = t
            arrived.notify_all()

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{Path(tmp) / 'fleet.db'}", artifact_root=Path(tmp) / "art")
        store.apply(parse_spec(spec_text(4)), applied_by="lead")
        company = store.company("fleet")
        runner = Instant(started)
        dispatcher = Dispatcher(company, workdir=Path(tmp), runners={f"a{i:03d}": runner for i in range(4)},
                                max_runs=4)
        dispatcher.cycle()
        loop = threading.Thread(target=dispatcher.run_forever, kwargs={"poll_seconds": 5.0})
        loop.start()
        time.sleep(0.2)
        try:
            for _ in range(n):
                time.sleep(random.uniform(0, 0.1))  # not always right after the previous run's end
                t0 = time.monotonic()
                task_id = create(company, 1)[0]
                with arrived:
                    arrived.wait_for(lambda: task_id in starts, timeout=15)
                if task_id not in starts:
                    print(f"  task {task_id}: no run started within 15 s", flush=True)
                    continue
                out.append(starts[task_id] - t0)
                deadline = time.monotonic() + 10  # the run ends before the next task is created
                while company.get_task(task_id).state != "planned" and time.monotonic() < deadline:
                    time.sleep(0.002)
        finally:
            dispatcher.stopping.set()
            dispatcher.wake.set()
            loop.join()
            store.close()
    return out


def latencies_across(url: str, workdir: Path, n: int, poll: float, gap: float = 0.1) -> list[float]:
    from roster.store import Store

    store = Store.open(url, artifact_root=workdir / "art")
    company = store.company("fleet")
    w = Worker(url, workdir, max_runs=4, poll=poll, announce=True)
    out = []
    try:
        if not w.ready.wait(60):
            raise RuntimeError("the worker did not start")
        w.send("GO")
        time.sleep(0.5)
        for _ in range(n):
            time.sleep(random.uniform(0, gap))  # at a random point of the poll's wait, not right after a run
            t0 = time.monotonic()
            task_id = create(company, 1)[0]
            start = w.wait_start(task_id, timeout=poll * 3 + 10)
            if start is None:
                print(f"  task {task_id}: no run started within {poll * 3 + 10:g} s", flush=True)
                continue
            out.append(start - t0)
            deadline = time.monotonic() + 10
            while company.get_task(task_id).state != "planned" and time.monotonic() < deadline:
                time.sleep(0.002)
    finally:
        w.stop()
        store.close()
    return out


def print_latency(label: str, values: list[float], n: int) -> None:
    if not values:
        print(f"{label}: no run started", flush=True)
        return
    print(f"{label}: {len(values)}/{n} tasks: p50 {ms(pct(values, 50))}, p90 {ms(pct(values, 90))}, "
          f"max {ms(max(values))}, mean {ms(statistics.fmean(values))}", flush=True)


def part_latency(args: argparse.Namespace) -> None:
    from roster.specfile import parse_spec
    from roster.store import Store

    n = args.latency_tasks
    print_latency("latency, one process (SQLite, 5 s poll, in-process wake-up)", latencies_in_process(n), n)
    with tempfile.TemporaryDirectory() as tmp, pg_schema() as (url, _schema):
        store = Store.open(url, artifact_root=Path(tmp) / "art")
        store.apply(parse_spec(spec_text(4)), applied_by="lead")
        store.close()
        print_latency("latency, across processes (PostgreSQL, 5 s poll, LISTEN/NOTIFY)",
                      latencies_across(url, Path(tmp), n, 5.0), n)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'fleet.db'}"
        store = Store.open(url, artifact_root=Path(tmp) / "art")
        store.apply(parse_spec(spec_text(4)), applied_by="lead")
        store.close()
        m = min(n, 20)
        print_latency("latency, across processes (SQLite, 1 s poll, polling)", latencies_across(url, Path(tmp), m, 1.0, gap=1.0),
                      m)


# -- 3. several processes on PostgreSQL ------------------------------------------------------------


def drain_processes(procs: int, tasks: int, max_runs: int, poll: float) -> dict:
    import psycopg

    from roster.specfile import parse_spec
    from roster.store import Store

    with tempfile.TemporaryDirectory() as tmp, pg_schema() as (url, schema):
        store = Store.open(url, artifact_root=Path(tmp) / "art")
        # Each agent may run in every process at once: the pool's capacity grows with the processes.
        store.apply(parse_spec(spec_text(4, concurrent=procs)), applied_by="lead")
        company = store.company("fleet")
        workers = [Worker(url, Path(tmp), max_runs=max_runs, poll=poll) for _ in range(procs)]
        try:
            for w in workers:
                if not w.ready.wait(120):
                    raise RuntimeError("a worker did not start")
            create(company, tasks)
            store.close()
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f"SET search_path TO {schema}")
                t0 = time.perf_counter()
                for w in workers:
                    w.send("GO")
                deadline = t0 + 600
                planned = 0
                while time.perf_counter() < deadline:
                    planned = conn.execute("SELECT count(*) FROM tasks WHERE state = 'planned'").fetchone()[0]
                    if planned >= tasks:
                        break
                    time.sleep(0.05)
                wall = time.perf_counter() - t0
                done = [w.stop() for w in workers]
                transitions = conn.execute(
                    "SELECT subject, count(*) FROM audit_events WHERE action = 'task.transition' GROUP BY subject"
                ).fetchall()
                succeeded = conn.execute(
                    "SELECT task_id, count(*) FROM runs WHERE outcome = 'succeeded' GROUP BY task_id").fetchall()
                other = conn.execute("SELECT outcome, count(*) FROM runs WHERE outcome != 'succeeded' "
                                     "GROUP BY outcome").fetchall()
                table_lost = conn.execute("SELECT coalesce(sum(lost_races), 0), coalesce(sum(runs_started), 0) "
                                          "FROM dispatchers").fetchone()
                per_process = conn.execute(
                    "SELECT dispatcher_id, count(*) FROM runs GROUP BY dispatcher_id").fetchall()
        finally:
            for w in workers:
                if w.proc.poll() is None:
                    w.proc.kill()
                    w.proc.wait()
    return {"procs": procs, "tasks": tasks, "wall": wall, "planned": planned,
            "transitions_tasks": len(transitions), "transitions_not_one": sum(1 for _, c in transitions if c != 1),
            "succeeded_tasks": len(succeeded), "succeeded_not_one": sum(1 for _, c in succeeded if c != 1),
            "other": {o: c for o, c in other},
            "lost_counted": sum(d["lost_races"] for d in done if d), "started_counted": sum(
                d["runs_started"] for d in done if d), "workers_reported": sum(1 for d in done if d),
            "lost_table": int(table_lost[0]), "started_table": int(table_lost[1]),
            "runs_per_process": sorted(c for _, c in per_process)}


def part_processes(args: argparse.Namespace) -> None:
    for procs in [int(p) for p in args.procs.split(",")]:
        r = drain_processes(procs, args.pg_tasks, 4, 0.2)
        print(f"processes {r['procs']} (PostgreSQL, max_runs 4 each, 4 agents, instant runs): {r['tasks']} tasks in "
              f"{r['wall']:.2f} s = {r['tasks'] / r['wall']:.1f} tasks/s; planned {r['planned']}; task.transition "
              f"events on {r['transitions_tasks']} tasks, {r['transitions_not_one']} with other than 1; succeeded "
              f"runs on {r['succeeded_tasks']} tasks, {r['succeeded_not_one']} with other than 1; other runs "
              f"{r['other'] or 0}; lost races {r['lost_counted']} (counted by the processes) / {r['lost_table']} "
              f"(dispatchers table); runs started {r['started_counted']} / {r['started_table']} (table); runs per "
              f"process {r['runs_per_process']}", flush=True)


# -- demo ------------------------------------------------------------------------------------------


def demo_once(src: str | None) -> tuple[float, str]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    roster = Path(sys.executable).with_name("roster")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        done = subprocess.run([str(roster), "demo", "--yes"], cwd=tmp, env=env, capture_output=True, text=True,
                              timeout=900)
        wall = time.perf_counter() - t0
    if done.returncode != 0:
        print(f"  demo failed ({done.returncode}): {done.stderr[-500:]}", flush=True)
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    said = [line.split(" (")[0] for line in lines if line.startswith(("KPI lint_findings:", "audit verify:"))][-2:]
    return wall, "; ".join(said)


def part_demo(args: argparse.Namespace) -> None:
    here = str(Path(__file__).resolve().parents[1] / "src")
    for i in range(args.demo_runs):
        order = [("HEAD", here)] + ([("before", f"{args.demo_before}/src")] if args.demo_before else [])
        if args.demo_before and i % 2:
            order.reverse()
        for label, src in order:
            wall, said = demo_once(src)
            print(f"demo --yes, {label}: {wall:.2f} s ({said})", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="concurrency,latency,processes",
                        help="comma-separated: concurrency, latency, processes, demo")
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--serial-tasks", type=int, default=10)
    parser.add_argument("--latency-tasks", type=int, default=50)
    parser.add_argument("--pg-tasks", type=int, default=600)
    parser.add_argument("--procs", default="1,2,4")
    parser.add_argument("--demo-runs", type=int, default=2)
    parser.add_argument("--demo-before", help="a worktree of an older commit, for the demo side by side")
    args = parser.parse_args()
    parts = args.parts.split(",")
    for part in parts:
        {"concurrency": part_concurrency, "latency": part_latency, "processes": part_processes,
         "demo": part_demo}[part](args)


if __name__ == "__main__":
    main()
