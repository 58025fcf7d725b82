"""Idle agents cost nothing: N registered always-on agents with no work, dispatched for a while.

Builds a company of ``--agents`` agents (default 1,000), each a bounded mutator with a ``program``
runner and a transition it could take, but no tasks; then runs the dispatcher's loop (1 s poll, as
``roster up``) for ``--seconds`` (default 60). Reports the runner calls (a model runner would spend
tokens on each: must be 0), the dispatcher's CPU share of one core (target < 5%), cycles run, and the
peak RSS. CPU is this process's user+system time over wall time, measured after the first cycle (which
compiles the policies and warms the decision cache; reported on its own).

Usage: python bench/idle.py [--agents N] [--seconds S]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from roster.runtime.dispatcher import Dispatcher
from roster.runtime.runners import RunResult
from roster.specfile import parse_spec
from roster.store import Store


class CountingRunner:
    """Stands in for a model runner: counts how often it is woken."""

    kind = "program"

    def __init__(self) -> None:
        self.calls = 0

    def run(self, brief) -> RunResult:  # noqa: ANN001
        self.calls += 1
        return RunResult()


def spec_text(agents: int) -> str:
    lines = ["company: idle", "workflows:", "  ticket:", "    states: [new, done]", "    initial: new",
             "    transitions:", "      close: {from: new, to: done, by: [agent]}", "agents:"]
    lines += [f"  a{i:04d}: {{tier: bounded-mutator, runner: {{kind: program, callable: 'json:dumps'}}}}"
              for i in range(agents)]
    lines += ["humans:", "  lead: {}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{Path(tmp) / 'idle.db'}")
        store.apply(parse_spec(spec_text(args.agents)), applied_by="lead")
        company = store.company("idle")
        runner = CountingRunner()
        dispatcher = Dispatcher(company, workdir=Path(tmp),
                                runners={f"a{i:04d}": runner for i in range(args.agents)})
        t0, c0 = time.perf_counter(), time.process_time()
        dispatcher.cycle()
        warmup_wall, warmup_cpu = time.perf_counter() - t0, time.process_time() - c0
        cycles = 0
        t0, c0 = time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < args.seconds:
            if not dispatcher.cycle():
                cycles += 1
                time.sleep(1.0)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        store.close()
    print(f"{args.agents} idle agents for {wall:.1f} s: {cycles} cycles, runner calls {runner.calls} (must be 0), "
          f"dispatcher CPU {cpu / wall:.2%} of one core ({cpu / max(cycles, 1) * 1000:.1f} ms a cycle), "
          f"peak RSS {rss_mib:.0f} MiB; first cycle (policies compiled, cache warmed): {warmup_wall:.2f} s wall, "
          f"{warmup_cpu:.2f} s CPU")


if __name__ == "__main__":
    main()
