"""``roster serve`` (the REST API and the MCP server over HTTP) and ``roster mcp`` (the MCP server over
stdio, for an agent CLI that starts it as a subprocess)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from roster.cli.context import console, reports_errors, workspace
from roster.errors import Unauthenticated

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
"""Where ``roster serve`` and ``roster up`` listen unless told otherwise (this machine only). Kept here, not
imported from roster.api.server, so that the CLI's other commands do not import the web stack."""
HOST = Annotated[str, typer.Option("--host", help="Interface to bind (default: this machine only).")]
PORT = Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port of the REST API and MCP server.")]


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("mcp")(mcp)


@reports_errors
def serve(
    ctx: typer.Context,
    host: HOST = DEFAULT_HOST,
    port: PORT = DEFAULT_PORT,
) -> None:
    """Serve the REST API (/api/v1) and the MCP server (/mcp/) without running agents. Every request
    authenticates with a bearer token (`roster token issue`). Stop with Ctrl-C."""
    from roster.api.server import ApiServer  # the web stack only for the command that serves

    ws = workspace(ctx)
    server = ApiServer(ws.store(), host=host, port=port, skills_dir=ws.spec_path.parent / "skills")
    console.print(f"roster serve: REST at http://{host}:{port}/api/v1, MCP at http://{host}:{port}/mcp/",
                  highlight=False)
    server.run()


@reports_errors
def mcp(
    ctx: typer.Context,
    token_env: Annotated[str, typer.Option("--token-env", help="The environment variable holding the agent's "
                                           "token.")] = "ROSTER_TOKEN",
) -> None:
    """Serve the MCP server over stdio as the principal of the token in $TOKEN_ENV (for agent CLIs that
    start MCP servers as subprocesses)."""
    from roster.api.mcp_server import create_mcp_server  # the mcp SDK only for this command

    token = os.environ.get(token_env, "").strip()
    if not token:
        raise Unauthenticated(f"no token in ${token_env}; issue one with `roster token issue AGENT`")
    ws = workspace(ctx)
    create_mcp_server(ws.store(), token=token, skills_dir=ws.spec_path.parent / "skills").run("stdio")
