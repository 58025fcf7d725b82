"""The ASGI app: ``create_app(store)`` serves the REST API under ``/api/v1`` (Swagger UI at ``/api/v1/docs``,
its files from the ``fastapi-swagger`` package), the MCP server at ``/mcp`` and the dashboard at ``/``
(:mod:`roster.web`).

Every route depends on :func:`session`: the ``Authorization: Bearer <token>`` header is resolved to one
principal's :class:`~roster.store.Session`, whose verbs act as that principal in its own company. Ids in
paths are looked up in the token's company only, so another company's ids are simply not found (404).
The MCP app sits behind :class:`BearerGate`, which answers the same 401 problem before the MCP server
runs. :class:`~roster.api.limits.BodyLimit`, outermost, refuses an oversized or too deeply nested body
before anything parses it or authenticates anyone. :class:`CatchAll` turns an exception nothing else handled into a 500 problem, logged once on one
line (see :mod:`roster.api.logs`): no traceback reaches the console.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from roster import __version__
from roster.api import logs, problems
from roster.api.auth import SESSION_STATE_KEY, AuthLimits, FailureLimiter, session_from_header
from roster.api.limits import BodyLimit, HttpLimits
from roster.defaults import MAX_ID
from roster.errors import RosterError
from roster.store import Session, Store, audit

API_PREFIX = "/api/v1"


def session(request: Request, authorization: Annotated[str | None, Header()] = None) -> Session:
    """The caller's session, from its bearer token. Raises :class:`Unauthenticated` (401),
    :class:`TooManyAttempts` (429: too many failed authentications from this client or company)."""
    return session_from_header(request.app.state.store, authorization, client_address(request.scope),
                               request.app.state.auth_limiter)


def client_address(scope: Scope) -> str:
    """The peer address of a request (what failed authentications are counted by), ``unknown`` if none."""
    client = scope.get("client")
    return client[0] if client else "unknown"


Caller = Annotated[Session, Depends(session)]
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
"""A task, approval request, thread or goal id in a path."""


class Attribution:
    """Pure ASGI middleware: everything a request writes is audited with ``via: api`` (``via: mcp`` under
    /mcp, ``via: dashboard`` for the dashboard's pages and forms). The context variable is set in the request's task, so the worker threads of sync endpoints
    inherit it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        token = audit.VIA.set("mcp" if path.startswith("/mcp") else "api" if path.startswith(API_PREFIX) else "dashboard")
        try:
            await self.app(scope, receive, send)
        finally:
            audit.VIA.reset(token)


class BearerGate:
    """Pure ASGI wrapper around the mounted MCP app: every HTTP request is authenticated from its bearer
    token before the MCP server sees it. A missing, malformed, unknown, revoked or expired token, or a
    paused or retired principal, gets the REST API's 401 problem (``WWW-Authenticate: Bearer``), logged
    once; the session of an accepted token is handed on in ``scope["state"]`` (``SESSION_STATE_KEY``),
    so the MCP server does not authenticate the request again."""

    def __init__(self, app: ASGIApp, store: Store, limiter: FailureLimiter) -> None:
        self.app = app
        self.store = store
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization")
        try:
            caller = await anyio.to_thread.run_sync(session_from_header, self.store, header, client_address(scope),
                                                    self.limiter)
        except RosterError as exc:
            response = problems.answer(scope["method"], scope["path"], exc)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[SESSION_STATE_KEY] = caller
        await self.app(scope, receive, send)


class CatchAll:
    """Pure ASGI middleware: an exception that escapes every handler becomes a 500 problem with no
    internals in it (if no response has started), logged once on one line with the exception's type and
    message. It is not raised further, so the server prints no traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:  # noqa: BLE001 - the one place an unexpected failure is answered and logged
            logs.request_error(scope["method"], scope["path"], 500, "internal", logs.describe(exc))
            if not started:
                await problems.internal(scope, receive, send)


def create_app(store: Store, *, host: str = "127.0.0.1", skills_dir: pathlib.Path | None = None,
               limits: HttpLimits | None = None, auth_limits: AuthLimits | None = None,
               workdir: pathlib.Path | None = None) -> FastAPI:
    """The REST API over ``store`` under ``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``) and the MCP
    server over streamable HTTP at ``/mcp/``. ``host`` is the interface served on: the MCP transport
    accepts only requests addressed to it (DNS-rebinding protection). ``limits``: body size and JSON
    depth, enforced before parsing and authentication (:mod:`roster.api.limits`; default
    :class:`HttpLimits`); ``auth_limits``: failed authentications tolerated (:mod:`roster.api.auth`).
    ``workdir``: the spec's folder, where the command check of a goal set over REST or MCP runs at once
    (default: the folder holding ``skills_dir``, which ``roster serve`` and ``roster up`` put beside the
    spec); with neither, only KPI goals are checked at once and command checks wait for the runtime."""
    from roster.api import routes_fitness, routes_goals, routes_plans, routes_records, routes_tasks, routes_team
    from fastapi_swagger import patch_fastapi  # Swagger UI's files from the package, never a CDN

    from roster.api.mcp_server import create_mcp_server
    from roster.web import mount as mount_dashboard

    if workdir is None and skills_dir is not None:
        workdir = skills_dir.parent
    mcp_server = create_mcp_server(store, skills_dir=skills_dir, workdir=workdir)
    limiter = FailureLimiter(auth_limits)
    mcp_app = BearerGate(mcp_server.streamable_http_app(streamable_http_path="/", host=host), store, limiter)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with mcp_server.session_manager.run():  # a mounted app's lifespan is not run by Starlette
            yield

    app = FastAPI(title="Roster", lifespan=lifespan, version=__version__, openapi_url=f"{API_PREFIX}/openapi.json",
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
                  description="The workplace where AI agents and humans do real work together: every request "
                              "acts as the principal of its bearer token, under the same rules as the CLI.",
                  responses=problems.DOCUMENTED)
    app.state.store = store
    app.state.auth_limiter = limiter
    app.state.workdir = workdir

    app.add_middleware(Attribution)
    app.add_middleware(CatchAll)  # inside it, every other error is already a problem
    app.add_middleware(BodyLimit, limits=limits or HttpLimits())  # outermost: before parsing and authentication
    app.add_exception_handler(RosterError, problems.roster_error)
    app.add_exception_handler(RequestValidationError, problems.validation_error)
    app.add_exception_handler(StarletteHTTPException, problems.http_error)
    for module in (routes_tasks, routes_team, routes_records, routes_goals, routes_plans, routes_fitness):
        app.include_router(module.router, prefix=API_PREFIX)
    app.mount("/mcp", mcp_app)
    patch_fastapi(app, docs_url=f"{API_PREFIX}/docs", redirect_from_root_to_docs=False,
                  swagger_js_url="/static/swagger/swagger-ui-bundle.js", swagger_css_url="/static/swagger/swagger-ui.css",
                  swagger_favicon_url="/static/swagger/favicon-32x32.png")
    mount_dashboard(app, store)
    return app
