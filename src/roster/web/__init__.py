"""The dashboard: server-rendered pages at ``/`` for humans, over the same store verbs and rights as the
REST API and the CLI (a :class:`~roster.store.company.Session` per signed-in human).

Pages are Jinja2 templates; htmx (its JavaScript from the ``django-htmx`` package) swaps fragments and
listens to server-sent events at ``/events``, fed by the store's own commits (:mod:`roster.web.events`).
Charts are SVG drawn by pygal on the server. No asset comes from a CDN. See docs/dashboard.md.
"""

from __future__ import annotations

from roster.web.app import mount

__all__ = ["mount"]
