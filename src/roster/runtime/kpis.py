"""Measuring KPIs: the runtime runs each KPI's ``measure`` program on its schedule (``every``) and after
every transition it names (``after``), and records what it prints as a reading (see store/kpis.py).

A measure program is a shell command run in the spec's folder with a timeout; it prints the value, a
number, as the last line of its stdout. No model is involved. A program that fails, times out or prints
no number records nothing; the failure is logged and the next due time comes round as usual. The
schedule's state lives in ``trigger_state`` (as the runtime's), so a restart does not measure twice.
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
from roster.store.kpis import KpiReading


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
    """Measures a company's KPIs for the dispatcher: :meth:`measure_due` each cycle, :meth:`after` each
    transition a run made."""

    def __init__(self, company: CompanyStore, *, workdir: Path, schedule: Periodic,
                 log: Callable[[str], None]) -> None:
        """``schedule``: the runtime's periodic jobs, which keep when each KPI was last measured."""
        self.company, self.workdir, self.schedule, self.log = company, workdir, schedule, log

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

    def after(self, spec: CompanySpec, workflow: str, transition: str, task_id: int) -> list[KpiReading]:
        """Measure the KPIs of ``workflow`` whose ``measure.after`` names ``transition``, just taken."""
        readings = []
        for name in spec.workflows[workflow].kpis:
            kpi = spec.kpis[name]
            if kpi.measure is not None and transition in kpi.measure.after:
                reading = self.measure(name, kpi, source=f"after {transition} of task {task_id}")
                if reading is not None:
                    readings.append(reading)
        return readings

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
