"""What a stored value may be: the one rule every interface and every store write path shares.

A value is refused before it is saved if it could not be stored and read back whole:

- JSON (task fields, transition writes, delegation packets, memory provenance, request bodies) nested
  deeper than :data:`MAX_JSON_DEPTH` levels (each object or array is one level), or holding something
  JSON cannot carry (a non-string key, NaN or an infinity, a type that is not JSON);
- text holding a NUL character (U+0000): PostgreSQL's text refuses it, and C tools cut text there.

Names (artifact names, handles, keys) have their own rule in :mod:`roster.kernel.names`.

:func:`check_json` and :func:`check_text` raise :class:`~roster.errors.InvalidValue` naming the value and
the rule. :func:`scan_json` is the cheap scan of a raw JSON document the HTTP interface runs before it
parses a body: it walks brackets outside strings and ``\\u0000`` escapes inside them, without building
anything. Pure functions, no I/O.
"""

from __future__ import annotations

import math
import re
from typing import Any

from roster.errors import InvalidValue

MAX_JSON_DEPTH = 64
"""Deepest nesting of objects and arrays a stored JSON value (or a request body) may have."""

NUL = "\x00"
"""The one character no stored text may hold."""
_SCALARS = (str, int, float, bool, type(None))
_STRUCTURE = re.compile(rb'["\\\[\]{}]')


def check_text(what: str, text: str) -> None:
    """Refuse ``text`` (a title, note, message, memory entry) if it holds a NUL character.
    Raises :class:`InvalidValue`."""
    if NUL in text:
        raise InvalidValue(what, f"text may not contain a NUL character (U+0000, at offset {text.index(NUL)}); "
                                 "remove it")


def check_json(what: str, value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse ``value`` unless it is JSON that reads back as itself: dicts with string keys, lists,
    strings without NUL, finite numbers, booleans and ``None``, nested at most ``max_depth`` levels.
    Iterative (no recursion, so no :class:`RecursionError` however deep the value is). Raises
    :class:`InvalidValue` naming the first offending path."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "$")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth + 1 > max_depth:
                raise InvalidValue(what, f"nested more than {max_depth} levels deep (at {_short(path)}); "
                                         "flatten it")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise InvalidValue(what, f"a key at {_short(path)} is a {type(key).__name__}, not a "
                                                 "string")
                    if NUL in key:
                        raise InvalidValue(what, f"a key at {_short(path)} contains a NUL character (U+0000)")
                    stack.append((child, depth + 1, f"{path}.{key[:40]}"))
            else:
                stack.extend((child, depth + 1, f"{path}[{index}]") for index, child in enumerate(item))
        elif isinstance(item, str):
            if NUL in item:
                raise InvalidValue(what, f"the text at {_short(path)} contains a NUL character (U+0000); remove it")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidValue(what, f"{item} at {_short(path)} is not a JSON number; use a finite number")
        elif not isinstance(item, _SCALARS):
            raise InvalidValue(what, f"a {type(item).__name__} at {_short(path)} is not a JSON value")


def scan_json(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Scan a raw JSON document without parsing it: ``None`` if its nesting stays within ``max_depth``
    and no string holds a ``\\u0000`` escape, else what is wrong (one sentence). Malformed JSON is not
    judged here (the parser reports it). Linear in ``len(raw)``; allocates nothing per byte."""
    if raw.count(b"{") + raw.count(b"[") <= max_depth and b"\\u0000" not in raw:
        return None  # the common case: too few brackets to be too deep, and no NUL escape anywhere
    depth = 0
    in_string = False
    skip_to = 0
    for match in _STRUCTURE.finditer(raw):
        start = match.start()
        if start < skip_to:  # the character right after a backslash in a string
            continue
        byte = raw[start]
        if in_string:
            if byte == 0x5C:  # backslash: the next character is escaped
                if raw[start + 1:start + 6] == b"u0000":
                    return "a string in the body contains a NUL character (\\u0000)"
                skip_to = start + 2
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            depth += 1
            if depth > max_depth:
                return f"the JSON body is nested more than {max_depth} levels deep"
        elif byte in (0x7D, 0x5D):  # } ]
            depth -= 1
    return None


def _short(path: str) -> str:
    return path if len(path) <= 120 else f"{path[:60]}...{path[-50:]}"
