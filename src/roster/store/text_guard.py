"""The store's last line against text it cannot keep: every statement's string parameters are checked
for NUL (:func:`roster.kernel.values.check_text`) before the database sees them.

PostgreSQL's text refuses NUL (the driver raises, and the request would answer 500); SQLite keeps it and
cuts the text at it in C tools. Checking at the one door every write and query passes through covers
every text column and every verb (titles, notes, messages, memory, names, reasons, filters), on both
backends, with one rule. A refusal is :class:`~roster.errors.InvalidValue`; the transaction rolls back,
so nothing is stored. Only ``str`` parameters are looked at (bytes are never text); JSON documents are
serialized with NUL escaped, so their own check is :func:`roster.kernel.values.check_json`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event

from roster.kernel.values import NUL, check_text


def install(engine: Engine) -> None:
    """Check every statement ``engine`` runs through SQLAlchemy (idempotent per engine); statements run
    straight on the driver's cursor (:mod:`roster.store.prepared`) call :func:`check_parameters`."""
    if not event.contains(engine, "before_cursor_execute", _on_execute):
        event.listen(engine, "before_cursor_execute", _on_execute)


def check_parameters(statement: str, params: Any) -> None:
    """Refuse (:class:`~roster.errors.InvalidValue`) a statement whose parameters (a dict, a sequence,
    or ``None``) hold text with NUL. Costs one ``in`` test per string parameter."""
    for value in (params.values() if isinstance(params, dict) else (params or ())):
        if isinstance(value, str) and NUL in value:
            check_text(f"a text value of '{' '.join(statement.split()[:3])[:60]}'", value)


def _on_execute(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, executemany: bool) -> None:
    for params in (parameters if executemany else (parameters,)):
        check_parameters(statement, params)
