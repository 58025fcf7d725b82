"""Verifying the audit chain from the dashboard: a walk of the whole chain (about 60 µs an event, so
seconds for a large company) runs in a thread of its own, one per company at a time, while the page
shows its progress and then its result. Kept in this process's memory: the result is a reading, not a
record (``roster audit verify`` gives the same from the CLI)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from roster.errors import RosterError
from roster.store import Session
from roster.store.store import format_ts, utc_now


@dataclass
class Verification:
    """One walk of a company's chain: who asked, how far it got (``checked`` of ``total`` events), and
    when done, ``result`` (a sentence) and ``intact``."""

    by: str
    total: int
    started_at: str = field(default_factory=lambda: format_ts(utc_now()))
    checked: int = 0
    result: str | None = None
    intact: bool | None = None

    @property
    def done(self) -> bool:
        return self.result is not None


class Verifications:
    """The latest verification of each company in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_company: dict[str, Verification] = {}

    def latest(self, company: str) -> Verification | None:
        with self._lock:
            return self._by_company.get(company)

    def start(self, session: Session) -> Verification:
        """Start walking ``session``'s company's chain as its principal (its rights are checked by the walk
        itself), unless a walk of that company is already running: then that one. Raises
        :class:`~roster.errors.Denied` at once if the principal may not read the audit log."""
        last = session.audit_log(newest_first=True, limit=1)  # the rights check, before any thread
        company = session.principal.company
        with self._lock:
            running = self._by_company.get(company)
            if running is not None and not running.done:
                return running
            job = self._by_company[company] = Verification(session.principal.handle, last[0].seq if last else 0)
        threading.Thread(target=self._walk, args=(session, job), daemon=True, name="roster-verify").start()
        return job

    @staticmethod
    def _walk(session: Session, job: Verification) -> None:
        def progress(n: int) -> None:
            job.checked = n

        try:
            count, broken = session.verify_audit(progress=progress)
        except RosterError as exc:
            job.intact, job.result = False, f"the chain could not be read: {exc}"
            return
        job.checked = count
        job.intact = broken is None
        job.result = (f"{count} events verified: the chain is intact" if broken is None
                      else f"the chain breaks at event {broken[0]}: {broken[1]}")
