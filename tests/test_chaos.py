"""Chaos: ``kill -9`` at random moments, on the real PostgreSQL server. Three ``roster up`` processes work
a pool of four agents that share one transition; for about a minute one of them, picked at random among
those with a run in flight, is killed with SIGKILL (its whole process group) after a random pause, and a
new one is started in its place. Then the survivors drain the queue. At the end every task was moved
exactly once, no lease is held, no run is left ``running``, every crash was counted (a ``crashed`` run,
a ``run.crash`` event and a lease given back as ``crashed``), and ``roster audit verify`` passes.

Sized for CI: the chaos phase lasts ``CHAOS_SECONDS`` and the whole test about two minutes. The random
seed is printed in every failure message (set ``ROSTER_CHAOS_SEED`` to replay one)."""

from __future__ import annotations

import os
import random
import time
from collections import Counter

from conftest import alive, need_pg, wait_for
from test_fleet_processes import POOL_AGENTS, Up, fleet  # noqa: F401 - the fleet fixture, used by name

CHAOS_SECONDS = 60.0
TASKS = 80
PROCESSES = 3
ARGS = ("--lease-seconds", "3", "--poll", "0.2", "--max-runs", "4", "--max-attempts", "50")


def _in_flight(ws, up: Up) -> bool:
    """Whether ``up`` has a runner working now (a start line of its child without an end line)."""
    lines = [c for c in ws.calls_of("start") + ws.calls_of("end") if c["ppid"] == up.pid]
    open_runs = Counter()
    for c in lines:
        open_runs[(c["task"], c["pid"])] += 1 if c["phase"] == "start" else -1
    return any(n > 0 for n in open_runs.values())


def test_kill_9_at_random_moments_loses_and_doubles_nothing_on_postgresql(fleet):  # noqa: F811
    need_pg()
    seed = int(os.environ.get("ROSTER_CHAOS_SEED") or random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    why = f"(seed {seed})"
    ws = fleet("postgresql")
    ws.write_spec({"fix-lint": "planner"}, {a: (["planner"], ws.command(2.0)) for a in POOL_AGENTS},
                  max_concurrent_runs=PROCESSES)
    ups = [ws.up(*ARGS) for _ in range(PROCESSES)]
    wait_for(lambda: all(u.started() or u.proc.poll() is not None for u in ups), 60, "the processes to start")
    assert all(u.proc.poll() is None for u in ups), [u.stderr() for u in ups]
    ids = ws.create(TASKS)

    killed: list[Up] = []
    end = time.monotonic() + CHAOS_SECONDS
    while time.monotonic() < end and not all(t.state == "planned" for t in ws.company.list_tasks(limit=1000)):
        time.sleep(rng.uniform(0.5, 2.0))
        busy = [u for u in ups if u.proc.poll() is None and _in_flight(ws, u)]
        if not busy:
            continue
        victim = rng.choice(busy)
        victim.kill()  # SIGKILL to its process group, mid-run
        killed.append(victim)
        ups.remove(victim)
        ups.append(ws.up(*ARGS))
    assert len(killed) >= 3, f"only {len(killed)} process(es) had a run in flight to kill {why}"

    wait_for(lambda: all(t.state == "planned" for t in ws.company.list_tasks(limit=1000)), 120,
             f"every task to be planned after the chaos {why}")
    wait_for(lambda: all(r.outcome != "running" for r in ws.company.list_runs(limit=5000)), 30,
             f"every run to end (the dead processes' swept as crashed) {why}")
    for u in ups:
        assert u.terminate() == 0, (why, u.stderr())
        err = u.stderr()
        assert "Traceback" not in err and "the runtime failed" not in err, (why, err)
    for u in killed:  # the runners of the killed processes died with them (PDEATHSIG), or are killed now
        assert u.proc.returncode is not None and u.proc.returncode < 0, why
    wait_for(lambda: not any(alive(c["pid"]) for c in ws.calls_of("start") if c["ppid"] in {u.pid for u in killed}),
             10, "the killed processes' runners to be gone")

    tasks = ws.company.list_tasks(limit=1000)
    assert sorted(t.id for t in tasks) == ids and {t.state for t in tasks} == {"planned"}, why
    moves = Counter(int(e.subject.split(":")[1]) for e in ws.company.audit_log(action="task.transition", limit=5000))
    assert moves == {task: 1 for task in ids}, why  # every task moved exactly once
    assert ws.company.leases() == [], why  # no lease held

    runs = ws.company.list_runs(limit=5000)
    outcomes = Counter(r.outcome for r in runs)
    assert set(outcomes) <= {"succeeded", "crashed"}, (why, outcomes)
    assert Counter(r.task_id for r in runs if r.outcome == "succeeded") == {task: 1 for task in ids}, why
    crashed = [r for r in runs if r.outcome == "crashed"]
    assert crashed, f"{len(killed)} kills, yet no run was counted as crashed {why}"
    assert all((r.failure_category, r.failure_code) == ("transient", "crashed") for r in crashed), why
    crash_events = ws.company.audit_log(action="run.crash", limit=5000)
    assert sorted(e.subject for e in crash_events) == sorted(f"run:{r.id}" for r in crashed), why
    released = Counter(e.data["reason"] for e in ws.company.audit_log(action="lease.release", limit=5000))
    assert released["crashed"] == len([r for r in crashed if r.task_id is not None]), (why, released)
    # The attempts: numbered per agent and task; a crash counts as one, so that agent's next run is higher.
    by_agent: dict[tuple, list] = {}
    for r in sorted(runs, key=lambda r: r.started_at):
        by_agent.setdefault((r.task_id, r.agent), []).append(r)
    for (task, agent), theirs in by_agent.items():
        numbers = [r.attempt for r in theirs]
        assert numbers == sorted(set(numbers)), (why, task, agent, numbers)
        assert numbers[-1] <= 1 + sum(r.outcome == "crashed" for r in theirs[:-1]), (why, task, agent, numbers)
    assert ws.company.audit_log(action="run.blocked", limit=100) == [], why

    print(f"chaos {why}: {len(killed)} kills, {len(crashed)} runs crashed, {len(runs)} runs for {TASKS} tasks")
    status = ws.js("status", "--json")
    assert status["leases"] == [] and status["fleet"]["in_flight"] == [], why
    verify = ws.cli("audit", "verify")
    assert verify.returncode == 0 and "verifies" in verify.stdout, (why, verify.stdout, verify.stderr)
