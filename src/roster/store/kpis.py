"""KPI readings: each measurement of a KPI the spec defines, kept with its time, so a KPI can be shown as
before -> after and as a history.

A reading is recorded by the runtime (``actor=None``: the KPI's ``measure`` program, on its schedule
and after the transitions it names; recorded as ``system``) or by a human (``roster kpi record``).
Agents never record readings: a KPI is ground truth, measured, not self-reported. Every reading is
audited (``kpi.reading``); a refused one as ``kpi.reading.rejected``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, func, insert, select

from roster.errors import Denied, NotFound, UsageError
from roster.kernel.rights import Resource
from roster.store import audit
from roster.store.company_base import ActorRef, CompanyBase, CompanyCache
from roster.store.prepared import Prepared
from roster.store.schema import audit_events, kpi_readings

MAX_SOURCE_CHARS = 500
SYSTEM = "system"
"""Who the runtime's own measurements are recorded as."""


@dataclass(frozen=True)
class KpiReading:
    """One measurement: ``value`` in the KPI's ``unit``; ``measured_at`` ISO 8601 UTC; ``source`` says
    what prompted it (``schedule``, ``after merge of task 12``, a human's note)."""

    id: int
    kpi: str
    value: float
    measured_at: str
    recorded_by: str
    source: str


@dataclass(frozen=True)
class KpiSummary:
    """A KPI's first and latest readings (``None`` before any) and how many there are."""

    kpi: str
    first: KpiReading | None
    latest: KpiReading | None
    readings: int

    @property
    def change(self) -> float | None:
        """latest - first, in the KPI's unit (``None`` before two readings)."""
        if self.first is None or self.latest is None or self.first.id == self.latest.id:
            return None
        return self.latest.value - self.first.value


@dataclass(frozen=True)
class TransitionMade:
    """A transition on the record (a ``task.transition`` audit event), whoever made it: a run, an approval,
    a human on the CLI, REST or MCP. ``seq`` is its audit sequence number."""

    seq: int
    task_id: int
    workflow: str
    transition: str


def _reading(row) -> KpiReading:  # noqa: ANN001
    return KpiReading(row.id, row.kpi, row.value, row.measured_at, row.recorded_by, row.source)


_LATEST = Prepared(select(kpi_readings).where(kpi_readings.c.company_id == bindparam("company"),
                                              kpi_readings.c.kpi == bindparam("kpi"))
                   .order_by(kpi_readings.c.id.desc()).limit(1))


_HEAD_SEQ = (select(func.coalesce(func.max(audit_events.c.seq), 0))
             .where(audit_events.c.company_id == bindparam("company")))
_TRANSITIONS_AFTER = (
    select(audit_events.c.seq, audit_events.c.subject, audit_events.c.data)
    .where(audit_events.c.company_id == bindparam("company"), audit_events.c.action == "task.transition",
           audit_events.c.seq > bindparam("after_seq"), audit_events.c.seq <= bindparam("head"))
    .order_by(audit_events.c.seq).limit(bindparam("limit")))


def latest_reading_txn(conn: Connection, company: str, name: str) -> KpiReading | None:
    """The newest reading of KPI ``name`` inside ``conn``'s transaction, or ``None`` before any."""
    row = _LATEST.first(conn, {"company": company, "kpi": name})
    return _reading(row) if row is not None else None


class KpiVerbs(CompanyBase):
    """Record and read KPI readings (mixed into ``CompanyStore``)."""

    def record_kpi(self, name: str, value: float, *, actor: ActorRef | None, source: str = "") -> KpiReading:
        """Record one reading of KPI ``name``. ``actor=None`` is the runtime (trusted); otherwise the
        actor must be a human of this company. Raises :class:`NotFound` (no such KPI in the spec),
        :class:`UsageError` (a value that is not a finite number, a source over 500 characters),
        :class:`Denied` (an agent; audited)."""
        try:
            finite = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite:
            raise UsageError(f"a KPI reading is a finite number, not {str(value)[:40]}")
        if len(source) > MAX_SOURCE_CHARS:
            raise UsageError(f"a reading's source is at most {MAX_SOURCE_CHARS} characters; got {len(source)}")
        try:
            with self.store.write() as conn:
                head, cache = self._head_txn(conn)
                self._known_kpi(cache, name)
                recorder = SYSTEM
                if actor is not None:
                    who = self._actor(cache, actor)
                    self._authorize(cache, who, "kpi.record", Resource("kpi", name),
                                    why="KPI readings are measured by the runtime or recorded by a human; an "
                                        "agent cannot report its own KPI")
                    recorder = who.handle
                now = self.store.now()
                reading_id = conn.execute(insert(kpi_readings), {
                    "company_id": self.company, "kpi": name, "value": float(value), "measured_at": now,
                    "recorded_by": recorder, "source": source}).inserted_primary_key[0]
                audit.append(conn, head, ts=now, principal=recorder, action="kpi.reading", subject=f"kpi:{name}",
                             data={"value": float(value), "source": source})
                self.wake_goals_txn(conn, head, name, float(value), now)  # met by it, or due now
                audit.save_head(conn, head)
        except (Denied, NotFound) as exc:
            if actor is not None:
                self._audit_rejection(actor, "kpi.reading", f"kpi:{name}", exc, {"value": value, "source": source})
            raise
        return KpiReading(reading_id, name, float(value), now, recorder, source)

    def transitions_after(self, after_seq: int | None, *, limit: int = 500) -> tuple[list[TransitionMade], int]:
        """The transitions on the record after audit sequence number ``after_seq``, oldest first, at most
        ``limit``, and how far the record was read: the last one's ``seq`` when ``limit`` were returned,
        else the chain's head (so a cursor moves past events of other kinds too). ``after_seq=None``
        returns none and the head: where to start following. A trusted read, for the runtime's KPI
        measurements (``measure.after``)."""
        if after_seq is None:
            with self.store.read() as conn:
                return [], int(conn.scalar(_HEAD_SEQ, {"company": self.company}) or 0)
        with self.store.read() as conn:
            head = int(conn.scalar(_HEAD_SEQ, {"company": self.company}) or 0)
            rows = list(conn.execute(_TRANSITIONS_AFTER, {"company": self.company, "after_seq": after_seq,
                                                          "head": head, "limit": limit}))
        made = []
        for row in rows:
            data = json.loads(row.data)
            made.append(TransitionMade(row.seq, int(row.subject.partition(":")[2]), data["workflow"],
                                       data["transition"]))
        return made, (made[-1].seq if len(made) == limit else max(head, after_seq))

    def kpi_readings(self, name: str, *, actor: ActorRef | None, limit: int = 100) -> list[KpiReading]:
        """The newest ``limit`` readings of ``name``, oldest first. Any active principal of the company
        may read them (``actor=None``: a trusted internal read). Raises :class:`NotFound` for a KPI the
        spec does not define."""
        with self._reading(actor, "kpi.read", f"kpi:{name}") as (conn, cache, _who):
            self._known_kpi(cache, name)
            rows = conn.execute(select(kpi_readings).where(kpi_readings.c.company_id == self.company,
                                                           kpi_readings.c.kpi == name)
                                .order_by(kpi_readings.c.id.desc()).limit(limit))
            return [_reading(r) for r in reversed(list(rows))]

    def _known_kpi(self, cache: CompanyCache, name: str) -> None:
        """Raise :class:`NotFound` (naming the KPIs there are) unless the spec defines KPI ``name``."""
        assert cache.spec is not None
        if name not in cache.spec.kpis:
            known = ", ".join(sorted(cache.spec.kpis)) or "none are defined"
            raise NotFound(f"no KPI '{name}' in the spec of company '{self.company}' ({known}); "
                           "'roster kpi list' or GET /api/v1/kpis lists them")

    def kpi_summaries(self, *, actor: ActorRef | None) -> dict[str, KpiSummary]:
        """Per KPI the spec defines, by name: its first and latest readings and their number."""
        summaries = {}
        with self._reading(actor, "kpi.read", f"company:{self.company}") as (conn, cache, _who):
            assert cache.spec is not None
            for name in sorted(cache.spec.kpis):
                mine = (kpi_readings.c.company_id == self.company, kpi_readings.c.kpi == name)
                first = conn.execute(select(kpi_readings).where(*mine).order_by(kpi_readings.c.id).limit(1)).first()
                count = conn.scalar(select(func.count()).select_from(kpi_readings).where(*mine))
                summaries[name] = KpiSummary(name, _reading(first) if first else None,
                                             latest_reading_txn(conn, self.company, name), int(count or 0))
        return summaries
