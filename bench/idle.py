"""Idle agents cost nothing: N registered always-on agents with no work, dispatched for a while.

Builds a company of ``--agents`` agents (default 1,000), each a bounded mutator with a ``program``
runner and a transition it could take, but no tasks; then runs the dispatcher's loop (1 s poll, as
``roster up``) for ``--seconds`` (default 60). Reports the runner calls (a model runner would spend
tokens on each: must be 0), the dispatcher's CPU share of one core (target < 5%), cycles run, and the
RSS. CPU is this process's user+system time over wall time, measured after the first cycle (which
compiles each agent's policies and warms the decision cache; reported on its own, wall and CPU).

A first cycle is paid again whenever the rights change (a new rights revision: new policies, an empty
decision cache), so by default the bench then does it twice more, each followed by another idle phase
of ``--seconds``: after re-applying a changed spec (one more tool), and after pausing one agent. Each
phase is reported on its own line; ``--after none`` skips them. The first cycle should scale linearly
with the agents: 10,000 within 20 times the 1,000-agent figure.

Usage: python bench/idle.py [--agents N] [--seconds S] [--after apply,pause|none]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from roster.runtime.dispatcher import Dispatcher
from roster.runtime.runners import RunResult
from roster.specfile import parse_spec
from roster.store import Store

PHASES = ("apply", "pause")


class CountingRunner:
    """Stands in for a model runner: counts how often it is woken."""

    kind = "program"

    def __init__(self) -> None:
        self.calls = 0

    def run(self, brief) -> RunResult:  # noqa: ANN001
        self.calls += 1
        return RunResult()


def spec_text(agents: int, tools: int = 0) -> str:
    lines = ["company: idle", "workflows:", "  ticket:", "    states: [new, done]", "    initial: new",
             "    transitions:", "      close: {from: new, to: done, by: [agent]}", "agents:"]
    lines += [f"  a{i:04d}: {{tier: bounded-mutator, runner: {{kind: program, callable: 'json:dumps'}}}}"
              for i in range(agents)]
    lines += ["humans:", "  lead: {}"]
    if tools:
        lines += ["tools:", *(f"  probe{i}: {{command: 'true'}}" for i in range(tools))]
    return "\n".join(lines) + "\n"


def rss_mib() -> float:
    """This process's resident set now (Linux), in MiB; the peak where /proc is not there."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def first_cycle(dispatcher: Dispatcher) -> tuple[float, float]:
    """Wall and CPU seconds of one dispatcher cycle."""
    t0, c0 = time.perf_counter(), time.process_time()
    dispatcher.cycle()
    return time.perf_counter() - t0, time.process_time() - c0


def idle(dispatcher: Dispatcher, seconds: float) -> tuple[float, float, int]:
    """Run the dispatcher's loop for ``seconds``: wall, CPU seconds and the idle cycles run."""
    cycles = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        if not dispatcher.cycle():
            cycles += 1
            time.sleep(1.0)
    return time.perf_counter() - t0, time.process_time() - c0, cycles


def report(agents: int, phase: str, first: tuple[float, float], idled: tuple[float, float, int]) -> str:
    (fwall, fcpu), (wall, cpu, cycles) = first, idled
    return (f"{agents} agents, {phase}: first cycle {fwall:.2f} s wall, {fcpu:.2f} s CPU; then idle "
            f"{wall:.1f} s: {cycles} cycles, CPU {cpu / wall:.2%} of one core "
            f"({cpu / max(cycles, 1) * 1000:.1f} ms a cycle), RSS {rss_mib():.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--after", default=",".join(PHASES),
                        help="comma-separated phases after the start: apply (a changed spec), pause (one "
                             "agent paused); 'none' for none")
    args = parser.parse_args()
    after = [] if args.after in ("", "none") else args.after.split(",")
    unknown = set(after) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(sorted(unknown))}; expected {', '.join(PHASES)} or none")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{Path(tmp) / 'idle.db'}")
        store.apply(parse_spec(spec_text(args.agents)), applied_by="lead")
        company = store.company("idle")
        runner = CountingRunner()
        dispatcher = Dispatcher(company, workdir=Path(tmp),
                                runners={f"a{i:04d}": runner for i in range(args.agents)})
        first = first_cycle(dispatcher)
        idled = idle(dispatcher, args.seconds)
        print(report(args.agents, "start", first, idled), flush=True)
        start_first, start_idle = first, idled
        for n, phase in enumerate(after, start=1):
            if phase == "apply":
                store.apply(parse_spec(spec_text(args.agents, tools=n)), applied_by="lead")
                label = "after a spec change (re-applied)"
            else:
                company.set_status(f"a{args.agents - n:04d}", "paused", actor="lead")
                label = "after pausing one agent"
            print(report(args.agents, label, first_cycle(dispatcher), idle(dispatcher, args.seconds)), flush=True)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        store.close()
    (fwall, fcpu), (wall, cpu, cycles) = start_first, start_idle
    print(f"{args.agents} idle agents for {wall:.1f} s: {cycles} cycles, runner calls {runner.calls} (must be 0), "
          f"dispatcher CPU {cpu / wall:.2%} of one core ({cpu / max(cycles, 1) * 1000:.1f} ms a cycle), "
          f"peak RSS {peak_mib:.0f} MiB; first cycle (policies compiled, cache warmed): {fwall:.2f} s wall, "
          f"{fcpu:.2f} s CPU")


if __name__ == "__main__":
    main()
