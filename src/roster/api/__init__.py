"""The HTTP interfaces: the REST API under ``/api/v1`` (and, later, the MCP server at ``/mcp``).

A thin adapter over the same store verbs as the CLI: every request authenticates with a bearer token
that resolves to one principal (:func:`roster.store.company.authenticate`), and every rule is applied
below this package. See docs/api.md.
"""

from roster.api.app import create_app

__all__ = ["create_app"]
