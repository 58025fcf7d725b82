"""A fast CLI (issue 14): ``roster --help`` and ``roster task list`` do not import the web stack, the model
libraries or Alembic. Each command runs in a real subprocess, which prints the modules it imported on
exit; start-up times are measured by bench/cli_start.py, not here.

Migrations still run when they are needed: a database behind the shipped migrations is brought to the
newest one when it is opened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from conftest import ok
from sqlalchemy import inspect

from roster.store import Store
from roster.store.engine import MIGRATIONS, current_revision, make_engine, shipped_head, sqlite_url

WEB_AND_MODELS = ("fastapi", "starlette", "uvicorn", "mcp", "pydantic_ai", "genai_prices", "openai", "anthropic",
                  "httpx")
"""Top-level packages only ``roster serve``, ``roster up``, ``roster mcp`` and the llm runner need."""

PROBE = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("\\nMODULES " + " ".join(sorted(sys.modules)) + "\\n"))
sys.argv = ["roster", *sys.argv[1:]]
from roster.cli import main
main()
"""


def roster(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``roster ARGS`` in a fresh interpreter in ``cwd``: the process, and the modules it imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTER_")}
    env["COLUMNS"] = "120"
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, f"roster {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    listed = [line for line in proc.stderr.splitlines() if line.startswith("MODULES ")]
    assert listed, f"the probe printed no module list:\n{proc.stderr}"
    return proc, set(listed[-1].split()[1:])


def imported(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """Which of ``packages`` (or any module inside them) were imported."""
    return sorted(p for p in packages if any(m == p or m.startswith(p + ".") for m in modules))


def test_help_lists_every_command_without_the_web_stack_the_models_or_the_store(tmp_path):
    proc, modules = roster(tmp_path, "--help")
    for name in ("init", "task", "serve", "mcp", "up", "status", "costs", "kpi"):
        assert f" {name} " in proc.stdout, f"'{name}' missing from roster --help:\n{proc.stdout}"
    assert "Create, list, show and move tasks." in proc.stdout
    assert imported(modules, WEB_AND_MODELS) == []
    assert imported(modules, ("alembic", "roster.api")) == []
    # Nor the store, the spec parser, the rights engine or the runtime: help text needs none of them.
    assert imported(modules, ("sqlalchemy", "cedarpy", "jsonschema", "roster.specfile", "roster.kernel",
                              "roster.runtime")) == []
    assert [m for m in modules if m.startswith("roster.store.") and m != "roster.store.engine"] == []


def test_task_list_imports_neither_the_web_stack_nor_the_models_nor_the_runtime(cli):
    ok(cli("init"))
    ok(cli("task", "create", "fix-lint", "--title", "E501 in app.py", "--set", "rule=E501"))
    proc, modules = roster(cli.workspace, "task", "list")
    assert "E501 in app.py" in proc.stdout
    assert imported(modules, WEB_AND_MODELS) == []
    # The database is at the newest migration: no Alembic. Only the task commands' module is loaded.
    assert imported(modules, ("alembic", "roster.api", "roster.runtime", "croniter")) == []
    assert imported(modules, ("sqlalchemy.dialects.postgresql",)) == []  # a SQLite workspace
    assert "roster.cli.runtime_cmd" not in modules and "roster.cli.task_cmd" in modules


def test_status_does_not_import_the_web_stack_or_the_models(cli):
    ok(cli("init"))
    proc, modules = roster(cli.workspace, "status")
    assert "agents" in proc.stdout
    assert imported(modules, WEB_AND_MODELS) == []


def test_a_mistyped_command_is_still_matched_against_every_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTER_")}
    proc = subprocess.run([sys.executable, "-m", "roster", "tsk", "list"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "No such command 'tsk'" in proc.stderr and "Did you mean 'task'?" in proc.stderr


# -- migrations at open, without Alembic when there is nothing to migrate ---------------------------


def alembic_config(connection) -> Config:  # a SQLAlchemy Connection, or None
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def test_the_shipped_head_read_from_the_files_is_alembics_head():
    assert shipped_head() == ScriptDirectory.from_config(alembic_config(None)).get_current_head()


def test_a_database_one_migration_behind_is_migrated_when_opened(tmp_path):
    head = shipped_head()
    previous = ScriptDirectory.from_config(alembic_config(None)).get_revision(head).down_revision
    url = sqlite_url(tmp_path / "old.db")
    engine = make_engine(url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), previous)
    assert current_revision(engine) == previous
    engine.dispose()

    store = Store.open(url)
    try:
        assert current_revision(store.engine) == head
        with store.engine.connect() as connection:
            assert inspect(connection).has_table("companies")
    finally:
        store.close()


def test_a_new_database_is_created_at_the_head_and_reopened_as_it_is(tmp_path):
    url = sqlite_url(tmp_path / "new.db")
    engine = make_engine(url)
    assert current_revision(engine) is None  # no version table yet
    engine.dispose()
    Store.open(url).close()
    store = Store.open(url)
    try:
        assert current_revision(store.engine) == shipped_head()
    finally:
        store.close()


@pytest.mark.parametrize("args", [("--help",), ("task", "--help")])
def test_help_output_is_complete_when_commands_load_on_demand(tmp_path, args):
    proc, _ = roster(tmp_path, *args)
    assert "Usage:" in proc.stdout
    if args == ("task", "--help"):
        assert all(f" {verb} " in proc.stdout for verb in ("create", "list", "show", "move"))
