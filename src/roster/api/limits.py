"""Limits applied at the door, before a request body is parsed and before anyone is authenticated.

:class:`BodyLimit` (pure ASGI, outermost) enforces :class:`HttpLimits` on every request, REST and MCP:

- a ``Content-Length`` over the limit is answered 413 at once, without reading a byte of the body;
- a body sent without one (chunked) is read only up to the limit: the request is cut there and answered
  413 (if the app has not answered already);
- any other body (all but an artifact upload) is read whole up to ``max_body_bytes``; a JSON one (no
  content type, ``application/json`` or ``+json``) is then scanned (:func:`roster.kernel.values.scan_json`:
  brackets outside strings, ``\\u0000`` inside them) before the app parses it: nesting over
  ``max_json_depth`` or a NUL escape is answered 422 (``invalid-value``);
- an artifact upload (``PUT /api/v1/tasks/{id}/artifacts/{name}``) is streamed to its route under
  ``max_upload_bytes``; the route then applies the company spec's own ``limits.artifact_bytes`` after
  authentication.

The settings come from the environment of ``roster serve`` / ``roster up`` (:meth:`HttpLimits.from_env`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from roster.api import problems
from roster.errors import InvalidValue, PayloadTooLarge, UsageError
from roster.kernel.values import MAX_JSON_DEPTH, scan_json

MIB = 1_048_576
_UPLOAD_PATH = re.compile(r"/api/v1/tasks/[^/]+/artifacts/[^/]+")
"""The one route whose body is raw content (``PUT``): an artifact upload, streamed, never scanned."""


@dataclass(frozen=True)
class HttpLimits:
    """``max_body_bytes``: largest request body but an artifact upload (bytes; ``ROSTER_MAX_BODY_BYTES``,
    default 1 MiB). ``max_upload_bytes``: largest artifact upload (bytes; ``ROSTER_MAX_UPLOAD_BYTES``,
    default 16 MiB; the spec's ``limits.artifact_bytes`` applies too). ``max_json_depth``: deepest
    nesting of a JSON body (``ROSTER_MAX_JSON_DEPTH``, default 64)."""

    max_body_bytes: int = MIB
    max_upload_bytes: int = 16 * MIB
    max_json_depth: int = MAX_JSON_DEPTH

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HttpLimits:
        """The limits set in ``environ`` (default: the process environment); unset ones keep their
        default. Raises :class:`UsageError` for a value that is not a positive whole number."""
        environ = os.environ if environ is None else environ
        values = {}
        for field, variable in (("max_body_bytes", "ROSTER_MAX_BODY_BYTES"),
                                ("max_upload_bytes", "ROSTER_MAX_UPLOAD_BYTES"),
                                ("max_json_depth", "ROSTER_MAX_JSON_DEPTH")):
            raw = environ.get(variable, "").strip()
            if raw:
                if not raw.isdigit() or int(raw) < 1:
                    raise UsageError(f"${variable} is a positive whole number, not '{raw[:40]}'")
                values[field] = int(raw)
        return cls(**values)


class BodyLimit:
    """Pure ASGI middleware enforcing :class:`HttpLimits` (see the module's docstring)."""

    def __init__(self, app: ASGIApp, limits: HttpLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        upload = scope["method"] == "PUT" and _UPLOAD_PATH.fullmatch(scope["path"]) is not None
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        json_body = media in ("", "application/json") or media.endswith("+json")
        limit = self.limits.max_upload_bytes if upload else self.limits.max_body_bytes
        what = "an artifact upload" if upload else "a request body"
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, PayloadTooLarge(what, int(declared) if declared.isdigit() else -1,
                                                                     limit))
            return
        if upload:
            await self._streamed(scope, receive, send, limit, what)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await self._refuse(scope, receive, send, PayloadTooLarge(f"{what} (cut while read)", len(body),
                                                                         limit))
                return
        wrong = scan_json(bytes(body), self.limits.max_json_depth) if body and json_body else None
        if wrong:
            await self._refuse(scope, receive, send, InvalidValue("request body", wrong))
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _streamed(self, scope: Scope, receive: Receive, send: Send, limit: int, what: str) -> None:
        """Hand the body on as it comes; the read that goes over ``limit`` raises :class:`PayloadTooLarge`
        in the route reading it (answered 413 by the app's error handler), and nothing more is read."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(f"{what} (cut while read)", seen, limit)
            return message

        await self.app(scope, counted, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, error: PayloadTooLarge | InvalidValue) -> None:
        response = problems.answer(scope["method"], scope["path"], error)
        response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app ``body`` (already read) once, then waits on the real one (for
    the disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
