"""Which agent of a pool gets a task: the selection policy, a named hook of the dispatcher.

Several agents may take the same transition (a pool). For each task the dispatcher hands out, it asks
the policy to pick one of the agents the task is offered to that have room for another run. The
default, :class:`LeastLoaded`, spreads the work; a policy that routes more work to fitter agents (the
fitness issue) implements the same :class:`SelectionPolicy` and is passed as ``Dispatcher(...,
selection=...)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Protocol

from roster.store.runs import Candidate


class SelectionPolicy(Protocol):
    """Which agent of a pool gets a task: ``choose(task, agents, load)`` picks one of ``agents`` (each
    offered the task, each with room for another run; never empty). ``load`` is each agent's runs in
    flight, counting those started this cycle. ``started(agent)`` is told of every run started. The hook
    through which fitness will route more traffic to fitter agents."""

    name: str

    def choose(self, task: Candidate, agents: list[str], load: Mapping[str, int]) -> str: ...

    def started(self, agent: str) -> None: ...


class LeastLoaded:
    """The default selection policy: the agent with the fewest runs in flight; among equals, the one this
    dispatcher started the fewest runs for (so a pool takes turns), then by handle."""

    name = "least-loaded"

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()

    def choose(self, task: Candidate, agents: list[str], load: Mapping[str, int]) -> str:
        return min(agents, key=lambda a: (load.get(a, 0), self.runs[a], a))

    def started(self, agent: str) -> None:
        self.runs[agent] += 1
