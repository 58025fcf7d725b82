"""Delivering webhooks: a background thread of the leader's dispatcher that enqueues the events the record
holds for each hook and posts the due deliveries, signed, never in the dispatcher's cycle.

Each round (:meth:`WebhookWorker.run_once`): if the chain moved past a hook's cursor, enqueue (one store
transaction, see :mod:`roster.store.webhooks`); then, if a delivery is due, claim a few and post them, a
few at a time, each with a timeout of :data:`~roster.kernel.webhooks.TIMEOUT_SECONDS`. A 2xx answer
delivers it; 410 Gone fails it at once (the receiver says it is gone for good); anything else (another
status, a timeout, a refused connection) is retried after :func:`~roster.kernel.webhooks.retry_delay`
(exponential with jitter; a ``Retry-After`` answer is waited out if longer) until
:data:`~roster.kernel.webhooks.MAX_ATTEMPTS` attempts, then it fails. A hook whose ``secret_env`` is not
set fails its delivery at once with that reason: nothing is ever sent unsigned. Failed deliveries wait
for ``roster webhooks replay``.

Only the process holding the ``leader`` runtime lease delivers: the dispatcher calls :meth:`tick` from
its leader-only periodic jobs, and the thread works only while the last tick is recent. Deliveries are
rows, so a new ``roster up`` sends what an earlier one left pending. A delivery is sent at least once; a
worker killed after a receiver answered but before it recorded the answer sends it again (receivers drop
duplicates by ``webhook-id``). The thread survives any error (a store outage): it logs and tries again.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpx

from roster.kernel.webhooks import (
    MAX_ATTEMPTS,
    TIMEOUT_SECONDS,
    WebhookSecretError,
    message_id,
    retry_delay,
    signed_headers,
)
from roster.store import CompanyStore
from roster.store.webhooks import WebhookDelivery

if TYPE_CHECKING:
    from roster.kernel.spec import CompanySpec

IDLE_SECONDS = 1.0
"""How often the thread looks for work when nothing wakes it."""
SENDERS = 4
"""Hooks posted to at once (each hook's deliveries go one after the other, in the record's order)."""
MAX_RETRY_AFTER = 3600.0
"""Longest ``Retry-After`` honoured, in seconds."""
MAX_PAGES = 20
"""Pages of the record enqueued, and batches of deliveries claimed, per round at most."""


class WebhookWorker:
    """Enqueues and delivers a company's webhooks (see the module docstring). ``environ`` is where secrets
    are read (default ``os.environ``); ``transport`` an httpx transport (tests); ``rng`` the jitter's."""

    def __init__(self, company: CompanyStore, *, log: Callable[[str], None] = lambda _m: None,
                 leader_seconds: float = 30.0, environ: Mapping[str, str] | None = None,
                 max_attempts: int = MAX_ATTEMPTS, timeout: float = TIMEOUT_SECONDS,
                 rng: random.Random | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.company, self.log = company, log
        self.leader_seconds = leader_seconds
        self.environ = os.environ if environ is None else environ
        self.max_attempts, self.timeout = max_attempts, timeout
        self.rng = rng or random.Random()
        self._transport = transport
        self._client: httpx.Client | None = None
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._leader_until = 0.0
        self._lock = threading.Lock()

    # -- the dispatcher's side ----------------------------------------------------------------------

    def tick(self, has_hooks: bool) -> None:
        """Called by the leader's periodic jobs each cycle: deliver for the next ``leader_seconds``, and look
        now. Starts the thread the first time the spec has hooks (none run without them)."""
        self._leader_until = time.monotonic() + self.leader_seconds
        if has_hooks and self._thread is None and not self._stopped.is_set():
            self._thread = threading.Thread(target=self._loop, daemon=True, name="roster-webhooks")
            self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread (an attempt in flight finishes or times out); pending deliveries stay pending."""
        self._stopped.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.timeout + 1)
            if thread.is_alive():
                return  # an attempt still in flight (its timeout bounds it); the daemon thread ends after it
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _loop(self) -> None:
        backoff = IDLE_SECONDS
        while not self._stopped.is_set():
            self._wake.wait(IDLE_SECONDS if backoff == IDLE_SECONDS else backoff)
            self._wake.clear()
            if self._stopped.is_set() or self.company.store.closed:
                return
            if time.monotonic() > self._leader_until:
                continue  # not (or no longer) the leader: another process delivers
            try:
                self.run_once()
                backoff = IDLE_SECONDS
            except Exception as exc:  # noqa: BLE001 - an outage: the thread outlives any error
                self.log(f"webhooks: {getattr(exc, 'message', None) or repr(exc)} (trying again in {backoff:g} s)")
                backoff = min(2 * backoff, 60.0)

    # -- one round ----------------------------------------------------------------------------------

    def run_once(self) -> list[WebhookDelivery]:
        """Enqueue what the record holds for the hooks, then attempt every due delivery once. Returns the
        deliveries as recorded after their attempt."""
        with self._lock:
            spec = self.company.spec()
            for _ in range(MAX_PAGES):
                if not self.company.webhook_backlog(spec):
                    break
                self.company.enqueue_webhooks()
            done: list[WebhookDelivery] = []
            for _ in range(MAX_PAGES):
                if self._stopped.is_set() or not self.company.webhooks_due():
                    break
                claimed = self.company.claim_webhook_deliveries(limit=SENDERS * 4,
                                                                hold_seconds=max(60.0, self.timeout * 4))
                if not claimed:
                    break
                by_hook: dict[str, list[WebhookDelivery]] = {}
                for delivery in claimed:  # oldest first: each hook gets its events in order, hooks at once
                    by_hook.setdefault(delivery.hook, []).append(delivery)
                with ThreadPoolExecutor(SENDERS, thread_name_prefix="roster-webhook") as pool:
                    groups = [sorted(group, key=lambda d: d.seq) for group in by_hook.values()]
                    for sent in pool.map(lambda group: self._attempt_each(group, spec), groups):
                        done += sent
            return done

    def _attempt_each(self, group: list[WebhookDelivery], spec: CompanySpec) -> list[WebhookDelivery]:
        """One hook's deliveries, one after the other; on stop the rest stay claimed (due again once their
        claim lapses, for the next worker)."""
        done = []
        for delivery in group:
            if self._stopped.is_set():
                break
            done.append(self._attempt(delivery, spec))
        return done

    def _attempt(self, delivery: WebhookDelivery, spec: CompanySpec) -> WebhookDelivery:
        hook = spec.webhooks.get(delivery.hook)
        if hook is None:
            return self._record(delivery, "failed", None, f"the hook '{delivery.hook}' is no longer in the spec")
        secret = self.environ.get(hook.secret_env, "")
        if not secret:
            return self._record(delivery, "failed", None,
                                f"the environment variable {hook.secret_env} (secret_env of hook '{delivery.hook}') "
                                "is not set where roster up runs: nothing was sent unsigned; set it, then "
                                "'roster webhooks replay --failed'")
        moment = self.company.store.clock()
        try:
            headers = signed_headers(secret, msg_id=message_id(self.company.company, delivery.id), moment=moment,
                                     body=delivery.payload)
        except WebhookSecretError as exc:
            return self._record(delivery, "failed", None, f"{hook.secret_env}: {exc.message}; nothing was sent")
        try:
            answer = self._http().post(hook.url, content=delivery.payload.encode(), headers=headers)
        except httpx.HTTPError as exc:
            return self._retry(delivery, None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if 200 <= answer.status_code < 300:
            return self._record(delivery, "delivered", answer.status_code, "")
        why = f"HTTP {answer.status_code}: {answer.text[:200].strip()}".rstrip(": ")
        if answer.status_code == 410:
            return self._record(delivery, "failed", 410, f"{why} (the receiver is gone: not retried)")
        return self._retry(delivery, answer.status_code, why, _retry_after(answer.headers.get("retry-after")))

    def _http(self) -> httpx.Client:
        if self._client is None:  # made at the first attempt: a company without hooks never builds one
            self._client = httpx.Client(timeout=self.timeout, follow_redirects=False, transport=self._transport,
                                        headers={"user-agent": "roster-webhooks"})
        return self._client

    def _retry(self, delivery: WebhookDelivery, status: int | None, why: str,
               at_least: float = 0.0) -> WebhookDelivery:
        attempt = delivery.attempts + 1
        if attempt >= self.max_attempts:
            return self._record(delivery, "failed", status, f"{why} (gave up after {attempt} attempts)")
        return self._record(delivery, "retry", status, why,
                            max(retry_delay(attempt, self.rng), min(at_least, MAX_RETRY_AFTER)))

    def _record(self, delivery: WebhookDelivery, outcome: str, status: int | None, error: str,
                retry_in: float | None = None) -> WebhookDelivery:
        recorded = self.company.record_webhook_attempt(delivery.id, outcome=outcome, http_status=status,
                                                       error=error, retry_in=retry_in)
        if outcome != "delivered":
            then = f"; next attempt in {retry_in:.0f} s" if outcome == "retry" else ""
            self.log(f"webhook {delivery.hook}: delivery {delivery.id} ({delivery.event}) {outcome}: {error}{then}")
        return recorded


def _retry_after(value: str | None) -> float:
    """Seconds of a ``Retry-After`` header given in seconds (0 for none, or an HTTP date)."""
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
