"""Serving the ASGI app with uvicorn: in the foreground (``roster serve``) or beside the dispatcher in a
thread of its own (``roster up``). Binds to 127.0.0.1 by default: exposing Roster beyond the machine is
a decision to take on purpose (``--host``). uvicorn's loggers, the MCP SDK's and Roster's API log one
line per event on stderr, never a traceback (:mod:`roster.api.logs`)."""

from __future__ import annotations

import threading
from pathlib import Path

import uvicorn

from roster.api import logs
from roster.api.app import create_app
from roster.api.limits import HttpLimits
from roster.errors import UsageError
from roster.store import Store

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


class ApiServer:
    """uvicorn serving :func:`create_app` over ``store`` at ``host:port`` (port 0: any free port).
    ``log_level`` (``warning`` by default: server errors only; ``info`` adds one line per refused
    request) applies to uvicorn, the MCP SDK and Roster's API loggers alike. The body limits come from the
    environment (:meth:`~roster.api.limits.HttpLimits.from_env`: ``ROSTER_MAX_BODY_BYTES``,
    ``ROSTER_MAX_UPLOAD_BYTES``, ``ROSTER_MAX_JSON_DEPTH``). ``workdir``: where goals' command checks run
    (:func:`create_app`)."""

    def __init__(self, store: Store, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 skills_dir: Path | None = None, log_level: str = "warning", workdir: Path | None = None) -> None:
        app = create_app(store, host=host, skills_dir=skills_dir, limits=HttpLimits.from_env(), workdir=workdir)
        # log_config=None: uvicorn leaves its loggers to logs.configure (one line each, no traceback)
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                                log_config=None)
        logs.configure(log_level)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL once started (with the real port when 0 was asked for)."""
        sockets = [s for server in getattr(self.server, "servers", []) for s in server.sockets]
        host, port = sockets[0].getsockname()[:2] if sockets else (self.server.config.host, self.server.config.port)
        return f"http://{host}:{port}"

    def run(self) -> None:
        """Serve in this thread until interrupted (SIGINT/SIGTERM, handled by uvicorn)."""
        self.server.run()

    def start(self, timeout: float = 10.0) -> str:
        """Serve in a background thread; returns the base URL. Raises :class:`UsageError` if the server
        did not start within ``timeout`` seconds (for example, the port is taken)."""
        # uvicorn installs signal handlers only from the main thread: the dispatcher's stay in charge.
        self._thread = threading.Thread(target=self.server.run, name="roster-api", daemon=True)
        self._thread.start()
        waited = 0.0
        while not self.server.started and self._thread.is_alive() and waited < timeout:
            threading.Event().wait(0.05)
            waited += 0.05
        if not self.server.started:
            raise UsageError(f"the API server did not start on {self.server.config.host}:{self.server.config.port}"
                             " (is the port taken? choose another with --port, or --no-serve)")
        return self.url

    def wait(self) -> None:
        """Block until the server started by :meth:`start` stops; Ctrl-C (``KeyboardInterrupt``) stops it."""
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
