"""The ASGI app: ``create_app(store)`` serves the REST API under ``/api/v1`` and the MCP server at ``/mcp``.

Every route depends on :func:`session`: the ``Authorization: Bearer <token>`` header is resolved to one
principal's :class:`~roster.store.Session`, whose verbs act as that principal in its own company. Ids in
paths are looked up in the token's company only, so another company's ids are simply not found (404).
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from roster import __version__
from roster.api import problems
from roster.errors import RosterError, Unauthenticated
from roster.store import Session, Store, audit
from roster.store.company import authenticate

API_PREFIX = "/api/v1"
MAX_ID = 2**53 - 1
"""Largest id a request may name (ids beyond it exist nowhere; the database could not even compare them)."""


def session(request: Request, authorization: Annotated[str | None, Header()] = None) -> Session:
    """The caller's session, from its bearer token. Raises :class:`Unauthenticated` (401)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing bearer token")
    return authenticate(request.app.state.store, token.strip())


Caller = Annotated[Session, Depends(session)]
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
"""A task, approval request or thread id in a path."""


class Attribution:
    """Pure ASGI middleware: everything a request writes is audited with ``via: api`` (``via: mcp`` under
    /mcp). The context variable is set in the request's task, so the worker threads of sync endpoints
    inherit it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = audit.VIA.set("mcp" if scope["path"].startswith("/mcp") else "api")
        try:
            await self.app(scope, receive, send)
        finally:
            audit.VIA.reset(token)


def create_app(store: Store, *, host: str = "127.0.0.1", skills_dir: pathlib.Path | None = None) -> FastAPI:
    """The REST API over ``store`` under ``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``) and the MCP
    server over streamable HTTP at ``/mcp/``. ``host`` is the interface served on: the MCP transport
    accepts only requests addressed to it (DNS-rebinding protection)."""
    from roster.api import routes_records, routes_tasks, routes_team
    from roster.api.mcp_server import create_mcp_server

    mcp_server = create_mcp_server(store, skills_dir=skills_dir)
    mcp_app = mcp_server.streamable_http_app(streamable_http_path="/", host=host)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with mcp_server.session_manager.run():  # a mounted app's lifespan is not run by Starlette
            yield

    app = FastAPI(title="Roster", lifespan=lifespan, version=__version__, openapi_url=f"{API_PREFIX}/openapi.json",
                  docs_url=f"{API_PREFIX}/docs", redoc_url=None,
                  description="The workplace where AI agents and humans do real work together: every request "
                              "acts as the principal of its bearer token, under the same rules as the CLI.",
                  responses=problems.DOCUMENTED)
    app.state.store = store

    app.add_middleware(Attribution)
    app.add_exception_handler(RosterError, problems.roster_error)
    app.add_exception_handler(RequestValidationError, problems.validation_error)
    app.add_exception_handler(StarletteHTTPException, problems.http_error)
    app.add_exception_handler(Exception, problems.internal_error)
    for module in (routes_tasks, routes_team, routes_records):
        app.include_router(module.router, prefix=API_PREFIX)
    app.mount("/mcp", mcp_app)
    return app
