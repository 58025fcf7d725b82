"""Which agent of a pool gets a task: the selection policy, a named hook of the dispatcher.

Several agents may take the same transition (a pool). For each task the dispatcher hands out, it asks
the policy to pick one of the agents the task is offered to that have room for another run, or to leave
the task for now. The spec's ``fitness.selection`` names the policy (:class:`FromSpec`, the default):

- :class:`LeastLoaded` (``least-loaded``) spreads the work;
- :class:`FitnessWeighted` (``fitness-weighted``) gives each agent of the pool a share of its tasks in
  proportion to its reputation on the workflow (what stuck, 30 days: see docs/fitness.md), keeps the
  ``fitness.exploration`` share for agents without enough evidence yet, and leaves a task for a busy
  fitter agent rather than over-serve a weaker one.

Any other policy implements :class:`SelectionPolicy` and is passed as ``Dispatcher(..., selection=...)``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Protocol

from roster.kernel.fitness import median
from roster.runtime.reputation import Reputations
from roster.store.runs import Candidate


class SelectionPolicy(Protocol):
    """Which agent of a pool gets a task: ``choose(task, agents, load, offered)`` picks one of ``agents``
    (each offered the task, each with room for another run; never empty), or ``None`` to leave the task
    for now. ``offered`` is every agent the task is offered to, busy or not; ``load`` is each agent's runs
    in flight, counting those started this cycle. ``started(agent)`` is told of every run started."""

    name: str

    def choose(self, task: Candidate, agents: list[str], load: Mapping[str, int],
               offered: Sequence[str] = ()) -> str | None: ...

    def started(self, agent: str) -> None: ...


class LeastLoaded:
    """The default selection policy: the agent with the fewest runs in flight; among equals, the one this
    dispatcher started the fewest runs for (so a pool takes turns), then by handle."""

    name = "least-loaded"

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()

    def choose(self, task: Candidate, agents: list[str], load: Mapping[str, int],
               offered: Sequence[str] = ()) -> str:
        return min(agents, key=lambda a: (load.get(a, 0), self.runs[a], a))

    def started(self, agent: str) -> None:
        self.runs[agent] += 1


class FitnessWeighted:
    """Fitness-weighted selection: each agent of the pool a task is offered to has a *target share* of
    the pool's tasks on the workflow, and the task goes to the agent furthest below its share.

    - An agent with at least ``fitness.min_outcomes`` settled outcomes on the workflow is *established*;
      its weight is its reputation score (the Wilson lower bound of its success rate, 30 days), times
      the pool's median cost per success over its own (clamped to 0.5..2) when every cost is known, and
      never under a twentieth of the best weight, so a weak agent keeps a trickle of evidence.
    - Agents without enough evidence share ``fitness.exploration`` of the tasks equally; the established
      share the rest by weight. With nobody established, everyone shares equally.
    - Counts of tasks handed out decay by 2% per pick, so shares follow reputation as it moves.
    - If the furthest-below agent is busy, the task waits for it (``None``) while every agent with room
      is already above its share: weaker agents lose volume rather than take the fitter one's share.

    Reputations come from a :class:`~roster.runtime.reputation.Reputations` board (read at most once a
    minute).
    """

    name = "fitness-weighted"

    def __init__(self, board: Reputations) -> None:
        self.board = board
        self.handed: dict[str, Counter[str]] = defaultdict(Counter)
        """Per workflow: the (decayed) tasks handed to each agent."""

    def shares(self, workflow: str, offered: Sequence[str]) -> dict[str, float]:
        """Each offered agent's target share (0..1, summing to 1) of the pool's tasks on ``workflow``."""
        reps = {a: self.board.of(a, workflow) for a in offered}
        established = [a for a in offered if reps[a].get("enough")]
        new = [a for a in offered if a not in established]
        if not established:
            return {a: 1 / len(offered) for a in offered}
        weights = {a: float(reps[a]["score"]) for a in established}
        costs = {a: reps[a].get("usd_per_success") for a in established}
        if all(c for c in costs.values()):
            pool = median(list(costs.values()))  # type: ignore[arg-type]
            weights = {a: w * min(2.0, max(0.5, pool / costs[a])) for a, w in weights.items()}  # type: ignore[operator]
        floor = max(weights.values()) / 20 or 1.0
        weights = {a: max(w, floor) for a, w in weights.items()}
        explore = self.board.exploration if new else 0.0
        total = sum(weights.values())
        found = {a: (1 - explore) * w / total for a, w in weights.items()}
        found.update({a: explore / len(new) for a in new})
        return found

    def choose(self, task: Candidate, agents: list[str], load: Mapping[str, int],
               offered: Sequence[str] = ()) -> str | None:
        self.board.refresh()
        pool = sorted(set(offered) | set(agents))
        if len(pool) == 1:
            return agents[0]
        shares = self.shares(task.workflow, pool)
        handed = self.handed[task.workflow]
        total = sum(handed[a] for a in pool) + 1

        def deficit(agent: str) -> float:
            return shares[agent] * total - handed[agent]

        best = max(pool, key=lambda a: (deficit(a), -load.get(a, 0), a))
        pick = max(agents, key=lambda a: (deficit(a), -load.get(a, 0), a))
        if best not in agents and deficit(pick) < 0:
            return None  # the furthest-below agent is busy, and every free one is over its share
        for a in handed:
            handed[a] *= 0.98
        handed[pick] += 1
        return pick

    def started(self, agent: str) -> None:
        """Nothing to count: shares are kept per task handed out (:attr:`handed`)."""


class FromSpec:
    """The default policy: the one the spec's ``fitness.selection`` names, as of the board's last read
    (so ``roster apply`` switches a running ``roster up`` within a minute)."""

    def __init__(self, board: Reputations) -> None:
        self.board = board
        self.least_loaded = LeastLoaded()
        self.fitness_weighted = FitnessWeighted(board)

    @property
    def name(self) -> str:
        return self.board.selection

    def choose(self, task: Candidate, agents: list[str], load: Mapping[str, int],
               offered: Sequence[str] = ()) -> str | None:
        self.board.refresh()
        if self.board.selection == FitnessWeighted.name:
            return self.fitness_weighted.choose(task, agents, load, offered)
        return self.least_loaded.choose(task, agents, load, offered)

    def started(self, agent: str) -> None:
        self.least_loaded.started(agent)
