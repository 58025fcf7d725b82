"""Where the CLI finds its spec, store and acting principal, and how it reports errors.

Resolution, in order of precedence:

- spec: ``--spec FILE`` / ``ROSTER_SPEC``, else the nearest ``roster.yaml`` in this folder or above;
- store: ``--db URL`` / ``ROSTER_DB``, else SQLite at ``.roster/roster.db`` beside the spec (the
  directory created 0700, the database 0600: :func:`private_dir`, :func:`private_file`);
- company: ``--company ID`` / ``ROSTER_COMPANY``, else the spec's ``company`` key;
- identity: ``--token TOKEN`` / ``ROSTER_TOKEN``, else the local operator's token that ``roster init`` (or
  the first ``roster apply`` of a company) saved in ``.roster/credentials.json`` (mode 0600). There is no
  way to name a principal without its token: every command runs as the token's principal.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.text import Text

from roster.errors import RosterError, Unauthenticated, UsageError
from roster.store.engine import sqlite_url

if TYPE_CHECKING:
    from roster.store import CompanyStore, Session, Store

STATE_DIR = ".roster"

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


CREDENTIALS = "credentials.json"


@dataclass
class Settings:
    spec: Path | None
    db: str | None
    token: str | None
    company: str | None
    lock_timeout: float


def operator_handle() -> str:
    """The OS user name as a valid principal handle (lowercase, ``[a-z0-9_-]``, starting with a letter)."""
    name = re.sub(r"[^a-z0-9_-]+", "-", getpass.getuser().lower()).strip("-") or "operator"
    return name if name[0].isalpha() else f"u-{name}"


class Workspace:
    """The resolved spec path, store and principal for one CLI invocation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Store | None = None

    @property
    def spec_path(self) -> Path:
        if self.settings.spec is not None:
            return self.settings.spec
        from roster.specfile import nearest_spec  # pydantic and the spec models only when a spec is read

        return nearest_spec(Path.cwd(), hint="run 'roster init' to create one, or pass --spec FILE")

    @property
    def state_dir(self) -> Path:
        return self.spec_path.resolve().parent / STATE_DIR

    def db_url(self, spec_path: Path | None = None) -> str:
        if self.settings.db:
            return self.settings.db
        state = private_dir((spec_path or self.spec_path).resolve().parent / STATE_DIR)
        return sqlite_url(private_file(state / "roster.db"))

    def store(self, spec_path: Path | None = None) -> Store:
        if self._store is None:
            from roster.store import Store  # the store's imports only for commands that use it

            path = (spec_path or self.spec_path).resolve()
            self._store = Store.open(self.db_url(path), artifact_root=path.parent / STATE_DIR / "artifacts",
                                     lock_timeout=self.settings.lock_timeout)
            from roster.store.checkpoints import attach_default

            attach_default(self._store, path.parent / STATE_DIR)  # signed audit checkpoints (docs/security.md)
        return self._store

    def close(self) -> None:
        """Close the store if this invocation opened one (its pool's connections go back to the server)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def company_id(self) -> str:
        if self.settings.company is not None:
            return self.settings.company
        from roster.specfile import spec_company

        return spec_company(self.spec_path, hint="run 'roster validate' or pass --company ID")

    def company(self) -> CompanyStore:
        return self.store().company(self.company_id())

    def session(self, company: str | None = None, spec_path: Path | None = None) -> Session:
        """The authenticated session of this invocation (see the module docstring for where the token
        comes from). Raises :class:`Unauthenticated`."""
        company = company or self.company_id()
        token = self.settings.token or self._saved_tokens(spec_path).get(company)
        if not token:
            raise Unauthenticated(f"no credentials for company '{company}': set ROSTER_TOKEN (or --token) to a "
                                  "token from 'roster token issue', or run 'roster init'")
        session = self.store(spec_path).session(token)
        if session.principal.company != company:
            raise Unauthenticated(f"this token belongs to company '{session.principal.company}', not '{company}'")
        return session

    def _credentials_path(self, spec_path: Path | None = None) -> Path:
        return (spec_path or self.spec_path).resolve().parent / STATE_DIR / CREDENTIALS

    def _saved_tokens(self, spec_path: Path | None = None) -> dict[str, str]:
        path = self._credentials_path(spec_path)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError:
            raise UsageError(f"{path} is not valid JSON; delete it and issue a new token") from None

    def save_token(self, spec_path: Path, company: str, token: str) -> Path:
        """Keep the local operator's token for ``company`` in ``.roster/credentials.json`` (mode 0600)."""
        path = self._credentials_path(spec_path)
        saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        saved[company] = token
        private_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(saved, handle, indent=2)
        os.chmod(path, 0o600)
        return path


def private_dir(path: Path) -> Path:
    """Create ``path`` (the workspace's ``.roster/``) readable by its owner only (0700), and take an existing
    one back to 0700 (it holds the database, the artifacts and the operator's token)."""
    path.mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(OSError):  # not ours to change: leave it, the files in it are still 0600
        os.chmod(path, 0o700)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if it does not exist (SQLite then takes an empty file as a new
    database, and gives its -wal and -shm files the same mode), and take an existing one back to 0600."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)
    return path


def settings(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


def workspace(ctx: typer.Context) -> Workspace:
    root = ctx.find_root()
    if not isinstance(getattr(root, "meta", {}).get("workspace"), Workspace):
        root.meta["workspace"] = Workspace(root.obj)
        root.call_on_close(root.meta["workspace"].close)  # when the command ends, in a process or in-process
    return root.meta["workspace"]


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def reports_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a :class:`RosterError` into a message on stderr (JSON with ``--json``) and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RosterError as exc:
            if kwargs.get("as_json"):
                sys.stderr.write(json.dumps(exc.to_dict(), indent=2, default=str) + "\n")
            else:
                err_console.print(Text.assemble(("error: ", "bold red"), exc.message))
            raise typer.Exit(exc.exit_code) from None

    return wrapper

