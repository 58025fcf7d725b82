"""Rendering: the Jinja2 templates (autoescaped), the page helper every view uses, and the error page a
refused action shows (its status from the REST API's one table of error codes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from roster.api.problems import STATUS
from roster.errors import RosterError

if TYPE_CHECKING:
    from roster.web.signin import Viewer

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
templates.env.filters["short_ts"] = lambda ts: (ts or "")[:19].replace("T", " ")

NAV = (("/", "Overview"), ("/inbox", "Inbox"), ("/org", "Org chart"), ("/boards", "Boards"),
       ("/agents", "Agents"), ("/costs", "Costs"), ("/audit", "Audit"), ("/webhooks", "Webhooks"))
"""The navigation bar, in order: the inbox is second, never hidden."""
COMPANY_WIDE = {"/costs", "/audit", "/webhooks"}
"""Pages that read the whole company: left out of the bar for a human whose ``scopes`` narrow it."""


def page(request: Request, template: str, who: Viewer | None, *, status_code: int = 200,
         **context: Any) -> HTMLResponse:
    """``template`` rendered with ``context``, the navigation and the viewer's form token."""
    nav = NAV if who is None or who.company_wide else tuple(n for n in NAV if n[0] not in COMPANY_WIDE)
    return templates.TemplateResponse(request, template, {
        "who": who, "nav": nav, "path": request.url.path, "csrf": who.form_token if who else "", **context},
        status_code=status_code)


def fragment(request: Request, template: str, who: Viewer, **context: Any) -> HTMLResponse:
    """A part of a page (for htmx to swap in): the same context as :func:`page`."""
    return page(request, template, who, **context)


def refused(request: Request, who: Viewer | None, exc: RosterError) -> HTMLResponse:
    """The error page of a refused read or action: what was wrong, in the store's words, with the HTTP
    status the REST API gives the same error."""
    return page(request, "error.html", who, status_code=STATUS.get(exc.code, 400), title="Not done",
                error=str(exc), code=exc.code)
