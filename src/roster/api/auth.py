"""Bearer tokens, one rule for every HTTP interface: ``Authorization: Bearer <token>`` (the scheme in any
case) resolves to one principal's :class:`~roster.store.Session`; anything else is
:class:`~roster.errors.Unauthenticated`. The REST dependency, the gate in front of the MCP app, and the MCP
server itself (for transports that carry headers) all call :func:`session_from_header`."""

from __future__ import annotations

from roster.errors import Unauthenticated
from roster.store import Session, Store
from roster.store.company import authenticate

SESSION_STATE_KEY = "roster.session"
"""Where the bearer gate in front of the MCP app leaves the authenticated session (the ASGI scope's
``state``), for the MCP server to act as."""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization`` header value if it is ``Bearer <token>``, else ``None``."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def session_from_header(store: Store, authorization: str | None) -> Session:
    """The session of the bearer token in ``authorization``. Raises :class:`Unauthenticated` for a
    missing, malformed, unknown, revoked or expired token, or a paused or retired principal (each
    refusal with a known company audited as ``auth.rejected``)."""
    token = bearer_token(authorization)
    if token is None:
        raise Unauthenticated("missing bearer token")
    return authenticate(store, token)
