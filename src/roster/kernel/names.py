"""Names: the character sets and lengths of artifact names and principal handles, in one place.

- **Artifact names and kinds** (:func:`check_artifact_name`): 1 to :data:`MAX_NAME_CHARS` characters;
  letters and digits (any script), ``_``, and ``. - + @ = , ~ ( ) [ ]``; spaces only inside. No ``/`` or
  backslash (a name is one path segment, never a path), no control character (NUL included), and not
  ``.`` or ``..``. Examples: ``patch``, ``fix.diff``, ``report (v2).md``.
- **Handles** (:func:`check_handle`): 1 to 63 characters of lowercase letters, digits, ``-`` and ``_``,
  starting with a letter; ``human``, ``agent`` and ``system`` are reserved (they name groups in ``by``
  lists and rights).

Other keys (idempotency keys) are free text bounded in length by their verb, and, like all text, may not
hold NUL (:func:`roster.kernel.values.check_text`). Each check raises
:class:`~roster.errors.InvalidValue` saying what is allowed. Pure functions, no I/O.
"""

from __future__ import annotations

import re

from roster.errors import InvalidValue

MAX_NAME_CHARS = 200
"""Longest artifact name or kind, in characters."""
RESERVED_HANDLES = ("human", "agent", "system")

_NAME_CHAR = r"[\w.+@=,~()\[\]-]"
_NAME = re.compile(rf"{_NAME_CHAR}(?:[\w .+@=,~()\[\]-]*{_NAME_CHAR})?")
HANDLE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
"""The handle rule as a pattern, to use with ``fullmatch``."""


def check_artifact_name(what: str, name: str) -> None:
    """Refuse an artifact ``name`` (or kind) outside the rule above. ``what`` names it in the message
    (``"artifact name"``). Raises :class:`InvalidValue`."""
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise InvalidValue(what, f"a name has 1 to {MAX_NAME_CHARS} characters, not {len(name)}")
    if name in (".", "..") or not _NAME.fullmatch(name):
        raise InvalidValue(what, f"'{_shown(name)}' is not a valid name: use letters, digits, '_' and "
                                 "'.-+@=,~()[]' (spaces only inside); no '/', backslash, control character, "
                                 "or a bare '.' or '..'")


def check_artifact(kind: str, name: str) -> None:
    """Refuse an artifact whose ``kind`` or ``name`` breaks the rule of :func:`check_artifact_name`."""
    check_artifact_name("artifact name", name)
    check_artifact_name("artifact kind", kind)


def check_handle(handle: str) -> None:
    """Refuse a principal ``handle`` outside the rule above. Raises :class:`InvalidValue`."""
    if not HANDLE.fullmatch(handle) or handle in RESERVED_HANDLES:
        raise InvalidValue("handle", f"invalid handle '{_shown(handle)}': 1 to 63 lowercase letters, digits, '-' "
                                     "or '_', starting with a letter; not 'human', 'agent' or 'system'")


def _shown(text: str) -> str:
    """``text`` safe to echo: control characters escaped, cut to 60 characters."""
    cut = text[:60] + ("..." if len(text) > 60 else "")
    return cut.encode("unicode_escape").decode("ascii") if not cut.isprintable() else cut
