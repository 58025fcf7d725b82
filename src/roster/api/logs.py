"""The server's console log: one line per event, never a traceback.

Every error a request meets is logged once, by the layer that answers it: a REST request refused or
an MCP request refused at the door (401) by :func:`request_error` (``METHOD PATH -> STATUS code:
message``), a refused MCP tool call by :func:`tool_error` (``MCP tools/call NAME -> code: message``), an
unexpected exception in a tool or resource by the MCP SDK's own logger, an exception that escapes the
app by the catch-all in ``roster.api.app``. :func:`configure` sends the loggers of Roster's API, uvicorn and the MCP SDK to
stderr through :class:`OneLine`, which renders an exception as ``Type: message`` (its cause too) on the
same line, so a bug is still named without flooding the console.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TextIO

LOGGER = logging.getLogger("roster.api")
LOGGERS = ("roster.api", "uvicorn", "uvicorn.error", "uvicorn.access", "mcp")
"""The loggers :func:`configure` sends through :class:`OneLine` (uvicorn's are configured by name)."""
_MARK = "_roster_one_line"


class OneLine(logging.Formatter):
    """``time level logger: message`` on one line; an exception is appended as ``(Type: message)``,
    followed by its ``__cause__`` / ``__context__`` once, never as a traceback."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        summary = ""
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            summary = f" ({describe(error)})"
            cause = error.__cause__ or error.__context__
            if cause is not None:
                summary = f" ({describe(error)}; caused by {describe(cause)})"
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            line = super().format(record) + summary
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        return line.replace("\n", " | ")


def describe(error: BaseException) -> str:
    """``Type: message`` of an exception, on one line."""
    text = str(error).replace("\n", " | ")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def configure(level: int | str = logging.WARNING, stream: TextIO | None = None) -> None:
    """Send :data:`LOGGERS` to ``stream`` (default: stderr), one line per record, at ``level``. The MCP
    SDK's own logger stays at ``WARNING`` or above: its ``INFO`` lines repeat the tool failures Roster
    logs itself. Idempotent: calling it again replaces the handler it installed."""
    level = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(OneLine())
    setattr(handler, _MARK, True)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, _MARK, False) or name.startswith("uvicorn")]:
            logger.removeHandler(old)
        if name in ("roster.api", "uvicorn", "mcp"):
            logger.addHandler(handler)
            logger.propagate = False
        else:  # uvicorn.error and uvicorn.access reach the handler through "uvicorn"
            logger.propagate = True
        logger.setLevel(max(level, logging.WARNING) if name == "mcp" else level)


@contextlib.contextmanager
def sdk_quiet() -> Iterator[None]:
    """Keep the MCP SDK from installing its rich, traceback-printing handler on the root logger (its
    ``MCPServer`` calls ``logging.basicConfig`` when built): the root logger is left as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def request_error(method: str, path: str, status: int, code: str, message: str) -> None:
    """Log one refused or failed request, once: ``METHOD PATH -> STATUS code: message``. Server errors
    (5xx) are ``ERROR``; refusals (4xx, 202 approval-pending) are ``WARNING``."""
    level = logging.ERROR if status >= 500 else logging.WARNING
    LOGGER.log(level, "%s %s -> %d %s: %s", method, path, status, code, message.replace("\n", " | "))



def tool_error(tool: str, code: str, message: str) -> None:
    """Log one refused MCP tool call or resource read, once, at ``WARNING``: ``MCP tools/call NAME ->
    code: message``."""
    LOGGER.warning("MCP tools/call %s -> %s: %s", tool, code, message.replace("\n", " | "))
