"""The ``roster`` command line: a thin adapter over the store. Exit codes are listed in docs/cli.md."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from roster.cli.context import Settings
from roster.store.engine import DEFAULT_LOCK_TIMEOUT

COMMANDS: dict[str, tuple[str, ...]] = {
    "spec_cmd": ("init", "validate", "apply"),
    "demo_cmd": ("demo",),
    "principal_cmd": ("pause", "resume", "principal", "token", "rights"),
    "approval_cmd": ("inbox", "approve", "reject", "approvals"),
    "runtime_cmd": ("up", "run", "reflect", "status", "emit", "costs", "presence", "escalations"),
    "brief_cmd": ("context",),
    "serve_cmd": ("serve", "mcp"),
    "task_cmd": ("task",),
    "audit_cmd": ("audit",),
    "artifact_cmd": ("artifact",),
    "memory_cmd": ("memory",),
    "msg_cmd": ("msg",),
    "kpi_cmd": ("kpi",),
    "goal_cmd": ("goal",),
    "mission_cmd": ("mission",),
    "fitness_cmd": ("fitness", "stage"),
    "webhooks_cmd": ("webhooks",),
}
"""Each command module of ``roster.cli`` and the top-level commands it registers, in the order ``roster
--help`` lists them. A module with a ``register(app)`` function registers its own commands; any other is
one command group, its module's ``app``, under the one name given here."""


def _register(app: typer.Typer, module_name: str) -> None:
    module = importlib.import_module(f"roster.cli.{module_name}")
    if hasattr(module, "register"):
        module.register(app)
    else:
        (name,) = COMMANDS[module_name]
        app.add_typer(module.app, name=name)


class LazyCommands(TyperGroup):
    """The root command group, importing a command's module only when that command is looked up.

    ``roster task list`` imports :mod:`roster.cli.task_cmd` and what it needs, not the modules of the
    other commands (the runtime's, say). Listing the commands (``roster --help``, a mistyped name) imports
    them all, in :data:`COMMANDS` order, so help and suggestions are those of the eager CLI.
    """

    def _load(self, module_names: list[str]) -> None:
        staging = typer.Typer()
        for module_name in module_names:
            _register(staging, module_name)
        for name, command in typer.main.get_group(staging).commands.items():
            self.commands.setdefault(name, command)

    def _load_all(self) -> None:
        if getattr(self, "_all_loaded", False):
            return
        loaded = dict(self.commands)
        self.commands.clear()
        self._load(list(COMMANDS))
        for name, command in loaded.items():
            self.commands.setdefault(name, command)
        self._all_loaded = True

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_all()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            homes = [module for module, names in COMMANDS.items() if cmd_name in names]
            if homes:
                self._load(homes)
            if cmd_name not in self.commands:
                self._load_all()  # not where COMMANDS says, or a mistyped name: look everywhere
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    name="roster",
    help="Roster: the workplace where AI agents and humans do real work together, under contract and on the record.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=LazyCommands,
)


@app.callback()
def _root(
    ctx: typer.Context,
    spec: Annotated[Path | None, typer.Option("--spec", envvar="ROSTER_SPEC",
                                              help="The spec file (default: nearest roster.yaml upwards).")] = None,
    db: Annotated[str | None, typer.Option("--db", envvar="ROSTER_DB",
                                           help="Database URL (default: SQLite .roster/roster.db beside the spec).")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="ROSTER_TOKEN",
                                              help="API token to act with (default: the local operator's, "
                                              "saved by 'roster init').")] = None,
    company: Annotated[str | None, typer.Option("--company", envvar="ROSTER_COMPANY",
                                                help="Company id (default: the spec's 'company').")] = None,
    lock_timeout: Annotated[float, typer.Option("--lock-timeout", envvar="ROSTER_LOCK_TIMEOUT",
                                                help="Seconds to wait for a database locked by another process.")]
    = DEFAULT_LOCK_TIMEOUT,
) -> None:
    ctx.obj = Settings(spec, db, token, company, lock_timeout)


def main() -> None:
    app()
