"""The store's contract, read from the code: every public verb of a company, grouped by the class that
defines it, with the authorization decision it takes and the first sentence of its docstring.

``python -m roster.store.contract`` prints it as Markdown; ``docs/store.md`` holds that text and
``tests/test_store_contract.py`` fails when the two differ, so the page never drifts from the verbs.

Three kinds of public name make up the contract:

- **verbs** that take an ``actor``: each decides its Cedar actions (:mod:`roster.store.authorization`)
  in a transaction of its own;
- **runtime verbs** that take no actor: trusted calls of the runtime (the work query, a run's
  bookkeeping), never reachable through a :class:`~roster.store.company.Session`;
- **composition helpers**, named ``*_txn``: a verb's work inside a transaction its caller opened (the
  connection comes first), so that several verbs commit as one (``apply`` deciding before it writes, an
  approval running its transition, a claim writing the run's brief).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from roster.store.authorization import OWN_ROWS, VERB_DECISIONS
from roster.store.company import CompanyStore, Session
from roster.store.company_base import CompanyBase


def verb_classes() -> list[type]:
    """The verb classes :class:`CompanyStore` combines, base classes first (the order they build on)."""
    return [cls for cls in reversed(CompanyStore.__mro__) if issubclass(cls, CompanyBase) and cls is not CompanyStore]


def public_names(cls: type) -> list[str]:
    """The public callables ``cls`` itself defines, in source order."""
    return [name for name, member in vars(cls).items() if not name.startswith("_") and callable(member)]


def _parameters(function: object) -> str:
    shown, star = [], False
    for parameter in list(inspect.signature(function).parameters.values())[1:]:
        if parameter.kind is parameter.KEYWORD_ONLY and not star:
            shown.append("*")
            star = True
        prefix = {parameter.VAR_POSITIONAL: "*", parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "")
        shown.append(prefix + parameter.name + ("=" if parameter.default is not parameter.empty else ""))
    return ", ".join(shown)


def _summary(function: object) -> str:
    text = " ".join((inspect.getdoc(function) or "").split())
    end = text.find(". ")
    return (text if end < 0 else text[:end + 1]).replace("|", "\\|")


def _decides(name: str, function: object) -> str:
    if name in VERB_DECISIONS:
        actions = VERB_DECISIONS[name]
        return ", ".join(f"`{a}`" for a in actions) if actions else "the action asked"
    if name in OWN_ROWS:
        return "none: " + OWN_ROWS[name]
    if name.endswith("_txn"):
        return "in its caller's transaction"
    return "none: a trusted runtime call"


def rows(cls: type) -> Iterator[str]:
    for name in public_names(cls):
        function = vars(cls)[name]
        session = "yes" if name in Session.VERBS else ""
        yield (f"| `{name}({_parameters(function)})` | {_decides(name, function)} | {session} | "
               f"{_summary(function)} |")


def markdown() -> str:
    """The contract as the Markdown of ``docs/store.md``'s generated part."""
    out = []
    for cls in verb_classes():
        names = public_names(cls)
        if not names:
            continue
        module = cls.__module__.removeprefix("roster.").replace(".", "/")
        out += [f"### `{cls.__name__}` (`{module}.py`)", "",
                "| verb | decides | on a session | what it does |", "|---|---|---|---|", *rows(cls), ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
