"""Dispatcher throughput: three program agents drain T tasks through a 3-step workflow.

Each of the 3 steps (``triage -> start -> finish``) belongs to its own agent, and each agent's runner is
an in-process callable that answers at once, so what is measured is the runtime's own cost per run:
claim the lease, record the run, build the brief, apply the transition with the fencing token, release,
record the outcome, check budgets. Reports tasks per second and the dispatcher's overhead per run in
milliseconds: wall time of the cycles minus the time spent inside the runners, over the number of runs
(and the same for CPU time, user + system, which a busy shared machine disturbs less). Target from
issue 4: under 2 ms per run. The database is a SQLite file under the temporary directory (``TMPDIR``).

Usage: python bench/throughput.py [--tasks T] [--url DATABASE_URL]   (default 10,000 tasks: the issue's figure)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from roster.runtime.dispatcher import Dispatcher
from roster.runtime.runners import RunResult
from roster.specfile import parse_spec
from roster.store import Store

SPEC = """
company: drain
workflows:
  job:
    states: [new, triaged, started, done]
    initial: new
    fields: {note: {type: string}}
    transitions:
      triage: {from: new,     to: triaged, by: [triager], writes: [note]}
      start:  {from: triaged, to: started, by: [starter]}
      finish: {from: started, to: done,    by: [finisher]}
agents:
  triager: {tier: bounded-mutator}
  starter: {tier: bounded-mutator}
  finisher: {tier: bounded-mutator}
humans:
  lead: {}
"""

ANSWERS = {"triager": {"transition": "triage", "writes": {"note": "looked at it"}},
           "starter": {"transition": "start"}, "finisher": {"transition": "finish"}}


class Instant:
    """A runner that answers at once, and measures the time spent inside it."""

    kind = "program"

    def __init__(self, answer: dict) -> None:
        self.answer = RunResult.parse(answer)
        self.seconds = 0.0
        self.calls = 0

    def run(self, brief) -> RunResult:  # noqa: ANN001
        t0 = time.perf_counter()
        self.calls += 1
        result = self.answer
        self.seconds += time.perf_counter() - t0
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--url", help="an empty database to use instead of a new SQLite file, e.g. "
                                      "postgresql+psycopg://root@127.0.0.1/test?options=-csearch_path%%3Dbench")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(args.url or f"sqlite:///{Path(tmp) / 'drain.db'}")
        store.apply(parse_spec(SPEC), applied_by="lead")
        company = store.company("drain")
        for i in range(args.tasks):
            company.create_task(workflow="job", title=f"job {i}", actor="lead")
        runners = {agent: Instant(answer) for agent, answer in ANSWERS.items()}
        dispatcher = Dispatcher(company, workdir=Path(tmp), runners=runners)
        t0, cpu0 = time.perf_counter(), time.process_time()
        while True:
            if not dispatcher.cycle():
                break
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        runs = sum(r.calls for r in runners.values())
        inside = sum(r.seconds for r in runners.values())
        done = len(company.list_tasks(state="done", limit=args.tasks + 1))
        checked, broken = company.verify_audit()
        store.close()
    assert done == args.tasks and broken is None, (done, broken)
    print(f"{args.tasks} tasks x 3 steps = {runs} runs in {wall:.1f} s: {args.tasks / wall:.1f} tasks/s, "
          f"{runs / wall:.0f} runs/s; dispatcher overhead {(wall - inside) / runs * 1000:.2f} ms per run "
          f"(target < 2 ms), CPU {(cpu - inside) / runs * 1000:.2f} ms per run; audit chain of {checked} events verified")


if __name__ == "__main__":
    main()
