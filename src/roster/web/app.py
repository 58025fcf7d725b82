"""Mounting the dashboard on the ASGI app of :func:`roster.api.app.create_app`: its routers, its static
files, the live-update hub, and the answers for a missing sign-in (a redirect) and a refused form (403)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from roster.api import logs
from roster.errors import RosterError
from roster.store import Store, dashboard_sessions
from roster.web import actions, assets, signin, views
from roster.web.events import EventHub
from roster.web.render import page
from roster.web.signin import FormRefused, Looking, SignInNeeded
from roster.web.verifications import Verifications


def mount(app: FastAPI, store: Store) -> None:
    """Serve the dashboard at ``/`` of ``app`` (REST stays at ``/api/v1``, MCP at ``/mcp``)."""
    hub = EventHub()
    hub.attach(store)
    app.state.event_hub = hub
    app.state.verifications = Verifications(store)
    app.mount("/static/vendor", StaticFiles(directory=assets.vendor_dir()), name="vendor")
    app.mount("/static", StaticFiles(directory=assets.OWN), name="static")
    app.include_router(signin.router)
    app.include_router(views.router)
    app.include_router(actions.router)

    @app.get("/events", include_in_schema=False)
    async def events(request: Request, who: Looking) -> Response:
        last = await run_in_threadpool(who.session.audit_log, newest_first=True, limit=1)
        cookie = request.cookies.get(signin.COOKIE)

        async def signed_in() -> bool:
            try:
                await run_in_threadpool(dashboard_sessions.session_for, store, cookie)
            except RosterError:
                return False
            return True

        return EventSourceResponse(hub.stream(who.session, last[0].seq if last else 0, signed_in), ping=15)

    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, exc: SignInNeeded) -> Response:
        if request.headers.get("hx-request") or request.url.path == "/events":
            return Response(status_code=401, headers={"HX-Redirect": "/sign-in"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/sign-in?next={target}" if request.method == "GET" else "/sign-in", status_code=303)

    @app.exception_handler(FormRefused)
    async def form_refused(request: Request, exc: FormRefused) -> HTMLResponse:
        logs.request_error(request.method, request.url.path, 403, "csrf", str(exc))
        return page(request, "error.html", None, status_code=403, title="Form refused", error=str(exc), code="csrf")
