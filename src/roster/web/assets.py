"""Where the dashboard's static files come from: its own stylesheet, and htmx with its server-sent
events extension as the ``django-htmx`` package ships them (found without importing Django)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

OWN = Path(__file__).parent / "static"
HTMX_FILES = ("htmx-2.min.js", "ext/hx-sse-2.min.js")
"""The vendored files the pages load, under ``/static/vendor/``."""


def vendor_dir() -> Path:
    """The folder of htmx's files inside the installed ``django-htmx`` package. Raises
    :class:`RuntimeError` naming the package if it is not installed or lacks a file the pages need."""
    spec = importlib.util.find_spec("django_htmx")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the dashboard needs the package django-htmx (pip install -r requirements.lock)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "static" / "django_htmx"
    missing = [name for name in HTMX_FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"django-htmx at {folder} lacks {', '.join(missing)}; install the pinned version")
    return folder
