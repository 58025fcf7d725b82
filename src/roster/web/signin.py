"""Who is looking: the session cookie, the form token every post must carry, and the sign-in pages.

- ``GET /sign-in``: a form for an API token; with ``?link=...`` (from ``roster dashboard``), a button
  that spends the one-time link (a button, not the GET itself, so a link previewer cannot spend it).
- ``POST /sign-in``: opens a session and sets the cookie (HttpOnly, SameSite=Strict, Path=/).
- ``POST /sign-out``: ends it.

Every other page depends on :func:`viewer`; every form post on :func:`acting`, which refuses a post
without the session's form token (403) before anything else runs. The sign-in form has a form token of
its own, kept in a short-lived cookie (double submit), so no other site can sign a browser in.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from roster.api.auth import TooManyAttempts
from roster.errors import RosterError, Unauthenticated
from roster.store import Session
from roster.store import dashboard_sessions as sessions
from roster.web.render import page

COOKIE = "roster_session"
SIGN_IN_COOKIE = "roster_sign_in"
router = APIRouter()


class SignInNeeded(Exception):
    """No valid session: the browser goes to ``/sign-in`` (a fragment request gets 401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FormRefused(Exception):
    """A form post without the session's form token (CSRF): 403, nothing done."""


@dataclass(frozen=True)
class Viewer:
    """The signed-in human: their :class:`Session` and the form token their pages embed."""

    session: Session
    form_token: str

    @property
    def handle(self) -> str:
        return self.session.principal.handle

    @property
    def company_wide(self) -> bool:
        """Whether this human may read the whole company (costs, the audit log, fitness): not one whose
        ``scopes`` narrow it."""
        return self.session.explain("read", "company").allowed


async def viewer(request: Request) -> Viewer:
    """The signed-in human of a request. Raises :class:`SignInNeeded`."""
    value = request.cookies.get(COOKIE)
    try:
        session = await run_in_threadpool(sessions.session_for, request.app.state.store, value)
    except Unauthenticated as exc:
        raise SignInNeeded(str(exc)) from None
    return Viewer(session, sessions.form_token(value or ""))


Looking = Annotated[Viewer, Depends(viewer)]


async def acting(request: Request, who: Looking) -> Viewer:
    """The signed-in human of a form post whose ``csrf`` field is their session's form token. Raises
    :class:`FormRefused` otherwise (also for a post whose ``Origin`` is another site)."""
    form = await request.form()
    origin = request.headers.get("origin")
    if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise FormRefused(f"the form was posted from {origin}, another site")
    presented = form.get("csrf")
    if not sessions.check_form_token(request.cookies.get(COOKIE, ""), presented if isinstance(presented, str) else None):
        raise FormRefused("the form is missing its security token or it is not this session's; reload the page "
                          "and send it again")
    return who


Acting = Annotated[Viewer, Depends(acting)]


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never ``//host`` or a scheme) as where to go after signing in."""
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


@router.get("/sign-in", response_class=HTMLResponse, include_in_schema=False)
def sign_in_form(request: Request, link: str = "", next: str = "/", reason: str = "") -> Response:
    nonce = secrets.token_urlsafe(24)
    response = page(request, "sign_in.html", None, link=link, next=_safe_next(next), nonce=nonce, reason=reason,
                    title="Sign in")
    response.set_cookie(SIGN_IN_COOKIE, nonce, max_age=600, httponly=True, samesite="strict", path="/sign-in")
    return response


@router.post("/sign-in", include_in_schema=False)
def sign_in(request: Request, csrf: Annotated[str, Form()] = "", token: Annotated[str, Form()] = "",
            link: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/") -> Response:
    store = request.app.state.store
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, csrf):
        return page(request, "sign_in.html", None, link=link, next=_safe_next(next), nonce="", title="Sign in",
                    reason="This sign-in form expired or came from another site; reload the page and try again.",
                    status_code=403)
    try:
        if link:
            value, _session = sessions.sign_in_with_link(store, link)
        else:
            from roster.api.app import client_address  # the REST API's rate limit on failed tokens applies

            limiter = request.app.state.auth_limiter
            wait = limiter.retry_after(f"client:{client_address(request.scope)}", limiter.limits.per_client)
            if wait:
                raise TooManyAttempts("client address", round(wait))
            try:
                value, _session = sessions.sign_in_with_token(store, token.strip())
            except Unauthenticated:
                limiter.failed(f"client:{client_address(request.scope)}")
                raise
    except RosterError as exc:
        nonce = secrets.token_urlsafe(24)
        response = page(request, "sign_in.html", None, link="", next=_safe_next(next), nonce=nonce, title="Sign in",
                        reason=str(exc), status_code=401 if isinstance(exc, Unauthenticated) else 429)
        response.set_cookie(SIGN_IN_COOKIE, nonce, max_age=600, httponly=True, samesite="strict", path="/sign-in")
        return response
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE, value, max_age=int(sessions.SESSION_LIFETIME.total_seconds()), httponly=True,
                        samesite="strict", path="/", secure=request.url.scheme == "https")
    response.delete_cookie(SIGN_IN_COOKIE, path="/sign-in")
    return response


@router.post("/sign-out", include_in_schema=False)
def sign_out(request: Request, who: Acting) -> Response:
    sessions.sign_out(request.app.state.store, request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/sign-in?reason=Signed+out.", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
