"""Live updates: server-sent events at ``/events``, fed by the store's own commits.

The store calls :meth:`EventHub.committed` after every commit that moved a company's audit chain (the
same hook that takes audit checkpoints), in the writing thread; the hub only notes the new head and wakes
the streams of that company. Each stream then reads the new events through its human's session (so it
sends only what that human may read) and sends one SSE event per kind that changed: ``task`` (a task was
created, moved, held, edited, released or claimed), ``run`` (a run started or ended), ``approval``,
``escalation``, ``team`` (pauses, resumes, principals), ``message``. The pages re-fetch their parts when
their kinds arrive (htmx ``hx-trigger="sse:task"``); nothing is polled while nothing happens.

A commit in another process (a ``roster up`` beside ``roster serve`` on the same database): on
PostgreSQL, a commit that made work is heard at once through ``LISTEN`` (the runtime's
:class:`~roster.runtime.background.NotifyListener`, running while any stream is open); any other reaches
a stream by a light read of the chain after its last event, every :data:`OTHER_PROCESSES` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from roster.errors import RosterError

if TYPE_CHECKING:
    from roster.store import Session, Store

LOG = logging.getLogger("roster.api")
OTHER_PROCESSES = 5.0
"""Seconds between checks of the chain head for commits made by other processes."""
KINDS = {"task": "task", "lease": "task", "run": "run", "approval": "approval", "escalation": "escalation",
         "principal": "team", "scope": "team", "message": "message", "goal": "task", "check": "task",
         "artifact": "task"}
"""Audit action prefix -> the kind of change a page listens to."""


def kind_of(action: str) -> str | None:
    """The kind of change an audit action is (``task.transition`` -> ``task``), or ``None``."""
    return KINDS.get(action.split(".", 1)[0])


class EventHub:
    """The companies' latest chain heads, and the streams waiting on them. Attach with :meth:`attach`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._store: Store | None = None
        self._listener = None  # a NotifyListener while any stream is open, on PostgreSQL

    def attach(self, store: Store) -> None:
        """Hear every commit of ``store`` (and, on PostgreSQL while streams are open, other processes')."""
        self._store = store
        store.after_commit_hooks.append(self.committed)

    def committed(self, _store: Store, saved: dict[str, tuple[int, str]]) -> None:
        """After a commit (in the writing thread): wake the streams of each company whose chain moved."""
        for company in saved:
            self.heard(company)

    def heard(self, company: str | None) -> None:
        """Wake the streams of ``company`` (``None``: every stream)."""
        with self._lock:
            woken = [w for c, ws in self._waiters.items() if company is None or c == company for w in ws]
        for loop, event in woken:
            loop.call_soon_threadsafe(event.set)

    def _opened(self, company: str, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.setdefault(company, set()).add(waiter)
            listen = self._listener is None and self._store is not None and self._store.dialect.listens
            if listen:
                # PostgreSQL only, and only while a stream is open
                from roster.runtime.background import NotifyListener

                self._listener = NotifyListener(self._store, self.heard, lambda line: LOG.warning("%s", line))
        if listen:
            self._listener.start()

    def _closed(self, company: str, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.get(company, set()).discard(waiter)
            if any(self._waiters.values()):
                return
            listener, self._listener = self._listener, None
        if listener is not None:
            threading.Thread(target=listener.stop, daemon=True).start()  # never block the event loop

    async def stream(self, session: Session, start: int,
                     signed_in: Callable[[], Awaitable[bool]]) -> AsyncIterator[dict[str, str]]:
        """SSE events for ``session``'s company after audit seq ``start``, until the client goes or
        ``signed_in()`` (asked at least every :data:`OTHER_PROCESSES` seconds) says the session ended
        (signed out, expired, the human paused): then a last ``signed-out`` event, and the stream ends."""
        company = session.principal.company
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._opened(company, (loop, event))
        seen = start
        checked = loop.time()
        try:
            yield {"event": "hello", "data": str(seen)}
            while True:
                try:
                    await asyncio.wait_for(event.wait(), timeout=OTHER_PROCESSES)
                except TimeoutError:
                    pass
                event.clear()
                if loop.time() - checked >= OTHER_PROCESSES:
                    checked = loop.time()
                    if not await signed_in():
                        yield {"event": "signed-out", "data": "sign in again"}
                        return
                await asyncio.sleep(0.2)  # a burst of commits becomes one refresh
                try:
                    events = await run_in_threadpool(session.audit_log, after_seq=seen, limit=500)
                except RosterError:
                    continue  # a store outage: the next wake-up tries again
                if not events:
                    yield {"comment": "keep-alive"}
                    continue
                seen = events[-1].seq
                for kind in sorted({k for e in events if (k := kind_of(e.action))}):
                    yield {"event": kind, "data": str(seen)}
        finally:
            self._closed(company, (loop, event))
