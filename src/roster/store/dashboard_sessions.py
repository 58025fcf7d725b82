"""Signing in to the dashboard: a human's browser sessions and the one-time links that open them.

Two kinds of row in ``dashboard_sessions``, each holding only the SHA-256 of its secret:

- a **link** (``rdl.<company>.<id>.<secret>``), made by ``roster dashboard`` for the human running it,
  valid :data:`LINK_LIFETIME` and spent at its first use;
- a **session** (``rds.<company>.<id>.<secret>``), opened by signing in with an API token or a link, valid
  :data:`SESSION_LIFETIME`; the browser keeps it in an HttpOnly cookie, and the form token that every
  form must carry (:func:`form_token`) is derived from it, so no page can be driven from another site.

Only humans sign in: an agent's token or a link for an agent is refused. A session acts exactly as its
human's token would (a :class:`~roster.store.company.Session`), so every page and form is scoped by that
human's rights. Pausing or retiring the human ends their sessions at the next request. Sign-in, sign-out
and refusals are audited (``dashboard.sign_in``, ``dashboard.sign_out``, ``auth.rejected``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from sqlalchemy import insert, select, update

from roster.errors import Unauthenticated
from roster.kernel.names import HANDLE
from roster.store import audit
from roster.store.company import Session, authenticate
from roster.store.principals import hash_secret, principal_row_txn
from roster.store.schema import dashboard_sessions, principals
from roster.store.store import Store, format_ts

LINK_LIFETIME = timedelta(minutes=15)
"""How long a one-time sign-in link stays usable."""
SESSION_LIFETIME = timedelta(hours=12)
"""How long a signed-in browser session lasts; then the human signs in again."""
LINK_PREFIX, SESSION_PREFIX = "rdl", "rds"
_ID = re.compile(r"[0-9a-f]{12}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{20,64}")
_NO_SECRET = hash_secret("")


def _parse(value: str, prefix: str, what: str) -> tuple[str, str, str]:
    parts = value.strip().split(".") if len(value) <= 200 else []
    if (len(parts) != 4 or parts[0] != prefix or not HANDLE.fullmatch(parts[1]) or not _ID.fullmatch(parts[2])
            or not _SECRET.fullmatch(parts[3])):
        raise Unauthenticated(f"malformed {what}")
    return parts[1], parts[2], parts[3]


def open_link(store: Store, session: Session) -> tuple[str, str]:
    """A one-time sign-in link for ``session``'s own principal: ``(secret string, expires_at)``. The
    string goes in the URL ``/sign-in?link=...``. Raises :class:`Unauthenticated` if the principal is not
    a human (agents cannot sign in)."""
    who = session.principal
    if who.kind != "human":
        raise Unauthenticated(f"'{who.handle}' is an agent; only humans sign in to the dashboard")
    link_id, secret = _new(store, who.company, who.handle, "link", LINK_LIFETIME, created_by=who.handle)
    expires = format_ts(store.clock() + LINK_LIFETIME)
    return f"{LINK_PREFIX}.{who.company}.{link_id}.{secret}", expires


def sign_in_with_token(store: Store, token: str) -> tuple[str, Session]:
    """Open a session from an API token: ``(session string for the cookie, Session)``. Raises
    :class:`Unauthenticated` for a bad token (audited by :func:`~roster.store.company.authenticate`) or
    an agent's token."""
    session = authenticate(store, token)
    if session.principal.kind != "human":
        _refuse(store, session.principal.company, session.principal.handle, "token",
                "agents cannot sign in to the dashboard")
    return _open_session(store, session, via="token"), session


def sign_in_with_link(store: Store, link: str) -> tuple[str, Session]:
    """Spend a one-time link and open a session: ``(session string, Session)``. Raises
    :class:`Unauthenticated` for a malformed, unknown, used, expired or revoked link, or one whose human
    is no longer active (each audited as ``auth.rejected`` in its company)."""
    company, link_id, secret = _parse(link, LINK_PREFIX, "sign-in link: ask for a new one with `roster dashboard`")
    now = store.now()
    with store.write() as conn:
        row = conn.execute(select(dashboard_sessions).where(
            dashboard_sessions.c.company_id == company, dashboard_sessions.c.id == link_id,
            dashboard_sessions.c.kind == "link")).first()
        reason = _why_not(conn, row, secret, now, "link")
        if not reason:
            conn.execute(update(dashboard_sessions).where(dashboard_sessions.c.company_id == company,
                                                          dashboard_sessions.c.id == link_id), {"used_at": now})
            principal = principal_row_txn(conn, company, row.principal)
    if reason:
        _refuse(store, company, row.principal if row is not None else None, f"link:{link_id}", reason)
    session = Session(store.shared_company(company), principal)
    return _open_session(store, session, via="link"), session


def session_for(store: Store, value: str | None) -> Session:
    """The :class:`Session` of a session cookie's value. Raises :class:`Unauthenticated` if it is
    missing, malformed, unknown, expired or signed out, or its human is paused or retired (not audited:
    a stale cookie is routine; the page sends the browser to sign in)."""
    if not value:
        raise Unauthenticated("not signed in")
    company, session_id, secret = _parse(value, SESSION_PREFIX, "session cookie: sign in again")
    with store.read() as conn:
        row = conn.execute(select(dashboard_sessions).where(
            dashboard_sessions.c.company_id == company, dashboard_sessions.c.id == session_id,
            dashboard_sessions.c.kind == "session")).first()
        reason = _why_not(conn, row, secret, store.now(), "session", spent_ok=True)
        if reason:
            raise Unauthenticated(f"session refused: {reason}; sign in again")
        principal = principal_row_txn(conn, company, row.principal)
    return Session(store.shared_company(company), principal)


def sign_out(store: Store, value: str) -> None:
    """End the session of a cookie's value at once (audited ``dashboard.sign_out``). A bad value is
    ignored: there is nothing to end."""
    try:
        company, session_id, secret = _parse(value, SESSION_PREFIX, "session cookie")
    except Unauthenticated:
        return
    now = store.now()
    with store.write() as conn:
        row = conn.execute(select(dashboard_sessions).where(
            dashboard_sessions.c.company_id == company, dashboard_sessions.c.id == session_id)).first()
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.secret_sha256,
                                                                                  hash_secret(secret)):
            return
        conn.execute(update(dashboard_sessions).where(dashboard_sessions.c.company_id == company,
                                                      dashboard_sessions.c.id == session_id), {"revoked_at": now})
        head = audit.read_head(conn, company)
        audit.append(conn, head, ts=now, principal=row.principal, action="dashboard.sign_out",
                     subject=f"principal:{row.principal}", data={"session": session_id})
        audit.save_head(conn, head)


def form_token(value: str) -> str:
    """The form token of a session (hex SHA-256 HMAC keyed by the session's secret): every form of the
    dashboard carries it, and a post without it, or with another session's, is refused."""
    return hmac.new(value.encode(), b"roster dashboard form", hashlib.sha256).hexdigest()


def check_form_token(value: str, presented: str | None) -> bool:
    """Whether ``presented`` is the form token of session ``value`` (constant time)."""
    return bool(presented) and hmac.compare_digest(form_token(value), presented or "")


# -- internals ----------------------------------------------------------------------------------------


def _new(store: Store, company: str, handle: str, kind: str, lifetime: timedelta, *, created_by: str,
         audit_action: str | None = None, data: dict | None = None) -> tuple[str, str]:
    row_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    now = store.clock()
    with store.write() as conn:
        conn.execute(insert(dashboard_sessions), {
            "company_id": company, "id": row_id, "kind": kind, "principal": handle,
            "secret_sha256": hash_secret(secret), "created_by": created_by, "created_at": format_ts(now),
            "expires_at": format_ts(now + lifetime)})
        head = audit.read_head(conn, company)
        audit.append(conn, head, ts=format_ts(now), principal=handle,
                     action=audit_action or "dashboard.link", subject=f"principal:{handle}",
                     data={**(data or {}), "id": row_id, "expires_at": format_ts(now + lifetime)})
        audit.save_head(conn, head)
    return row_id, secret


def _open_session(store: Store, session: Session, *, via: str) -> str:
    who = session.principal
    session_id, secret = _new(store, who.company, who.handle, "session", SESSION_LIFETIME, created_by=who.handle,
                              audit_action="dashboard.sign_in", data={"with": via})
    return f"{SESSION_PREFIX}.{who.company}.{session_id}.{secret}"


def _why_not(conn, row, secret: str, now: str, what: str, *, spent_ok: bool = False) -> str:
    # One hash and one constant-time comparison whether or not the row exists.
    matches = hmac.compare_digest(row.secret_sha256 if row is not None else _NO_SECRET, hash_secret(secret))
    if row is None or not matches:
        return f"unknown {what}"
    if row.revoked_at is not None:
        return f"{what} ended at {row.revoked_at}"
    if row.used_at is not None and not spent_ok:
        return f"{what} already used at {row.used_at}: ask for a new one with `roster dashboard`"
    if row.expires_at <= now:
        return f"{what} expired at {row.expires_at}"
    person = conn.execute(select(principals.c.status, principals.c.kind).where(
        principals.c.company_id == row.company_id, principals.c.handle == row.principal)).first()
    if person is None or person.status != "active":
        return f"principal '{row.principal}' is {person.status if person else 'gone'}"
    if person.kind != "human":
        return "agents cannot sign in to the dashboard"
    return ""


def _refuse(store: Store, company: str, handle: str | None, subject: str, reason: str) -> None:
    with store.write() as conn:
        head = audit.read_head(conn, company)
        if head is not None:
            audit.append(conn, head, ts=store.now(), principal=handle or "unknown", action="auth.rejected",
                         subject=subject, data={"reason": reason, "via": "dashboard"})
            audit.save_head(conn, head)
    raise Unauthenticated(f"sign-in refused: {reason}")
