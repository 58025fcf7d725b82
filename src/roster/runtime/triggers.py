"""Triggers besides task arrival: schedules (``every``, ``cron``), named events and condition watchers;
and each agent's reflection schedule (:class:`Reflections`).

All are evaluated without any model, each cycle, from state kept in the store (``trigger_state``), so a
restart neither loses nor repeats a wake-up:

- ``every: 10m`` fires when it never fired or the interval has passed since it last did;
- ``cron: "0 2 * * *"`` (UTC) fires when a slot has come since it last fired; the first evaluation only
  sets the baseline, so starting ``roster up`` does not fire a slot from the past;
- ``event: new-commit`` fires once for all events of that name emitted since it last fired (their
  payloads go in the brief: many events, one run);
- ``when: {tasks: {workflow, states, min}}`` or ``when: {command: ..., timeout: s}`` fires when the
  condition starts to hold (edge-triggered), not on every cycle while it holds. A command holds when
  it exits 0 within its timeout.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from croniter import croniter

from roster.kernel.spec import Trigger, duration_seconds
from roster.runtime.processes import run_in_session
from roster.store import CompanyStore
from roster.store.store import format_ts
from roster.store.triggers import TriggerState


@dataclass
class Fired:
    """A trigger that fired this cycle, and the state to save once its run is over."""

    key: str
    reason: str
    next_state: TriggerState
    events: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"trigger": self.key, "reason": self.reason, "events": self.events}


class Triggers:
    """Evaluates an agent's triggers against the store's clock and the saved trigger state."""

    def __init__(self, company: CompanyStore, *, workdir: Path) -> None:
        self.company = company
        self.workdir = workdir

    def fired(self, agent: str, triggers: list[Trigger]) -> list[Fired]:
        """The triggers of ``agent`` that fire now. Conditions that stopped holding are saved at once."""
        now = self.company.store.clock()
        stamp = format_ts(now)
        states = self.company.trigger_states(agent)
        fired = []
        for trigger in triggers:
            key = trigger.key()
            state = states.get(key, TriggerState(None, 0, False))
            result = self._evaluate(trigger, state, now, stamp)
            if isinstance(result, Fired):
                fired.append(result)
            elif result is not None:  # state to keep without a run (a baseline, a condition that let go)
                self.company.save_trigger_state(agent, key, result)
        return fired

    def commit(self, agent: str, fired: list[Fired]) -> None:
        """Save the state of triggers whose run is over, whatever its outcome (no double wake-ups)."""
        for item in fired:
            self.company.save_trigger_state(agent, item.key, item.next_state)

    def _evaluate(self, trigger: Trigger, state: TriggerState, now: datetime, stamp: str) -> Fired | TriggerState | None:
        key = trigger.key()
        if trigger.every is not None:
            due = state.last_fired_at is None or (
                now - datetime.fromisoformat(state.last_fired_at)).total_seconds() >= duration_seconds(trigger.every)
            return Fired(key, f"every {trigger.every}", TriggerState(stamp, state.last_event_id, False)) if due else None
        if trigger.cron is not None:
            if state.last_fired_at is None:
                return TriggerState(stamp, state.last_event_id, False)  # baseline: no slot from the past
            slot = croniter(trigger.cron, datetime.fromisoformat(state.last_fired_at)).get_next(datetime)
            if slot <= now:
                return Fired(key, f"cron '{trigger.cron}' slot {format_ts(slot)}",
                             TriggerState(stamp, state.last_event_id, False))
            return None
        if trigger.event is not None:
            if state.last_fired_at is None and state.last_event_id == 0:
                # First look: start from now, so old events do not all wake the agent at once.
                return TriggerState(stamp, self.company.latest_event_id(), False)
            new = self.company.events_after(trigger.event, state.last_event_id)
            if not new:
                return None
            return Fired(key, f"{len(new)} '{trigger.event}' event(s)", TriggerState(stamp, new[-1].id, False),
                         [{"id": e.id, "name": e.name, "data": e.data, "emitted_by": e.emitted_by,
                           "at": e.created_at} for e in new])
        assert trigger.when is not None
        holds = self._holds(trigger)
        if holds and not state.holding:
            return Fired(key, "condition started to hold", TriggerState(stamp, state.last_event_id, True))
        if not holds and state.holding:
            return TriggerState(state.last_fired_at, state.last_event_id, False)
        return None

    def _holds(self, trigger: Trigger) -> bool:
        when = trigger.when
        assert when is not None
        if when.tasks is not None:
            return self.company.count_tasks(when.tasks) >= when.tasks.min
        try:
            return run_in_session(shlex.split(when.command or "false"), cwd=self.workdir,
                                  timeout=when.timeout).returncode == 0
        except subprocess.TimeoutExpired:
            return False


class Reflections:
    """When each agent's reflection is due: a slot of its cron expression (``reflect:`` in the spec, see
    :func:`roster.kernel.plans.reflection_cron`) has come since it last reflected. The state is kept in
    ``trigger_state`` under the agent, key ``reflect:<cron>``; as for a ``cron`` trigger, the first look
    only sets the baseline. The next slot once read is kept in memory, so an agent whose slot has not
    come costs no read: a thousand agents with missions cost nothing between nights."""

    def __init__(self, company: CompanyStore) -> None:
        self.company = company
        self._next: dict[tuple[str, str], datetime] = {}
        self._asked: list[tuple[str, str]] = []
        self._earliest: datetime | None = None
        """The soonest next slot of the agents last asked about, once all are known: before it, none is due."""

    def due_many(self, schedules: list[tuple[str, str]], now: datetime) -> dict[str, Fired]:
        """The reflections due now among ``schedules`` (``(agent, cron)`` pairs), by agent. Before the
        soonest slot of the same schedules, answered without looking at any one of them."""
        if self._earliest is not None and now < self._earliest and schedules == self._asked:
            return {}
        due = {}
        for agent, cron in schedules:
            fired = self.due(agent, cron, now)
            if fired is not None:
                due[agent] = fired
        known = [self._next.get((agent, f"reflect:{cron}")) for agent, cron in schedules]
        self._asked = schedules
        self._earliest = min(known) if known and not due and all(k is not None for k in known) else None  # type: ignore[type-var]
        return due

    def due(self, agent: str, cron: str, now: datetime) -> Fired | None:
        """The reflection of ``agent`` if a slot of ``cron`` has come (commit it with :meth:`done`)."""
        key = f"reflect:{cron}"
        known = self._next.get((agent, key))
        if known is not None and now < known:
            return None
        state = self.company.trigger_states(agent).get(key)
        if state is None or state.last_fired_at is None:
            self.company.save_trigger_state(agent, key, TriggerState(format_ts(now), 0, False))
            self._next[(agent, key)] = croniter(cron, now).get_next(datetime)
            return None
        slot = croniter(cron, datetime.fromisoformat(state.last_fired_at)).get_next(datetime)
        if slot > now:
            self._next[(agent, key)] = slot
            return None
        return Fired(key, f"reflection: cron '{cron}' slot {format_ts(slot)}", TriggerState(format_ts(now), 0, False))

    def done(self, agent: str, fired: Fired) -> None:
        """Record that the reflection ``fired`` ran (whatever its outcome): the next is the next slot."""
        self.company.save_trigger_state(agent, fired.key, fired.next_state)
        self._earliest = None
        cron = fired.key.partition(":")[2]
        self._next[(agent, fired.key)] = croniter(cron, datetime.fromisoformat(fired.next_state.last_fired_at
                                                                                or "")).get_next(datetime)


class Periodic:
    """The runtime's own periodic jobs (memory consolidation, KPIs measured on a schedule): whether each
    is due by its ``every`` (a duration such as ``1h``), from when it last ran, kept in ``trigger_state``
    under ``owner`` so that a restart does not run a job twice. A due time once read is kept in memory:
    a job that is not due costs no read. ``now`` is the store's clock (a timezone-aware datetime)."""

    def __init__(self, company: CompanyStore, owner: str) -> None:
        self.company, self.owner = company, owner
        self._next: dict[str, datetime] = {}

    def due(self, key: str, every: str, now: datetime) -> bool:
        """Whether job ``key`` should run at ``now``: it never ran, or ``every`` has passed since it did."""
        known = self._next.get(key)
        if known is not None and now < known:
            return False
        state = self.company.trigger_states(self.owner).get(key)
        if state is not None and state.last_fired_at is not None:
            next_run = datetime.fromisoformat(state.last_fired_at) + timedelta(seconds=duration_seconds(every))
            if now < next_run:
                self._next[key] = next_run
                return False
        return True

    def ran(self, key: str, every: str, now: datetime) -> None:
        """Record that job ``key`` ran at ``now`` (the time :meth:`due` was asked with)."""
        self.company.save_trigger_state(self.owner, key, TriggerState(format_ts(now), 0, False))
        self._next[key] = now + timedelta(seconds=duration_seconds(every))
