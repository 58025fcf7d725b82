"""Whether a lint fix changes behaviour beyond what its rule intends, judged with Python's :mod:`ast`.

ruff's fix applicability (the lane applies only its safe fixes) is the first line; this is the second:
the source of a file before and after a fix, compared.

- A fix that removes or changes a statement inside a ``try`` whose handlers catch ``ImportError``
  (``except ImportError``/``ModuleNotFoundError``, or anything wider: ``Exception``, ``BaseException``, a
  bare ``except``) changes behaviour: ``try: import readline`` becoming ``try: pass`` makes a
  ``HAVE_READLINE`` flag set in that ``try`` always true.
- A fix that unbinds a name the module still uses (a load of it, a string in ``__all__``, a scope that
  reads its names through ``locals()``/``vars()``/``globals()``/``eval``/``exec``, or, given the
  repository, another module importing it from this one: a re-export) changes behaviour.
- For rules whose intent is known exactly the two trees must match once that intent is accounted for:
  formatting-only rules (:data:`FORMATTING_ONLY`): ``ast.dump`` equality; import sorting (I001): the same
  imports in each block of consecutive imports, in any order and grouping; F401: equality once the
  removed imports are removed from the original; F841: equality once the removed assignments are.
"""

from __future__ import annotations

import ast
import copy
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from roster.agency.lint import IMPORT_SORTING, git

FORMATTING_ONLY = frozenset({"W191", "W291", "W292", "W293", "W391"} |
                            {f"E{n}" for n in (*range(101, 132), *range(201, 276), *range(301, 307))})
"""Rules whose fix changes only layout (whitespace, blank lines, indentation): the syntax tree must not
change at all."""

IMPORT_GUARDS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})
"""Exception names whose handler runs when an import fails: a ``try`` with one of them guards its imports."""

DYNAMIC_READS = frozenset({"locals", "vars", "globals", "eval", "exec"})
"""Calls through which a scope reads its names without naming them."""

_BODIES = ("body", "orelse", "finalbody")


def behaviour_changes(before: str, after: str, rule: str, *, path: str | None = None,
                      root: Path | None = None) -> list[str]:
    """Why the change from ``before`` to ``after`` (the source text of one Python file, before and after a
    fix for ``rule``, e.g. ``"F401"``) does more than ``rule`` intends: human-readable reasons naming the
    line and the statement, empty when the change is only what the rule intends (or nothing).

    With ``path`` (the file, relative to ``root``) and ``root`` (the repository after the fix), a
    module-level name the fix removes is also looked for in the repository's other modules (a re-export).
    Never raises on bad source: a file that no longer parses is a reason."""
    if before == after:
        return []
    try:
        old = ast.parse(before)
    except (SyntaxError, ValueError) as exc:
        return [f"the file did not parse before the fix ({exc}), so the fix cannot be judged"]
    try:
        new = ast.parse(after)
    except (SyntaxError, ValueError) as exc:
        return [f"the fix leaves a file that does not parse ({exc})"]
    reasons = _guarded_changes(old, new)
    reasons += _intent_mismatch(old, new, rule)
    reasons += _names_still_used(old, new, path, root)
    return reasons


def behaviour_changes_in_diff(base_dir: Path, branch_dir: Path, files: list[str], rule: str) -> list[str]:
    """:func:`behaviour_changes` over the ``files`` (relative paths) a fix for ``rule`` changed between two
    checkouts: ``base_dir`` (where the branch started) and ``branch_dir`` (the branch). Each reason starts
    with its file. A file created or deleted, or a changed file that is not Python (``.py``/``.pyi``), is a
    reason too: a lint fix edits Python files in place. Empty when every change is the rule's intent."""
    return _file_changes(((name, _read(base_dir / name), _read(branch_dir / name)) for name in files), rule,
                         branch_dir)


def behaviour_changes_in_worktree(tree: Path, rule: str) -> list[str]:
    """:func:`behaviour_changes_in_diff` for what is not committed yet in the git worktree ``tree``
    (tracked changes and new files) against its ``HEAD``: e.g. an agent CLI's edit, before it is
    committed. Stages every change (``git add -A``), as the commit that follows would."""
    git(tree, "add", "-A")
    files = git(tree, "diff", "--cached", "--name-only", "HEAD").stdout.splitlines()

    def at_head(name: str) -> str | None:
        shown = git(tree, "show", f"HEAD:{name}", check=False)
        return shown.stdout if shown.returncode == 0 else None

    return _file_changes(((name, at_head(name), _read(tree / name)) for name in files), rule, tree)


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def _file_changes(changed: Iterable[tuple[str, str | None, str | None]], rule: str, root: Path) -> list[str]:
    """The reasons for ``(name, before, after)`` texts (``None``: no such file) of a fix for ``rule``."""
    reasons = []
    for name, before, after in changed:
        if before == after:
            continue
        if before is None or after is None:
            reasons.append(f"{name}: the fix {'creates' if before is None else 'deletes'} the file; a {rule} fix "
                           "edits a file in place")
        elif not name.endswith((".py", ".pyi")):
            reasons.append(f"{name}: not a Python file, and a {rule} fix changes only Python files")
        else:
            reasons += [f"{name}: {reason}" for reason in behaviour_changes(before, after, rule, path=name, root=root)]
    return reasons


def _guard(node: ast.AST) -> str | None:
    """How ``node`` (a ``try``) catches a failed import, e.g. "`except ImportError`", or ``None``."""
    if not isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
        return None
    for handler in node.handlers:
        if handler.type is None:
            return "bare `except`"
        names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        for name in names:
            caught = name.id if isinstance(name, ast.Name) else name.attr if isinstance(name, ast.Attribute) else None
            if caught in IMPORT_GUARDS:
                return f"`except {ast.unparse(handler.type)}`"
    return None


def _guarded_changes(old: ast.Module, new: ast.Module) -> list[str]:
    """Statements removed or changed inside a ``try`` that guards imports."""
    olds = [n for n in ast.walk(old) if _guard(n)]
    news = [n for n in ast.walk(new) if _guard(n)]
    if len(olds) != len(news):
        gone = ", ".join(f"line {t.lineno}" for t in olds[len(news):]) or "none"
        return [(f"the fix removes or adds a `try` that guards imports ({len(olds)} before, {len(news)} after; "
                 f"e.g. {gone}): what runs when an import fails changes")]
    reasons = []
    for was, now in zip(olds, news, strict=True):
        gone = Counter(ast.dump(s) for s in was.body) - Counter(ast.dump(s) for s in now.body)
        if not gone:
            continue
        changed = [s for s in was.body if ast.dump(s) in gone]
        shown = "; ".join(ast.unparse(s).splitlines()[0] for s in changed[:3])
        reasons.append(f"line {changed[0].lineno}: the fix removes or changes `{shown}` inside a `try` whose {_guard(was)} "
                       "catches ImportError: when that import fails the handler no longer runs, so what the `try` "
                       "decides (e.g. a HAVE_... flag, a fallback) changes meaning")
    return reasons


# --- the rule's intent, accounted for ------------------------------------------------------------------


def _statement_lists(tree: ast.AST) -> Iterable[tuple[ast.AST, str]]:
    for node in ast.walk(tree):
        for field in _BODIES:
            if isinstance(getattr(node, field, None), list) and getattr(node, field) and \
                    isinstance(getattr(node, field)[0], ast.stmt):
                yield node, field


def _fill_empty(tree: ast.AST) -> ast.AST:
    """Give every emptied required body a ``pass``, as ruff's fixes do."""
    for node in ast.walk(tree):
        if isinstance(getattr(node, "body", None), list) and not node.body and not isinstance(node, ast.Module):
            node.body = [ast.Pass()]
    return tree


def _import_names(tree: ast.AST) -> Counter[str]:
    return Counter(_bound(alias) for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for alias in node.names)


def _bound(alias: ast.alias) -> str:
    return alias.asname or alias.name.split(".")[0]


def _without_imports(tree: ast.AST, names: set[str]) -> ast.AST:
    for node, field in list(_statement_lists(tree)):
        kept = []
        for statement in getattr(node, field):
            if isinstance(statement, (ast.Import, ast.ImportFrom)):
                statement.names = [a for a in statement.names if _bound(a) not in names]
                if not statement.names:
                    continue
            kept.append(statement)
        setattr(node, field, kept)
    return _fill_empty(tree)


def _stores(tree: ast.AST) -> Counter[str]:
    counts: Counter[str] = Counter()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            counts[node.id] += 1
        elif isinstance(node, ast.ExceptHandler) and node.name:
            counts[node.name] += 1
    return counts


class _WithoutAssignments(ast.NodeTransformer):
    """Assignments to ``names`` as F841's fix leaves them: the value kept for its side effects, dropped
    when it has none."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def _named(self, target: ast.AST) -> bool:
        return isinstance(target, ast.Name) and target.id in self.names

    def _value(self, value: ast.expr | None, like: ast.stmt) -> ast.stmt | None:
        if value is None or isinstance(value, (ast.Constant, ast.Name)):
            return None
        return ast.copy_location(ast.Expr(value), like)

    def visit_Assign(self, node: ast.Assign) -> ast.AST | None:
        self.generic_visit(node)
        node.targets = [t for t in node.targets if not self._named(t)]
        return node if node.targets else self._value(node.value, node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | None:
        self.generic_visit(node)
        return self._value(node.value, node) if self._named(node.target) else node

    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        self.generic_visit(node)
        return None if isinstance(node.value, (ast.Constant, ast.Name)) else node

    def visit_withitem(self, node: ast.withitem) -> ast.AST:
        self.generic_visit(node)
        if self._named(node.optional_vars):
            node.optional_vars = None
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        self.generic_visit(node)
        if node.name in self.names:
            node.name = None
        return node

    def visit_NamedExpr(self, node: ast.NamedExpr) -> ast.AST:
        self.generic_visit(node)
        return node.value if self._named(node.target) else node


def _imports_as_sets(tree: ast.AST) -> ast.AST:
    """Each block of consecutive imports as one marker holding the sorted imports it binds."""
    for node, field in list(_statement_lists(tree)):
        merged: list[ast.stmt] = []
        block: list[str] = []
        first: ast.stmt | None = None
        for statement in [*getattr(node, field), None]:
            if isinstance(statement, (ast.Import, ast.ImportFrom)):
                source = (f"from {'.' * statement.level}{statement.module or ''} " if isinstance(statement, ast.ImportFrom)
                          else "")
                block += [f"{source}import {a.name}{f' as {a.asname}' if a.asname else ''}" for a in statement.names]
                first = first or statement
                continue
            if block and first is not None:
                merged.append(ast.copy_location(ast.Expr(ast.Constant("imports: " + ", ".join(sorted(block)))), first))
                block, first = [], None
            if statement is not None:
                merged.append(statement)
        setattr(node, field, merged)
    return tree


def _intent_mismatch(old: ast.Module, new: ast.Module, rule: str) -> list[str]:
    """Where the trees differ once the rule's intended change is accounted for; nothing for rules whose
    intent this module does not model (their fixes rewrite expressions by design). ``rule`` may name
    several codes (``"F401,I001"``, a task covering a whole file): their intents are composed, and if any
    of them is not modelled, nothing is judged here."""
    normalisers: list[Callable[[ast.AST], ast.AST]] = []
    intents: list[str] = []
    for code in [c for c in rule.split(",") if c]:
        if code in FORMATTING_ONLY:
            intents.append("layout only")
        elif code in IMPORT_SORTING:
            normalisers.append(_imports_as_sets)
            intents.append("the order and grouping of imports only")
        elif code == "F401":
            removed_imports = set(_import_names(old) - _import_names(new))
            normalisers.append(lambda tree, names=removed_imports: _without_imports(tree, names))
            intents.append("removing unused imports only")
        elif code == "F841":
            removed_stores = set(_stores(old) - _stores(new))
            normalisers.append(lambda tree, names=removed_stores:
                               _fill_empty(_WithoutAssignments(names).visit(tree)))
            intents.append("removing unused assignments only")
        else:
            return []

    def normalise(tree: ast.AST) -> ast.AST:
        for step in normalisers:  # removals first (F401, F841), then import sets: see the order above
            tree = step(tree)
        return tree

    was, now = normalise(_copy(old)), normalise(_copy(new))
    if ast.dump(was) == ast.dump(now):
        return []
    return [f"the fix changes more than {rule} intends ({', '.join(dict.fromkeys(intents))}): "
            f"{_first_difference(was, now)}"]


def _copy(tree: ast.Module) -> ast.Module:
    return copy.deepcopy(tree)


def _first_difference(was: ast.AST, now: ast.AST) -> str:
    """The first statement that differs, e.g. "line 3 `x = 1` became `x = 2`"."""
    olds, news = list(_flat(was)), list(_flat(now))
    for a, b in zip(olds, news):
        if ast.dump(a) != ast.dump(b):
            return (f"line {getattr(a, 'lineno', '?')} `{_short(a)}` became `{_short(b)}`")
    if len(olds) > len(news):
        return f"line {getattr(olds[len(news)], 'lineno', '?')} `{_short(olds[len(news)])}` is gone"
    if len(news) > len(olds):
        return f"`{_short(news[len(olds)])}` is new"
    return "the syntax trees differ"


def _flat(tree: ast.AST) -> Iterable[ast.stmt]:
    """Every statement, innermost ones before the compound statement holding them is compared."""
    for node in getattr(tree, "body", []):
        yield from _leaves(node)


def _leaves(node: ast.stmt) -> Iterable[ast.stmt]:
    inner = [s for field in (*_BODIES, "handlers") for s in getattr(node, field, None) or []
             if isinstance(s, (ast.stmt, ast.ExceptHandler))]
    for statement in inner:
        if isinstance(statement, ast.ExceptHandler):
            for s in statement.body:
                yield from _leaves(s)
        else:
            yield from _leaves(statement)
    if not inner:
        yield node


def _short(node: ast.AST) -> str:
    text = ast.unparse(node).splitlines()[0] if not isinstance(node, ast.Pass) else "pass"
    return text if len(text) <= 80 else text[:77] + "..."


# --- names still used ----------------------------------------------------------------------------------


class _Scopes(ast.NodeVisitor):
    """Per scope (``"<module>"``, ``"f"``, ``"C.m"``): the names it binds, the names loaded in it or in
    scopes nested in it, and whether it reads names dynamically."""

    def __init__(self) -> None:
        self.stack = ["<module>"]
        self.bound: dict[str, Counter[str]] = {"<module>": Counter()}
        self.loaded: dict[str, dict[str, int]] = {"<module>": {}}
        self.dynamic: dict[str, int] = {}

    def _bind(self, name: str) -> None:
        self.bound.setdefault(self.stack[-1], Counter())[name] += 1

    def _scope(self, node: ast.AST, name: str) -> None:
        self._bind(name)
        for decorator in getattr(node, "decorator_list", []):
            self.visit(decorator)
        self.stack.append(f"{self.stack[-1]}.{name}" if len(self.stack) > 1 else name)
        self.bound.setdefault(self.stack[-1], Counter())
        self.loaded.setdefault(self.stack[-1], {})
        if isinstance(getattr(node, "args", None), ast.arguments):
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                        *([node.args.vararg] if node.args.vararg else []),
                        *([node.args.kwarg] if node.args.kwarg else [])]:
                self._bind(arg.arg)
        for statement in node.body:
            self.visit(statement)
        self.stack.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scope(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in [*node.bases, *node.keywords]:
            self.visit(base)
        self._scope(node, node.name)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self._bind(_bound(alias))

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._bind(node.name)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self._bind(node.id)
        else:
            for scope in self.stack_names():
                self.loaded.setdefault(scope, {}).setdefault(node.id, node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in DYNAMIC_READS:
            for scope in self.stack_names():
                self.dynamic.setdefault(scope, node.lineno)
        self.generic_visit(node)

    def stack_names(self) -> list[str]:
        return list(self.stack)


def _exported(tree: ast.Module) -> dict[str, int]:
    """The strings in the module's ``__all__`` (assigned, extended or appended at module level), by line."""
    names: dict[str, int] = {}
    for statement in tree.body:
        if "__all__" in {n.id for n in ast.walk(statement) if isinstance(n, ast.Name)}:
            for node in ast.walk(statement):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    names.setdefault(node.value, statement.lineno)
    return names


def _names_still_used(old: ast.Module, new: ast.Module, path: str | None, root: Path | None) -> list[str]:
    before, after = _Scopes(), _Scopes()
    before.visit(old)
    after.visit(new)
    exported = _exported(new)
    reasons = []
    for scope, names in before.bound.items():
        still = after.bound.get(scope, Counter())
        where = "the module" if scope == "<module>" else f"`{scope}`"
        for name in sorted(n for n in names if not still[n]):
            if name in after.loaded.get(scope, {}):
                reasons.append(f"the fix removes `{name}` from {where}, which still uses it (line "
                               f"{after.loaded[scope][name]})")
            elif scope == "<module>" and name in exported:
                reasons.append(f"the fix removes `{name}`, which the module exports in `__all__` (line "
                               f"{exported[name]})")
            elif scope in after.dynamic:
                reasons.append(f"the fix removes `{name}` from {where}, which reads its names dynamically (line "
                               f"{after.dynamic[scope]})")
            elif scope == "<module>" and path and root and not name.startswith("_"):
                reasons += [f"the fix removes `{name}`, which {user} imports from this module (a re-export)"
                            for user in _importers(root, path, name)[:1]]
    return reasons


def _module_parts(path: str) -> list[str]:
    parts = list(Path(path).with_suffix("").parts)
    return parts[:-1] if parts and parts[-1] == "__init__" else parts


def _importers(root: Path, path: str, name: str) -> list[str]:
    """Other Python files under ``root`` that import ``name`` from the module at ``path`` (absolute or
    relative imports; a ``src/`` prefix or any other leading folder may be absent from the import)."""
    target = _module_parts(path)
    users = []
    for other in sorted(root.rglob("*.py")):
        relative = other.relative_to(root).as_posix()
        if relative == path or any(part.startswith(".") for part in other.relative_to(root).parts):
            continue
        try:
            text = other.read_text(encoding="utf-8")
            if name not in text:
                continue
            tree = ast.parse(text)
        except (SyntaxError, ValueError, UnicodeDecodeError):
            continue
        package = _module_parts(relative) if relative.endswith("__init__.py") else _module_parts(relative)[:-1]
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or name not in {a.name for a in node.names}:
                continue
            base = package[:len(package) - node.level + 1] if node.level else []
            module = [*base, *(node.module.split(".") if node.module else [])]
            if module and target[-len(module):] == module:
                users.append(relative)
                break
    return users
