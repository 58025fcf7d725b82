"""Bearer tokens, one rule for every HTTP interface: ``Authorization: Bearer <token>`` (the scheme in any
case) resolves to one principal's :class:`~roster.store.Session`; anything else is
:class:`~roster.errors.Unauthenticated`. The REST dependency, the gate in front of the MCP app, and the MCP
server itself (for transports that carry headers) all call :func:`session_from_header`.

Failed authentications are rate-limited by a :class:`FailureLimiter` (in-process, per server):

- **per client address**: once a client has failed :attr:`AuthLimits.per_client` times within
  :attr:`AuthLimits.window` seconds, every request it sends is refused with
  :class:`~roster.errors.TooManyAttempts` (429, ``Retry-After``) before any token is looked at;
- **per company** (the company a token names): once :attr:`AuthLimits.per_company` failures against one
  company fall within the window, further *failures* against it answer 429 and are no longer written to
  its audit chain (the count says how many), while valid tokens of that company keep working, so nobody
  can lock a company's staff out by failing on purpose.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from roster.errors import TooManyAttempts, Unauthenticated
from roster.store import Session, Store
from roster.store.company import authenticate
from roster.store.principals import parse_token

SESSION_STATE_KEY = "roster.session"
"""Where the bearer gate in front of the MCP app leaves the authenticated session (the ASGI scope's
``state``), for the MCP server to act as."""


@dataclass(frozen=True)
class AuthLimits:
    """How many failed authentications are tolerated within ``window`` seconds: ``per_client`` from one
    client address, ``per_company`` against one company. ``max_keys`` bounds how many clients and
    companies are remembered at once (the oldest are forgotten first)."""

    per_client: int = 30
    per_company: int = 100
    window: float = 60.0
    max_keys: int = 10_000


class FailureLimiter:
    """Counts failed authentications per key (``client:<address>``, ``company:<handle>``) in a sliding
    window. Thread-safe (sync endpoints authenticate in worker threads); memory is bounded by
    :attr:`AuthLimits.max_keys` keys of at most ``per_company`` timestamps each. ``clock`` is in seconds
    (monotonic by default; tests pass their own)."""

    def __init__(self, limits: AuthLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or AuthLimits()
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, key: str, limit: int) -> float:
        """Seconds until ``key`` is under ``limit`` failures again (0: it is under now)."""
        with self._lock:
            times = self._pruned(key)
            return 0.0 if len(times) < limit else max(times[len(times) - limit] + self.limits.window - self.clock(),
                                                      1.0)

    def failed(self, *keys: str) -> None:
        """Count one failure against each of ``keys``."""
        with self._lock:
            now = self.clock()
            for key in keys:
                times = self._pruned(key)
                times.append(now)
                if len(times) > max(self.limits.per_client, self.limits.per_company):
                    times.popleft()
                self._failures[key] = times
                self._failures.move_to_end(key)
            while len(self._failures) > self.limits.max_keys:
                self._failures.popitem(last=False)

    def _pruned(self, key: str) -> deque[float]:
        times = self._failures.get(key, deque())
        horizon = self.clock() - self.limits.window
        while times and times[0] <= horizon:
            times.popleft()
        return times


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization`` header value if it is ``Bearer <token>``, else ``None``."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def session_from_header(store: Store, authorization: str | None, client: str | None = None,
                        limiter: FailureLimiter | None = None) -> Session:
    """The session of the bearer token in ``authorization``, for a request from address ``client``.
    Raises :class:`Unauthenticated` for a missing, malformed, unknown, revoked or expired token, or a
    paused or retired principal (each refusal with a known company audited as ``auth.rejected``), and
    :class:`TooManyAttempts` when ``limiter`` says the client, or the failures against the token's company,
    are over their limit (see the module's docstring)."""
    client_key = f"client:{client or 'unknown'}"
    if limiter is not None:
        wait = limiter.retry_after(client_key, limiter.limits.per_client)
        if wait:
            raise TooManyAttempts("client address", round(wait))
    token = bearer_token(authorization)
    try:
        if token is None:
            raise Unauthenticated("missing bearer token")
        company = parse_token(token)[0]
    except Unauthenticated:
        if limiter is not None:
            limiter.failed(client_key)
        raise
    company_key = f"company:{company}"
    quiet = limiter.retry_after(company_key, limiter.limits.per_company) if limiter is not None else 0.0
    try:
        return authenticate(store, token, audit_refusal=not quiet)
    except Unauthenticated:
        if limiter is not None:
            limiter.failed(client_key, company_key)
        if quiet:
            raise TooManyAttempts("company's tokens", round(quiet)) from None
        raise
