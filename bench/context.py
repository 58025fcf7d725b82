"""Brief assembly is flat in history length: time and size of one brief for tasks with 10, 1,000 and
100,000 audit events, against the naive alternative of replaying the task's whole history as a transcript.

For each history length H, one task gets H real audit events (check results, hash-chained as usual) plus
a few memory entries and artifacts, and an earlier view by the agent so the brief carries a hand-off.
Then the brief is assembled ``--repeat`` times (median wall time, ms) and its size estimated in tokens
(runtime/context.py: UTF-8 bytes / 4). The naive transcript is every event of the task as compact JSON,
estimated the same way; the ratio is transcript tokens / brief tokens per wake-up.

Usage: python bench/context.py [--sizes 10,1000,100000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from roster.runtime.context import ContextAssembler, Wakeup, estimate_tokens
from roster.specfile import parse_spec
from roster.store import Store, audit

SPEC = """\
company: bench
workflows:
  fix-lint:
    states: [found, planned, done]
    initial: found
    fields:
      rule: {type: string}
      file: {type: string}
      spec: {type: string}
    transitions:
      plan: {from: found, to: planned, by: [planner], writes: [spec]}
      finish: {from: planned, to: done, by: [human]}
agents:
  planner: {tier: bounded-mutator, mission: "Turn each lint finding into a concrete spec."}
humans:
  lead: {}
"""


def build(store: Store, history: int) -> int:
    company = store.company("bench")
    task, _ = company.create_task(workflow="fix-lint", title="E501 line too long in parser.py", actor="lead",
                                  fields={"rule": "E501", "file": "parser.py"})
    company.record_artifact(task.id, "report", b"parser.py:10: E501 line too long\n" * 20, actor="lead")
    for i in range(12):
        company.remember(f"E501 fixes in parser modules need wrapping at 88 columns ({i})", actor="planner",
                         kind="lesson", confidence=0.5 + i / 40)
    with store.write() as conn:  # the agent saw the task once, early on
        head, _ = company._head_txn(conn)
        company.record_view_txn(conn, head, task.id, "planner")
        audit.save_head(conn, head)
    with store.write() as conn:  # the history: real chained audit events on the task, in one transaction
        head = audit.read_head(conn, "bench")
        for i in range(history):
            audit.append(conn, head, ts=store.now(), principal="lead", action="check.record",
                         subject=f"task:{task.id}", data={"name": f"lint-{i % 7}", "passed": i % 3 != 0,
                                                          "detail": f"run {i}: {i % 5} findings left"})
        audit.save_head(conn, head)
    company.record_artifact(task.id, "report", b"parser.py:10: E501 line too long\n" * 19, actor="lead")
    return task.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,100000")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for history in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.open(f"sqlite:///{Path(tmp) / 'bench.db'}", artifact_root=Path(tmp) / "artifacts")
            store.apply(parse_spec(SPEC), applied_by="lead")
            task_id = build(store, history)
            company = store.company("bench")
            assembler = ContextAssembler(company)
            task = company.get_task(task_id)
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                brief = assembler.brief("planner", task, Wakeup("bench", None))
                times.append((time.perf_counter() - started) * 1000)
            transcript = [json.dumps({"seq": e.seq, "at": e.ts, "by": e.principal, "action": e.action,
                                      "data": e.data}, separators=(",", ":"))
                          for e in company.history(task_id)]
            naive = estimate_tokens(transcript)
            tokens = brief.data["context"]["tokens"]
            rows.append((history, len(transcript), statistics.median(times), tokens, naive, naive / tokens))
            store.close()
    print(f"{'history':>9} {'events':>8} {'brief ms (p50)':>15} {'brief tokens':>13} {'transcript tokens':>18} "
          f"{'ratio':>8}")
    for history, events, ms, tokens, naive, ratio in rows:
        print(f"{history:>9,} {events:>8,} {ms:>15.2f} {tokens:>13,} {naive:>18,} {ratio:>8.1f}x")
    first, last = rows[0], rows[-1]
    print(f"brief time {last[0]:,} vs {first[0]:,} events: {last[2] / first[2]:.2f}x; "
          f"brief size: {last[3] / first[3]:.2f}x; transcript size: {last[4] / first[4]:.0f}x")


if __name__ == "__main__":
    main()
