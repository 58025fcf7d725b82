"""Errors as RFC 9457 problem details: one stable ``type`` per failure, from :mod:`roster.errors`.

A response is ``application/problem+json``: ``type`` (``/problems/<code>``, a URI reference relative to
the server, one per :class:`~roster.errors.RosterError` ``code``), ``title``, ``status``, ``detail`` (the
error's message) and the error's own details as extension members (``clause`` for a contract violation,
``expected``/``actual`` for a stale version, ...). An unauthenticated request gets 401 with no detail of
why (unknown, revoked or expired tokens look alike); the refusal is in the audit log. Every problem
answered is logged once, on one line (:func:`roster.api.logs.request_error`).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from roster.api import logs
from roster.errors import RosterError

PROBLEM_MEDIA_TYPE = "application/problem+json"

STATUS: dict[str, int] = {
    "usage": 400,
    "invalid-spec": 422,
    "not-found": 404,
    "contract-violation": 409,
    "invalid-fields": 422,
    "stale-version": 409,
    "payload-too-large": 413,
    "apply-refused": 409,
    "store-busy": 503,
    "audit-chain-broken": 409,
    "denied": 403,
    "unauthenticated": 401,
    "approval-pending": 202,
    "stale-fencing-token": 409,
    "lease-held": 409,
    "plan-refused": 409,
    "plan-held": 409,
    "corrupt-artifact": 500,
    "context-over-budget": 422,
    "validation": 422,
    "invalid-value": 422,
    "too-many-attempts": 429,
}
"""HTTP status per error code. ``approval-pending`` is 202: the request was accepted and waits for an
approver. ``corrupt-artifact`` is 500: stored data no longer matches its hash."""

TITLES: dict[str, str] = {
    "usage": "Bad request",
    "not-found": "Not found",
    "contract-violation": "Contract violation",
    "invalid-fields": "Invalid fields",
    "stale-version": "Stale version",
    "payload-too-large": "Payload too large",
    "denied": "Denied",
    "unauthenticated": "Unauthenticated",
    "approval-pending": "Approval pending",
    "stale-fencing-token": "Stale fencing token",
    "lease-held": "Lease held",
    "validation": "Request validation failed",
    "invalid-value": "Invalid value",
    "too-many-attempts": "Too many failed authentications",
    "method-not-allowed": "Method not allowed",
    "internal": "Internal server error",
}


class Problem(BaseModel):
    """An RFC 9457 problem detail (extension members allowed)."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str


def problem(code: str, detail: str, status: int | None = None, **extensions: Any) -> JSONResponse:
    status = status or STATUS.get(code, 500)
    body = {"type": f"/problems/{code}", "title": TITLES.get(code, code.replace("-", " ").capitalize()),
            "status": status, "detail": detail, **extensions}
    headers = {"WWW-Authenticate": 'Bearer realm="roster"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def answer(method: str, path: str, exc: RosterError) -> JSONResponse:
    """The problem for a Roster error (an unauthenticated request gets no detail of why), logged once."""
    status = STATUS.get(exc.code, 500)
    logs.request_error(method, path, status, exc.code, exc.message)
    if exc.code == "unauthenticated":
        return problem("unauthenticated", "a valid bearer token is required")
    extensions = {k: v for k, v in exc.to_dict().items() if k not in ("error", "message", "detail")}
    if exc.code == "contract-violation":
        extensions["violation"] = getattr(exc, "detail", "")
    response = problem(exc.code, exc.message, **extensions)
    if exc.code == "too-many-attempts":
        response.headers["Retry-After"] = str(extensions.get("retry_after", 60))
    return response


async def roster_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RosterError)
    return answer(request.method, request.url.path, exc)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors()]
    summary = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
    logs.request_error(request.method, request.url.path, 422, "validation", summary)
    return problem("validation", f"the request is invalid: {summary}", errors=errors)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (no such route: 404, wrong method: 405) as problems too."""
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, f"http-{exc.status_code}")
    logs.request_error(request.method, request.url.path, exc.status_code, code, str(exc.detail))
    response = problem(code, str(exc.detail), status=exc.status_code)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def internal(scope: Scope, receive: Receive, send: Send) -> None:
    """Send the answer to an unexpected failure: a 500 problem with no internals in it (the caller
    logged the failure, on one line)."""
    response = problem("internal", "the server failed to handle this request; nothing about it is shown here",
                       status=500)
    await response(scope, receive, send)


def documented(description: str) -> dict[str, Any]:
    """An OpenAPI response entry for a problem: ``application/problem+json`` (and the same schema as JSON)."""
    return {"model": Problem, "description": description,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


DOCUMENTED: dict[int | str, dict[str, Any]] = {
    400: documented("A request Roster cannot act on (e.g. a cursor it did not hand out)"),
    401: documented("Missing or invalid bearer token"),
    403: documented("Denied by the principal's rights"),
    404: documented("Not found in the token's company"),
    405: documented("Method not allowed"),
    409: documented("A contract violation, stale version, stale fencing token or held lease"),
    413: documented("Payload over its limit"),
    422: documented("The request or the task's fields fail their schema, or a value could not be stored "
                    "(nested too deep, a NUL in text, a name outside its character set)"),
    429: documented("Too many failed authentications from this client or against this company; "
                    "see Retry-After"),
    500: documented("Stored data no longer matches its hash, or an internal error"),
    503: documented("The database stayed locked past the lock timeout"),
}
"""The problem responses every operation may give, documented on each (RFC 9457 bodies)."""
