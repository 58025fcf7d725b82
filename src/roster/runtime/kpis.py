"""Measuring KPIs: the runtime runs each KPI's ``measure`` program on its schedule (``every``) and after
every transition it names (``after``), and records what it prints as a reading (see store/kpis.py).

A measure program is a shell command run in the spec's folder with a timeout; it prints the value, a
number, as the last line of its stdout. No model is involved. A program that fails, times out or prints
no number records nothing; the failure is logged and the next due time comes round as usual. The
schedule's state lives in ``trigger_state`` (as the runtime's), so a restart does not measure twice.

``measure.after`` follows the record, not the dispatcher's own runs: :meth:`KpiMeter.follow` reads the
``task.transition`` audit events after a cursor (kept in ``trigger_state`` as the runtime's
``kpi:transitions``), so a transition counts wherever it was made: by a run, by ``roster approve``, by a
human on the CLI, over REST or MCP. Each KPI is measured once per look however many of its transitions
the look found (the program reads the state now, after all of them). The first look of a company sets
the cursor at the head of its record: transitions made before the runtime ever followed it are not
measured.
"""

from __future__ import annotations

import math
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

from roster.errors import RosterError
from roster.kernel.spec import CompanySpec, Kpi
from roster.runtime.processes import run_in_session
from roster.runtime.triggers import Periodic
from roster.store import CompanyStore
from roster.store.kpis import MAX_SOURCE_CHARS, KpiReading, TransitionMade
from roster.store.triggers import TriggerState

FOLLOW_KEY = "kpi:transitions"
"""The ``trigger_state`` key (under the schedule's owner) of the cursor into the record: the audit ``seq``
up to which transitions were looked at, in ``last_event_id``."""
FOLLOW_PAGE = 500
"""Transitions read per look: a backlog is worked through a page per cycle."""
SAVE_EVERY = 1_000
"""A cursor that moved past events of other kinds only is saved once it moved this far (a restart reads
at most this many events again; one that found transitions is saved at once)."""


class MeasureFailed(RosterError):
    """A KPI's measure program failed, timed out or printed no number."""

    code = "measure-failed"


def measure_value(kpi: Kpi, *, workdir: Path) -> float:
    """Run ``kpi.measure.command`` in ``workdir`` and parse the last line of its stdout as a number.
    Raises :class:`MeasureFailed` (exit status, timeout in seconds, or output named in the message)."""
    assert kpi.measure is not None
    command = kpi.measure.command
    try:
        done = run_in_session(shlex.split(command), cwd=workdir, timeout=kpi.measure.timeout)
    except OSError as exc:
        raise MeasureFailed(f"cannot start '{command}': {exc}") from None
    except subprocess.TimeoutExpired:
        raise MeasureFailed(f"'{command}' ran past its timeout of {kpi.measure.timeout:g} s") from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-300:]
        raise MeasureFailed(f"'{command}' exited {done.returncode}: {tail or '(no stderr)'}")
    lines = [line.strip() for line in done.stdout.decode(errors="replace").splitlines() if line.strip()]
    try:
        value = float(lines[-1])
    except (IndexError, ValueError):
        raise MeasureFailed(f"'{command}' printed no number on its last line of output") from None
    if not math.isfinite(value):
        raise MeasureFailed(f"'{command}' printed {lines[-1]!r}: a reading is a finite number")
    return value


class KpiMeter:
    """Measures a company's KPIs for the dispatcher's leader: :meth:`measure_due` and :meth:`follow` each
    cycle."""

    def __init__(self, company: CompanyStore, *, workdir: Path, schedule: Periodic,
                 log: Callable[[str], None]) -> None:
        """``schedule``: the runtime's periodic jobs, which keep when each KPI was last measured."""
        self.company, self.workdir, self.schedule, self.log = company, workdir, schedule, log
        self._cursor: int | None = None
        self._saved: int | None = None

    def measure_due(self, spec: CompanySpec) -> list[KpiReading]:
        """Measure every KPI whose ``every`` has passed since its last scheduled measurement."""
        readings = []
        now = self.company.store.clock()
        for name, kpi in sorted(spec.kpis.items()):
            if kpi.measure is None or kpi.measure.every is None:
                continue
            key, every = f"kpi:{name}", kpi.measure.every
            if not self.schedule.due(key, every, now):
                continue
            reading = self.measure(name, kpi, source=f"schedule (every {every})")
            self.schedule.ran(key, every, now)
            if reading is not None:
                readings.append(reading)
        return readings

    def follow(self, spec: CompanySpec) -> list[KpiReading]:
        """Measure the KPIs whose ``measure.after`` names a transition made since the last look (in a
        workflow that lists the KPI), whoever made it; each KPI once per look. Costs nothing when no KPI
        names a transition. The first look ever only sets the cursor at the head of the record."""
        watched = _watched(spec)
        if not watched:
            return []
        if self._cursor is None:
            state = self.company.trigger_states(self.schedule.owner).get(FOLLOW_KEY)
            if state is None:  # the first look: from now on
                _, head = self.company.transitions_after(None)
                self._save(head)
                return []
            self._cursor = self._saved = state.last_event_id
        made, upto = self.company.transitions_after(self._cursor, limit=FOLLOW_PAGE)
        due: dict[str, list[TransitionMade]] = {}
        for transition in made:
            for name in watched.get((transition.workflow, transition.transition), ()):
                due.setdefault(name, []).append(transition)
        readings = []
        for name, seen in sorted(due.items()):
            reading = self.measure(name, spec.kpis[name], source=_after(seen))
            if reading is not None:
                readings.append(reading)
        if due or upto - (self._saved or 0) >= SAVE_EVERY:
            self._save(upto)
        else:
            self._cursor = upto
        return readings

    def _save(self, seq: int) -> None:
        self.company.save_trigger_state(self.schedule.owner, FOLLOW_KEY, TriggerState(None, seq, False))
        self._cursor = self._saved = seq

    def measure(self, name: str, kpi: Kpi, *, source: str) -> KpiReading | None:
        """Run the measure program and record its value; ``None`` (logged) if it failed."""
        try:
            value = measure_value(kpi, workdir=self.workdir)
        except MeasureFailed as exc:
            self.log(f"KPI {name}: not measured ({source}): {exc.message}")
            return None
        reading = self.company.record_kpi(name, value, actor=None, source=source)
        self.log(f"KPI {name}: {value:g} {kpi.unit} ({source})".replace("  ", " "))
        return reading


def _watched(spec: CompanySpec) -> dict[tuple[str, str], list[str]]:
    """(workflow, transition) -> the KPIs measured after it: those the workflow lists whose ``measure.after``
    names the transition."""
    watched: dict[tuple[str, str], list[str]] = {}
    for workflow_name, workflow in spec.workflows.items():
        for name in workflow.kpis:
            kpi = spec.kpis.get(name)
            if kpi is None or kpi.measure is None:
                continue
            for transition in kpi.measure.after:
                watched.setdefault((workflow_name, transition), []).append(name)
    return watched


def _after(seen: list[TransitionMade]) -> str:
    """A reading's source: ``after plan of task 3``, or ``after plan of task 3, merge of task 4 and 2 more``."""
    shown = [f"{t.transition} of task {t.task_id}" for t in seen[:3]]
    rest = f" and {len(seen) - 3} more" if len(seen) > 3 else ""
    return f"after {', '.join(shown)}{rest}"[:MAX_SOURCE_CHARS]
