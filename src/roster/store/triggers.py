"""Named events and the state of each agent's triggers, so that wake-ups survive restarts: a schedule
does not fire twice for one slot, an event wakes an agent once, and a condition watcher fires when its
condition starts to hold, not on every cycle while it holds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select

from roster.errors import ContractViolation, Denied, NotFound, PayloadTooLarge, UsageError
from roster.kernel.spec import TaskCondition
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase
from roster.store.schema import events, tasks, trigger_state

MAX_EVENT_BYTES = 16_384
"""Largest event payload, as compact JSON (16 KiB)."""
_REFUSALS = (ContractViolation, NotFound, UsageError, Denied, PayloadTooLarge)


@dataclass(frozen=True)
class Event:
    id: int
    name: str
    data: Any
    emitted_by: str
    created_at: str


@dataclass(frozen=True)
class TriggerState:
    last_fired_at: str | None
    last_event_id: int
    holding: bool


class TriggerVerbs(CompanyBase):
    """Events and trigger state (mixed into ``CompanyStore``)."""

    def emit_event(self, name: str, *, actor: ActorRef, data: Any = None) -> Event:
        """Emit a named event (``roster emit``): agents whose ``event`` trigger names it wake once. Any
        active principal of the company may emit. Raises :class:`PayloadTooLarge` past 16 KiB."""
        payload = json.dumps(data if data is not None else {}, sort_keys=True, separators=(",", ":"))
        try:
            if len(payload.encode()) > MAX_EVENT_BYTES:
                raise PayloadTooLarge(f"event '{name}'", len(payload.encode()), MAX_EVENT_BYTES)
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                who = self._actor(cache, actor)
                now = self.store.now()
                event_id = conn.execute(insert(events), {"company_id": self.company, "name": name, "data": payload,
                                                         "emitted_by": who.handle, "created_at": now}
                                        ).inserted_primary_key[0]
                audit.append(conn, head, ts=now, principal=who.handle, action="event.emit", subject=f"event:{name}",
                             data={"id": event_id, "data": json.loads(payload)})
                audit.save_head(conn, head)
        except _REFUSALS as exc:
            self._audit_rejection(actor, "event.emit", f"event:{name}", exc, {})
            raise
        return Event(event_id, name, json.loads(payload), who.handle, now)

    def events_after(self, name: str, after_id: int, *, limit: int = 100) -> list[Event]:
        """Events called ``name`` with an id above ``after_id``, oldest first, at most ``limit``."""
        with self.store.read() as conn:
            rows = conn.execute(select(events).where(events.c.company_id == self.company, events.c.name == name,
                                                     events.c.id > after_id).order_by(events.c.id).limit(limit))
            return [Event(r.id, r.name, json.loads(r.data), r.emitted_by, r.created_at) for r in rows]

    def latest_event_id(self) -> int:
        """The id of the company's newest event (0 when none was emitted)."""
        with self.store.read() as conn:
            return conn.scalar(select(func.coalesce(func.max(events.c.id), 0)).where(
                events.c.company_id == self.company)) or 0

    def count_tasks(self, condition: TaskCondition) -> int:
        """How many tasks match a condition watcher's ``tasks`` predicate (scoped to this company)."""
        query = select(func.count()).select_from(tasks).where(tasks.c.company_id == self.company,
                                                             tasks.c.workflow == condition.workflow)
        if condition.states:
            query = query.where(tasks.c.state.in_(condition.states))
        with self.store.read() as conn:
            return conn.scalar(query) or 0

    def trigger_states(self, agent: str) -> dict[str, TriggerState]:
        """What each of ``agent``'s triggers has seen, by trigger key (see :meth:`save_trigger_state`)."""
        with self.store.read() as conn:
            rows = conn.execute(select(trigger_state).where(trigger_state.c.company_id == self.company,
                                                            trigger_state.c.agent == agent))
            return {r.trigger: TriggerState(r.last_fired_at, r.last_event_id, bool(r.holding)) for r in rows}

    def save_trigger_state(self, agent: str, key: str, state: TriggerState) -> None:
        """Save what trigger ``key`` of ``agent`` has seen (its last firing, event id, hold), replacing
        what was saved before: one upsert."""
        changed = ("last_fired_at", "last_event_id", "holding")
        values = {"company_id": self.company, "agent": agent, "trigger": key, "last_fired_at": state.last_fired_at,
                  "last_event_id": state.last_event_id, "holding": state.holding}
        with self.store.write() as conn:
            conn.execute(self.store.dialect.upsert(trigger_state, values, key=("company_id", "agent", "trigger"),
                                                   update=changed))
