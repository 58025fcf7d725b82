"""The dispatcher's background threads: lease renewals with the dispatcher's heartbeat, and, on
PostgreSQL, ``LISTEN`` for other processes' work. Each survives any error (a database outage) and
tries again; neither ever runs a runner.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from roster.errors import RosterError
from roster.runtime.pipeline import OUTAGES
from roster.store import CompanyStore, Store
from roster.store.dialects import WAKE_CHANNEL
from roster.store.leases import Lease


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc (not Linux): it exists


class LeaseRenewals:
    """Renews the lease of every run in flight each third of the lease's length (``seconds``), and calls
    ``tick`` (the dispatcher's heartbeat) as often, from one background thread kept for the dispatcher's
    life (a thread per run cost more than the rest of a short run's bookkeeping). A lease that cannot be
    renewed because it is no longer the run's (taken over, released by the kill switch) is dropped: the
    run's writes will be refused by its fencing token. A database error (an outage) drops nothing: the
    thread logs it and tries again at its next tick, so it survives any error.

    Every lease it is given has the same length, so a new one is never due before the thread's next
    wake-up: adding one needs no signal, and a short run costs no thread switch."""

    def __init__(self, company: CompanyStore, seconds: float, *, tick: Callable[[], None] | None = None,
                 log: Callable[[str], None] = lambda _m: None) -> None:
        self.company, self.seconds, self.tick, self.log = company, seconds, tick, log
        self._leases: dict[int, tuple[str, Lease, float]] = {}  # task id -> (agent, lease, due: monotonic s)
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def start(self) -> None:
        with self._changed:
            if self._thread is None:
                self._stopped = False
                self._thread = threading.Thread(target=self._loop, daemon=True, name="lease-renewals")
                self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    @contextmanager
    def held(self, agent: str, lease: Lease) -> Iterator[Callable[[], None]]:
        """Renew ``lease`` while the block runs. On exit no renewal of it is in progress, or will be. The
        block is given a function that stops the renewals sooner, with the same promise: called before a
        transaction that releases the lease, so that no renewal lands after the release (it would be
        refused, and audited)."""
        self.start()
        with self._changed:
            self._leases[lease.task_id] = (agent, lease, time.monotonic() + self.seconds / 3)

        def stop() -> None:
            with self._changed:  # waits for a renewal in progress: it holds the condition's lock
                self._leases.pop(lease.task_id, None)

        try:
            yield stop
        finally:
            stop()

    def _loop(self) -> None:
        next_tick = 0.0
        with self._changed:
            while not self._stopped and not self.company.store.closed:  # a closed store: its owner is done
                now = time.monotonic()
                for task_id, (agent, lease, due) in list(self._leases.items()):
                    if due > now:
                        continue
                    try:
                        self.company.renew(task_id, actor=agent, fencing_token=lease.fencing_token, ttl=self.seconds)
                        self._leases[task_id] = (agent, lease, now + self.seconds / 3)
                    except RosterError as exc:
                        if isinstance(exc, OUTAGES):
                            self.log(f"lease of task {task_id} not renewed: {exc.message} (trying again)")
                            self._leases[task_id] = (agent, lease, now + min(1.0, self.seconds / 3))
                        else:
                            del self._leases[task_id]
                    except Exception as exc:  # noqa: BLE001 - the thread outlives any error
                        self.log(f"lease of task {task_id} not renewed: {exc!r} (trying again)")
                        self._leases[task_id] = (agent, lease, now + min(1.0, self.seconds / 3))
                if self.tick is not None and now >= next_tick:
                    try:
                        self.tick()
                        next_tick = now + self.seconds / 3
                    except Exception as exc:  # noqa: BLE001 - an outage: beat again soon
                        self.log(f"heartbeat not recorded: {getattr(exc, 'message', exc)!s}")
                        next_tick = now + min(1.0, self.seconds / 3)
                wake = min([due for _, _, due in self._leases.values()] + [next_tick],
                           default=now + self.seconds / 3)
                self._changed.wait(timeout=max(0.05, wake - time.monotonic()))


class NotifyListener:
    """PostgreSQL only: a thread on a connection of its own that ``LISTEN``s on
    :data:`~roster.store.dialects.WAKE_CHANNEL` and calls ``heard(company_id)`` when a process commits work
    for a company (and ``heard(None)`` once listening: anything committed before). It reconnects with
    backoff after any error (a server restart), so it never dies. Used by the dispatcher (wake up) and the
    dashboard (live updates)."""

    def __init__(self, store: Store, heard: Callable[[str | None], None], log: Callable[[str], None]) -> None:
        self.store, self.heard, self.log = store, heard, log
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="roster-listen")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=3)

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stopped.is_set():
            try:
                raw = self.store.engine.raw_connection()
                try:
                    conn = raw.driver_connection
                    conn.autocommit = True
                    conn.execute(f"LISTEN {WAKE_CHANNEL}")
                    backoff = 0.5
                    self.heard(None)  # anything committed while not listening
                    while not self._stopped.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self.heard(note.payload)
                finally:
                    raw.invalidate()  # never back to the pool: it is LISTENing
            except Exception as exc:  # noqa: BLE001 - a server restart: listen again when it is back
                if self._stopped.is_set():
                    return
                self.log(f"not listening for other processes' work ({type(exc).__name__}); again in {backoff:g} s")
                self._stopped.wait(backoff)
                backoff = min(2 * backoff, 30.0)
