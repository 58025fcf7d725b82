"""Verifying the audit chain from the dashboard: a walk of the whole chain (about 60 µs an event, so
seconds for a large company, all of it Python hashing) runs in a child process, one per company at a
time, so the server's own threads keep answering; the page shows its progress, then its result. The
result is kept in this process's memory: a reading, not a record (``roster audit verify`` gives the same
from the CLI)."""

from __future__ import annotations

import multiprocessing
import threading
from dataclasses import dataclass, field
from typing import Any

from roster.errors import RosterError
from roster.store import Session, Store
from roster.store.store import format_ts, utc_now

WALK_TIMEOUT = 3600.0
"""Seconds after which a walk that has not finished is given up (and its process ended)."""


@dataclass
class Verification:
    """One walk of a company's chain: who asked, how far it got (``checked`` of about ``total`` events),
    and when done, ``result`` (a sentence) and ``intact``."""

    by: str
    total: int
    started_at: str = field(default_factory=lambda: format_ts(utc_now()))
    checked: int = 0
    result: str | None = None
    intact: bool | None = None

    @property
    def done(self) -> bool:
        return self.result is not None


def _walk(url: str, company: str, progress: Any, answer: Any) -> None:
    """In the child process: walk ``company``'s chain in the store at ``url``; ``progress`` (a shared
    integer) follows it; the answer, ``(count, broken)`` or ``("error", message)``, goes down ``answer``."""
    from roster.store import audit

    try:
        store = Store.open(url)
        try:
            with store.read() as conn:
                answer.send(audit.verify(conn, company, lambda n: setattr(progress, "value", n)))
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 - whatever stopped the walk is the answer the page shows
        answer.send(("error", f"{type(exc).__name__}: {exc}"))


class Verifications:
    """The latest verification of each company in this process."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._by_company: dict[str, Verification] = {}

    def latest(self, company: str) -> Verification | None:
        with self._lock:
            return self._by_company.get(company)

    def start(self, session: Session) -> Verification:
        """Start walking ``session``'s company's chain, unless a walk of it is already running: then that
        one. Raises :class:`~roster.errors.Denied` (audited) at once if the principal may not read the
        whole company, the right ``roster audit verify`` needs."""
        session.authorize("read", "company")
        last = session.audit_log(newest_first=True, limit=1)
        company = session.principal.company
        with self._lock:
            running = self._by_company.get(company)
            if running is not None and not running.done:
                return running
            job = self._by_company[company] = Verification(session.principal.handle, last[0].seq if last else 0)
        threading.Thread(target=self._follow, args=(company, job), daemon=True, name="roster-verify").start()
        return job

    def _follow(self, company: str, job: Verification) -> None:
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no copy of the server's threads
        progress = spawn.Value("q", 0, lock=False)
        receive, send = spawn.Pipe(duplex=False)
        url = self.store.engine.url.render_as_string(hide_password=False)
        child = spawn.Process(target=_walk, args=(url, company, progress, send), daemon=True, name="roster-verify")
        child.start()
        send.close()
        try:
            waited = 0.0
            while not receive.poll(0.25):
                job.checked = progress.value
                waited += 0.25
                if not child.is_alive() or waited > WALK_TIMEOUT:
                    raise RosterError(f"the walk stopped before its end (exit code {child.exitcode})")
            answer = receive.recv()
        except (RosterError, EOFError, OSError) as exc:
            job.intact, job.result = False, f"the chain could not be verified: {exc}"
            return
        finally:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
        if answer[0] == "error":
            job.intact, job.result = False, f"the chain could not be read: {answer[1]}"
            return
        count, broken = answer
        job.checked = count
        job.intact = broken is None
        job.result = (f"{count} events verified: the chain is intact" if broken is None
                      else f"the chain breaks at event {broken[0]}: {broken[1]}")
