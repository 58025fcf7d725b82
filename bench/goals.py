"""Armed goals and nightly reflections cost no model call between their times, and little CPU.

Three companies of ``--agents`` agents (default 1,000) in one SQLite store, side by side in one run: one
without goals or missions; one where every agent has an active goal on a one-hour cadence, checked
against a KPI; one where every agent has a mission, so it reflects nightly (its next slot, once read, is
kept in memory).

1. **The first cadence.** Every goal is due when set, so the goals company first runs one goal run per
   agent (the runner counts calls; a model runner would spend tokens on each). Reported: the goal runs,
   and the CPU per goal run (the turn, the run's bookkeeping, the brief with its goal, the spend, the
   KPI check before and after).
2. **Between cadences.** Both companies' dispatchers then cycle (1 s poll, as ``roster up``) for
   ``--seconds`` (default 30). Reported: runner calls in that phase (must be 0), and each company's
   dispatcher CPU per cycle, with their ratio. The goals company also has the first cadence's history
   (1,000 runs, memories, audit events), which the plain one has not, so the ratio is an upper bound;
   what the goals themselves add to a cycle is the query for due goals, timed on its own last (CPU per
   call, over 1,000 calls, none due). The missions company cycles beside them: its first cycle reads and
   saves each agent's reflection baseline; after it, runner calls must stay 0 until 02:00 UTC.
3. **One reflection.** ``--reflections`` (default 100) agents of the missions company reflect on demand,
   each briefed on its period and writing its plan's first version: CPU per reflection run.

Usage: python bench/goals.py [--agents N] [--seconds S]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from roster.kernel.goals import GoalBudget, GoalCheck
from roster.runtime.dispatcher import Dispatcher
from roster.runtime.runners import RunResult
from roster.specfile import parse_spec
from roster.store import Store


class CountingRunner:
    """Stands in for a model runner: counts how often it is woken, and files nothing."""

    kind = "program"

    def __init__(self) -> None:
        self.calls = 0

    def run(self, brief) -> RunResult:  # noqa: ANN001
        self.calls += 1
        if brief.data.get("reflection"):
            return RunResult(plan={"priorities": ["keep findings down"], "reason": "a first plan",
                                   "goals": [{"objective": "findings at most 5", "kpi": "findings<=5"}]})
        return RunResult(memories=[{"text": "looked at the findings"}])  # progress: the goal does not stall


def spec_text(company: str, agents: int, mission: bool = False) -> str:
    lines = [f"company: {company}", "workflows:", "  ticket:", "    states: [new, done]", "    initial: new",
             "    transitions:", "      close: {from: new, to: done, by: [agent]}",
             "kpis:", "  findings: {direction: down}", "agents:"]
    said = "mission: keep the findings down, " if mission else ""
    lines += [f"  a{i:04d}: {{{said}tier: bounded-mutator, runner: {{kind: program, callable: 'json:dumps'}}}}"
              for i in range(agents)]
    lines += ["humans:", "  lead: {}"]
    return "\n".join(lines) + "\n"


def idle(dispatcher: Dispatcher, seconds: float) -> tuple[float, float, int]:
    """Cycle for ``seconds`` (1 s apart): wall, CPU seconds and cycles."""
    cycles = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        dispatcher.cycle()
        cycles += 1
        time.sleep(1.0)
    return time.perf_counter() - t0, time.process_time() - c0, cycles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--reflections", type=int, default=100)
    args = parser.parse_args()
    handles = [f"a{i:04d}" for i in range(args.agents)]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{Path(tmp) / 'goals.db'}")
        dispatchers, runners = {}, {}
        for name in ("plain", "goals", "missions"):
            store.apply(parse_spec(spec_text(name, args.agents, mission=name == "missions")), applied_by="lead")
            company = store.company(name)
            runners[name] = CountingRunner()
            dispatchers[name] = Dispatcher(company, workdir=Path(tmp), max_runs=32,
                                           runners={h: runners[name] for h in handles})
            dispatchers[name].cycle()  # the first cycle compiles policies and warms caches
        company = store.company("goals")
        for handle in handles:
            company.set_goal(handle, "findings at most 5", actor="lead", check=GoalCheck.parse_kpi("findings<=5"),
                             budget=GoalBudget(runs=1000), every_seconds=3600)
        t0, c0 = time.perf_counter(), time.process_time()
        while runners["goals"].calls < args.agents:
            before = runners["goals"].calls
            dispatchers["goals"].cycle()
            if runners["goals"].calls == before:
                break
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        runs = runners["goals"].calls
        print(f"first cadence: {runs} goal runs of {args.agents} agents in {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"({cpu / max(runs, 1) * 1000:.1f} ms CPU a goal run, with its KPI checks)", flush=True)
        calls_before = sum(r.calls for r in runners.values())
        figures = {}
        for name in ("plain", "goals", "missions"):
            figures[name] = idle(dispatchers[name], args.seconds)
        calls = sum(r.calls for r in runners.values()) - calls_before
        for name in ("plain", "goals", "missions"):
            wall, cpu, cycles = figures[name]
            print(f"{name}: {cycles} cycles in {wall:.1f} s, CPU {cpu / max(cycles, 1) * 1000:.2f} ms a cycle, "
                  f"{cpu / wall:.2%} of one core", flush=True)
        per = {n: f[1] / max(f[2], 1) for n, f in figures.items()}
        print(f"between cadences: runner calls {calls} (must be 0); {args.agents} armed goals cost "
              f"{per['goals'] / per['plain']:.2f}x the CPU of a cycle without goals "
              f"(+{(per['goals'] - per['plain']) * 1000:.2f} ms a cycle); {args.agents} agents with missions "
              f"between nights cost {per['missions'] / per['plain']:.2f}x "
              f"({(per['missions'] - per['plain']) * 1000:+.2f} ms a cycle)")
        c0 = time.process_time()
        for _ in range(1000):
            company.due_goals(handles)
        query_ms = (time.process_time() - c0)
        print(f"the due-goals query with {args.agents} armed goals, none due: {query_ms:.3f} ms CPU a call")
        reflecting = dispatchers["missions"]
        c0 = time.process_time()
        for handle in handles[:args.reflections]:
            reflecting.reflect_once(handle)
        cpu = time.process_time() - c0
        written = sum(1 for h in handles[:args.reflections] if store.company("missions").plan(h, actor=None))
        print(f"reflection on demand: {written} plans written by {args.reflections} reflection runs, "
              f"{cpu / max(args.reflections, 1) * 1000:.1f} ms CPU a reflection (brief, run, plan contract, version)")
        for dispatcher in dispatchers.values():
            dispatcher.close()
        store.close()


if __name__ == "__main__":
    main()
