"""Where an agent's time goes: working, blocked, waiting, watching or idle. Pure: no I/O.

Each state is a list of intervals (from recorded runs and state changes; see
:mod:`roster.store.presence`). Where they overlap, the first of :data:`STATES` wins: a run in flight is
working even while a goal is armed; a paused agent is blocked even with an approval pending. Time
covered by none of them is idle. :func:`time_in_states` splits a window into the five, in seconds.

An agent is **around the clock** over a window when it was working or watching for at least
:data:`ALWAYS_ON_SHARE` of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

STATES = ("working", "blocked", "waiting", "watching", "idle")
"""The states, highest precedence first (``idle`` is what no interval covers)."""
ALWAYS_ON_SHARE = 0.95
"""The share of a window an agent must spend working or watching to count as around the clock."""

Interval = tuple[datetime, datetime]


def time_in_states(start: datetime, end: datetime,
                   intervals: Mapping[str, Sequence[Interval]]) -> dict[str, float]:
    """Seconds of [``start``, ``end``) in each of :data:`STATES`. ``intervals`` maps a state (one of the
    first four) to its intervals, which may overlap one another, reach outside the window, or be empty.
    Raises :class:`ValueError` for an unknown state."""
    unknown = set(intervals) - set(STATES[:-1])
    if unknown:
        raise ValueError(f"unknown presence state(s) {sorted(unknown)}; states: {', '.join(STATES[:-1])}")
    edges: list[tuple[datetime, int, str]] = []  # a sweep: +1 where an interval opens, -1 where it closes
    for state, spans in intervals.items():
        for a, b in spans:
            a, b = max(a, start), min(b, end)
            if b > a:
                edges += [(a, 1, state), (b, -1, state)]
    edges.sort(key=lambda e: (e[0], e[1]))
    open_ = dict.fromkeys(STATES[:-1], 0)
    seconds = dict.fromkeys(STATES, 0.0)
    at = start
    for when, step, state in edges:
        if when > at:
            current = next((s for s in STATES[:-1] if open_[s] > 0), "idle")
            seconds[current] += (when - at).total_seconds()
            at = when
        open_[state] += step
    seconds[next((s for s in STATES[:-1] if open_[s] > 0), "idle")] += (end - at).total_seconds()
    return seconds


def always_on(seconds: Mapping[str, float]) -> bool:
    """Whether time split as ``seconds`` (from :func:`time_in_states`) was at least
    :data:`ALWAYS_ON_SHARE` working or watching."""
    total = sum(seconds.values())
    return total > 0 and (seconds.get("working", 0.0) + seconds.get("watching", 0.0)) / total >= ALWAYS_ON_SHARE
