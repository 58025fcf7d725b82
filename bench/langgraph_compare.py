"""Roster's durable task transitions vs LangGraph's SqliteSaver checkpointed steps, in the same run.

The product brief quotes LangGraph's SqliteSaver at "about 700 checkpointed steps per second here"; this
script measures both sides on the same machine, in the same process, on temporary SQLite files in one
temporary directory, rather than comparing against a figure taken elsewhere.

- LangGraph: a ``StateGraph`` with 4 nodes in sequence (``triage -> start -> submit -> accept``, as in
  bench/transitions.py), each writing one small state key, compiled with ``SqliteSaver`` on a file database
  and invoked once per task with a distinct ``thread_id``. Unit: checkpointed steps (node executions, 4 per
  task) per second. Run twice: with ``durability="sync"`` (each step's checkpoint is committed before the
  next step starts: the like-for-like mode, used for the headline ratios) and with LangGraph's default
  ``durability="async"`` (the checkpoint is written on a background thread while the next step runs).
- Roster: ``transitions.run(N, path, batch=0)`` (one commit per transition) and ``batch=100`` (group
  commit), from bench/transitions.py. Unit: transitions per second, each contract-checked and audited.

Prints each rate and the ratios ``roster single / langgraph`` and ``roster batch / langgraph``. Absolute
figures are noise on a shared machine; the ratios from one run are what this is for.

SQLite settings: Roster opens its database with ``journal_mode=WAL`` and ``synchronous=NORMAL``
(src/roster/store/engine.py). ``SqliteSaver.setup()`` sets ``journal_mode=WAL`` itself; this script also sets
``synchronous=NORMAL`` on LangGraph's connection so both sides pay the same commit cost (SQLite's default,
and LangGraph's out of the box, is ``FULL``).

Needs LangGraph in the venv (bench-only, not a project dependency):
    .venv/bin/pip install langgraph langgraph-checkpoint-sqlite

Usage: .venv/bin/python bench/langgraph_compare.py --tasks 500 [--batch 100]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

# No network: make sure LangSmith tracing (the only thing in the LangGraph stack that would talk to a server
# during invoke) stays off, whatever the environment says.
os.environ["LANGSMITH_TRACING"] = "false"
os.environ["LANGCHAIN_TRACING_V2"] = "false"

try:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph
except ImportError:
    SqliteSaver = None

sys.path.insert(0, str(Path(__file__).resolve().parent))
import transitions

STEPS_PER_TASK = len(transitions.STEPS)  # 4


class TicketState(TypedDict, total=False):
    severity: str
    assignee: str
    summary: str
    accepted: bool


def build_graph(checkpointer: Any) -> Any:
    """The bench workflow as a LangGraph graph: 4 nodes in sequence, each writing one small state key."""
    builder = StateGraph(TicketState)
    builder.add_node("triage", lambda state: {"severity": "high"})
    builder.add_node("start", lambda state: {"assignee": "worker"})
    builder.add_node("submit", lambda state: {"summary": "fixed the thing"})
    builder.add_node("accept", lambda state: {"accepted": True})
    builder.add_edge(START, "triage")
    builder.add_edge("triage", "start")
    builder.add_edge("start", "submit")
    builder.add_edge("submit", "accept")
    builder.add_edge("accept", END)
    return builder.compile(checkpointer=checkpointer)


def run_langgraph(n_tasks: int, db: Path, durability: str) -> dict[str, float]:
    """Invoke the graph once per task (distinct ``thread_id``); time only the invocations."""
    # check_same_thread=False as in SqliteSaver's own docs: with durability="async" the checkpoints are
    # written from a background thread (SqliteSaver serialises access with a lock).
    conn = sqlite3.connect(str(db), check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # SqliteSaver.setup() sets this too
        conn.execute("PRAGMA synchronous=NORMAL")  # as Roster; see module docstring
        saver = SqliteSaver(conn)
        saver.setup()
        graph = build_graph(saver)
        # One untimed warm-up invocation (first-run compile caches), on its own thread_id, excluded below.
        graph.invoke({}, {"configurable": {"thread_id": "warmup"}}, durability=durability)
        latencies: list[float] = []
        started = time.perf_counter()
        for i in range(n_tasks):
            t0 = time.perf_counter()
            final = graph.invoke({}, {"configurable": {"thread_id": f"task-{i}"}}, durability=durability)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        assert final == {"severity": "high", "assignee": "worker", "summary": "fixed the thing", "accepted": True}, final
        # The unit is steps (node executions), not checkpoints: LangGraph writes more than one checkpoint per
        # step - an "input" checkpoint when a thread starts, one after the START step and one after each node
        # (6 per task here), plus the node's pending writes in a separate table, each put a commit of its own.
        # Counted from the database rather than assumed, so a LangGraph change shows up in the output.
        checkpoints = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id != 'warmup'").fetchone()[0]
        writes = conn.execute("SELECT count(*) FROM writes WHERE thread_id != 'warmup'").fetchone()[0]
    finally:
        conn.close()
    latencies.sort()
    steps = n_tasks * STEPS_PER_TASK
    return {
        "steps": steps,
        "seconds": elapsed,
        "per_second": steps / elapsed,
        "p50_task_ms": latencies[len(latencies) // 2] * 1000,
        "checkpoints": checkpoints,
        "writes": writes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--batch", type=int, default=100, help="transitions per commit in Roster's batch mode")
    args = parser.parse_args()
    if SqliteSaver is None:
        print("LangGraph is not installed; this comparison is bench-only and needs it in the venv:\n"
              "    .venv/bin/pip install langgraph langgraph-checkpoint-sqlite\n"
              "Skipping.")
        return

    from importlib.metadata import version
    print(f"langgraph {version('langgraph')}, langgraph-checkpoint-sqlite {version('langgraph-checkpoint-sqlite')}, "
          f"SQLite {sqlite3.sqlite_version}; {args.tasks} tasks x {STEPS_PER_TASK} steps")
    with tempfile.TemporaryDirectory() as tmp:
        lg = {d: run_langgraph(args.tasks, Path(tmp) / f"langgraph-{d}.db", d) for d in ("sync", "async")}
        single = transitions.run(args.tasks, Path(tmp) / "roster-single.db", batch=0)
        batch = transitions.run(args.tasks, Path(tmp) / "roster-batch.db", batch=args.batch)

    for d, r in lg.items():
        label = f"langgraph {d}"
        print(f"{label:>18}: {r['steps']} steps in {r['seconds']:.2f} s = {r['per_second']:,.0f} steps/s, "
              f"p50 {r['p50_task_ms']:.3f} ms per task ({r['checkpoints'] / r['steps']:.2f} checkpoints "
              f"+ {r['writes'] / r['steps']:.2f} writes rows per step)")
    for label, r in (("roster single", single), (f"roster batch {args.batch}", batch)):
        print(f"{label:>18}: {r['transitions']} transitions in {r['seconds']:.2f} s = {r['per_second']:,.0f}/s, "
              f"p50 {r['p50_ms']:.3f} ms per transition (audit chain of {r['audit_events_verified']} verified)")
    for d in ("sync", "async"):
        base = lg[d]["per_second"]
        print(f"ratio vs langgraph {d:>5}: roster single / langgraph = {single['per_second'] / base:.2f}x, "
              f"roster batch / langgraph = {batch['per_second'] / base:.2f}x")


if __name__ == "__main__":
    main()
