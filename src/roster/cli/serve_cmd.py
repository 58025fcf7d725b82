"""``roster serve`` (the dashboard, the REST API and the MCP server over HTTP), ``roster dashboard`` (a
one-time sign-in link to the dashboard) and ``roster mcp`` (the MCP server over stdio, for an agent CLI
that starts it as a subprocess)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from roster.cli.context import console, emit_json, reports_errors, workspace
from roster.errors import Unauthenticated

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
"""Where ``roster serve`` and ``roster up`` listen unless told otherwise (this machine only). Kept here, not
imported from roster.api.server, so that the CLI's other commands do not import the web stack."""
HOST = Annotated[str, typer.Option("--host", help="Interface to bind (default: this machine only).")]
PORT = Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port of the REST API and MCP server.")]


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("dashboard")(dashboard)
    app.command("mcp")(mcp)


@reports_errors
def serve(
    ctx: typer.Context,
    host: HOST = DEFAULT_HOST,
    port: PORT = DEFAULT_PORT,
) -> None:
    """Serve the dashboard (/), the REST API (/api/v1) and the MCP server (/mcp/) without running agents.
    Humans sign in to the dashboard with `roster dashboard`; API requests authenticate with a bearer token
    (`roster token issue`). Stop with Ctrl-C."""
    from roster.api.server import ApiServer  # the web stack only for the command that serves

    ws = workspace(ctx)
    server = ApiServer(ws.store(), host=host, port=port, skills_dir=ws.spec_path.parent / "skills")
    console.print(f"roster serve: dashboard at http://{host}:{port}/ (sign in: roster dashboard), "
                  f"REST at http://{host}:{port}/api/v1, MCP at http://{host}:{port}/mcp/", highlight=False)
    server.run()


@reports_errors
def dashboard(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option("--url", help="Where the dashboard is served (default: "
                                            f"http://{DEFAULT_HOST}:{DEFAULT_PORT}, as roster serve and roster up).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the link as JSON.")] = False,
) -> None:
    """Print a one-time link that signs you in to the dashboard (`roster serve` or `roster up` serves it).
    It works once, within 15 minutes, for the human whose token this command runs with; agents cannot
    sign in."""
    from roster.store.dashboard_sessions import open_link  # the store only when the command runs

    ws = workspace(ctx)
    link, expires = open_link(ws.store(), ws.session())
    base = (url or f"http://{DEFAULT_HOST}:{DEFAULT_PORT}").rstrip("/")
    address = f"{base}/sign-in?link={link}"
    if as_json:
        emit_json({"url": address, "expires_at": expires})
        return
    console.print(f"Open this link to sign in to the dashboard (once, until {expires[:19].replace('T', ' ')} UTC):",
                  highlight=False)
    console.print(address, highlight=False, soft_wrap=True)


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
