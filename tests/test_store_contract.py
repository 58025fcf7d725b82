"""The store as one contract: components meet only at public names.

Read as source (``ast``), never run: a verb module that reaches into a sibling's private helper, or any
module that imports another's private name, fails here with the file, line and name.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import roster
from roster.store.company import CompanyStore
from roster.store.company_base import CompanyBase

SRC = Path(roster.__file__).parent
LIBRARY_PRIVATES = {"_mapping", "_asdict", "_replace", "_fields", "_exit", "_value_", "_name_", "_missing_"}
"""Attributes of libraries spelled with one underscore by design (SQLAlchemy rows, namedtuples, os, enum)."""


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(("roster", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


def defined_names(tree: ast.AST) -> set[str]:
    """Every name a module binds: functions, classes, assignments, attributes assigned on anything."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return names


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_imports_another_modules_private_names():
    trees = modules()
    found = [f"{module}:{node.lineno} imports {node.module}.{alias.name}"
             for module, tree in trees.items() for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("roster")
             and node.module != module
             for alias in node.names if private(alias.name)]
    assert found == []


def test_no_module_uses_a_private_attribute_that_only_another_module_defines():
    """``obj._helper`` is fine inside the module that defines ``_helper`` (and on ``self`` within a class
    hierarchy, checked below); anywhere else it is reaching into another component."""
    trees = modules()
    owners: dict[str, set[str]] = {}
    for module, tree in trees.items():
        for name in defined_names(tree):
            owners.setdefault(name, set()).add(module)
    found = []
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and private(node.attr)) or node.attr in LIBRARY_PRIVATES:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue  # the class hierarchy's business: the next test
            where = owners.get(node.attr, set())
            if where and module not in where:
                found.append(f"{module}:{node.lineno} uses .{node.attr}, defined only in {sorted(where)}")
    assert found == []


def verb_classes() -> list[type]:
    return [cls for cls in CompanyStore.__mro__ if issubclass(cls, CompanyBase) and cls is not CompanyStore]


def hierarchy_violations(cls: type) -> list[str]:
    """The ``self._x`` uses in ``cls``'s own source whose ``_x`` no class of its MRO defines."""
    available = set()
    for base in cls.__mro__:
        if base is not object:
            available |= set(vars(base)) | defined_names(ast.parse(textwrap.dedent(inspect.getsource(base))))
    return [f"{cls.__name__} (line {node.lineno} of the class) uses self.{node.attr}, which no class it "
            "inherits from defines"
            for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(cls))))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
            and private(node.attr) and node.attr not in available]


def test_each_verb_class_calls_only_private_helpers_of_its_own_hierarchy():
    """A verb class (``TaskVerbs``, ``ApprovalVerbs``...) uses ``self._x`` only if ``_x`` is defined by the
    class or a base it declares; a sibling's helper (only :class:`CompanyStore` combines siblings) must be
    reached through its public ``*_txn`` composition helper."""
    assert [v for cls in verb_classes() for v in hierarchy_violations(cls)] == []


class _Leases(CompanyBase):
    def _drop_txn(self) -> None: ...


class _Principals(CompanyBase):
    def retire(self) -> None:
        self._drop_txn()  # a sibling's private helper: what the test above must catch


def test_the_hierarchy_check_catches_a_sibling_private_call():
    assert [v.split(" uses ")[1].split(",")[0] for v in hierarchy_violations(_Principals)] == ["self._drop_txn"]
    assert hierarchy_violations(_Leases) == []


def test_composition_helpers_take_the_transaction_they_compose_in():
    """Every public ``*_txn`` helper of the contract takes the connection of an open transaction first,
    so that calling one can never open (or commit) a transaction of its own."""
    helpers = {name: member for name, member in inspect.getmembers(CompanyStore, inspect.isfunction)
               if name.endswith("_txn") and not name.startswith("_")}
    assert len(helpers) >= 20
    wrong = [name for name, member in helpers.items()
             if list(inspect.signature(member).parameters)[1] not in ("conn", "write")]
    assert wrong == []


def test_docs_store_md_is_the_contract_the_code_defines():
    """docs/store.md's tables are what ``python -m roster.store.contract`` prints for today's verbs: a verb
    added, removed, re-documented or re-mapped to another decision fails here until the page is regenerated."""
    from roster.store.contract import markdown

    page = (SRC.parent.parent / "docs" / "store.md").read_text()
    begin = "<!-- generated by python -m roster.store.contract: do not edit by hand -->\n\n"
    generated = page[page.index(begin) + len(begin):page.index("<!-- end of the generated part -->")]
    assert generated == markdown(), "regenerate docs/store.md's tables with: python -m roster.store.contract"


def test_every_public_verb_says_what_it_does():
    from roster.store.contract import public_names

    silent = [f"{cls.__name__}.{name}" for cls in verb_classes() for name in public_names(cls)
              if not (vars(cls)[name].__doc__ or "").strip()]
    assert silent == []
