"""Reputation as the runtime sees it: one company-wide table of (agent, workflow) reputations, read at
most once a minute and shared by the selection policy and the briefs.

Reading reputations means reading 30 days of runs (:meth:`~roster.store.fitness.FitnessVerbs.reputations_txn`),
so the dispatcher refreshes this board between cycles, in a read transaction of its own, never inside
a claim: a brief built in the claim's transaction only looks the figures up.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from roster.kernel.spec import CompanySpec
from roster.store.company import CompanyStore

PEERS_SHOWN = 5
"""Most peers a brief lists."""


class Reputations:
    """The board: ``refresh()`` reads again if ``refresh_seconds`` passed; ``of(agent, workflow)`` and
    ``peers(...)`` look up what the last read found; ``selection`` and ``exploration`` are the spec's
    ``fitness`` settings as of that read."""

    def __init__(self, company: CompanyStore, *, refresh_seconds: float = 60.0) -> None:
        self.company, self.refresh_seconds = company, refresh_seconds
        self.selection, self.exploration = "least-loaded", 0.1
        self._table: dict[tuple[str, str], dict[str, Any]] = {}
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def refresh(self, *, force: bool = False) -> None:
        """Read the spec's settings and every reputation again, in one read transaction, if the last read
        is older than ``refresh_seconds`` (or ``force``)."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._read_at < self.refresh_seconds:
                return
            with self.company.store.read() as conn:
                spec = self.company.current_txn(conn).spec
                assert spec is not None
                table = self.company.reputations_txn(conn, spec)
            self.selection, self.exploration = spec.fitness.selection, spec.fitness.exploration
            self._table, self._read_at = table, now

    def of(self, agent: str, workflow: str) -> dict[str, Any]:
        """``{"outcomes", "successes", "score", "success_rate", "usd_per_success", "enough"}`` of ``agent``
        on ``workflow``; ``{}`` without a record."""
        return self._table.get((agent, workflow), {})

    def peers(self, spec: CompanySpec, actors: dict[str, Any], workflow: str, exclude: str) -> list[dict[str, Any]]:
        """The other agents the spec lets take a transition of ``workflow`` (by role, ``by``), fittest
        first, at most :data:`PEERS_SHOWN`: ``[{"agent", "transitions", "reputation", "success_rate",
        "outcomes", "successes"}]``, for a brief to say who to delegate to or ask."""
        flow = spec.workflows.get(workflow)
        if flow is None:
            return []
        found = []
        for handle, agent in spec.agents.items():
            actor = actors.get(handle)
            if handle == exclude or actor is None:
                continue
            moves = sorted(n for n, t in flow.transitions.items() if actor.matches(t.by))
            if not moves:
                continue
            rep = self.of(handle, workflow)
            found.append({"agent": handle, "transitions": moves, "reputation": rep.get("score", 0.0),
                          "success_rate": rep.get("success_rate"), "outcomes": rep.get("outcomes", 0),
                          "successes": rep.get("successes", 0)})
        found.sort(key=lambda p: (-p["reputation"], p["agent"]))
        return found[:PEERS_SHOWN]
