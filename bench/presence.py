"""The always-on metric at population scale: how long ``presence`` takes for 1,000 agents.

One company of ``--agents`` agents (default 1,000): half have triggers (watching), a fifth have an
active goal set through the store (audited, as in use), and every agent has ``--runs`` runs (default 24)
spread over the last day, inserted as rows (the metric reads runs, approval requests and audit events;
how the rows got there does not matter to it). Reported: wall and CPU seconds of ``presence(days=1)``
and ``presence(days=7)`` (what ``roster presence``, ``roster status``, ``GET /api/v1/presence`` and
the demo's report call), and the number of rows read.

Usage: python bench/presence.py [--agents N] [--runs N] [--db URL]   (default: a SQLite file)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert

from roster.kernel.goals import GoalBudget, GoalCheck
from roster.specfile import parse_spec
from roster.store import Store
from roster.store.schema import runs
from roster.store.store import format_ts


def spec_text(agents: int) -> str:
    lines = ["company: bench", "kpis:", "  findings: {direction: down}", "agents:"]
    for i in range(agents):
        triggers = ", triggers: [{every: 1h}]" if i % 2 == 0 else ""
        lines.append(f"  a{i:04d}: {{tier: bounded-mutator{triggers}}}")
    lines += ["humans:", "  lead: {}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(args.db or f"sqlite:///{Path(tmp) / 'presence.db'}")
        store.apply(parse_spec(spec_text(args.agents)), applied_by="lead")
        company = store.company("bench")
        handles = [f"a{i:04d}" for i in range(args.agents)]
        for handle in handles[::5]:
            company.set_goal(handle, "findings at most 5", actor="lead", check=GoalCheck.parse_kpi("findings<=5"),
                             budget=GoalBudget(runs=100), every_seconds=3600)
        now = store.clock()
        rows = []
        for a, handle in enumerate(handles):
            for r in range(args.runs):
                started = now - timedelta(hours=24) + timedelta(seconds=(r * 3600 + a) % 86000)
                rows.append({"company_id": "bench", "id": f"b{a:05d}{r:04d}", "agent": handle, "trigger": "bench",
                             "attempt": 1, "started_at": format_ts(started), "outcome": "succeeded",
                             "ended_at": format_ts(started + timedelta(minutes=20))})
        with store.write() as conn:
            conn.execute(insert(runs), rows)
        print(f"{args.agents} agents, {len(rows)} runs in the last day, {args.agents // 5} active goals "
              f"({store.dialect.name})", flush=True)
        for days in (1, 7):
            t0, c0 = time.perf_counter(), time.process_time()
            report = company.presence(actor=None, days=days)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            last = report["days"][-1]
            watching = sum(1 for a in last["agents"].values() if a["seconds"]["watching"] > 0)
            print(f"presence(days={days}): {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU; last day: "
                  f"{len(last['agents'])} agents, {watching} watching at some time, "
                  f"{last['around_the_clock']} around the clock", flush=True)
        store.close()


if __name__ == "__main__":
    main()
