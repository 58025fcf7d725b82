"""Shared fixtures: a database per test on each backend (a real SQLite file, then a fresh schema on the real
PostgreSQL server), the example spec, and a CLI runner."""

from __future__ import annotations

import inspect
import json
import os
import secrets
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from roster.kernel.spec import CompanySpec
from roster.specfile import parse_spec
from roster.store import CompanyStore, Store

FIX_LINT = """\
company: acme
workflows:
  fix-lint:
    states: [found, planned, built, verified, merged, rejected]
    initial: found
    fields:
      rule: {type: string}
      spec: {type: string, minLength: 20}
      branch: {type: string}
      count: {type: integer, minimum: 0}
    transitions:
      plan:   {from: found,   to: planned,  by: [planner], writes: [spec],   requires: {fields: [rule]}}
      build:  {from: planned, to: built,    by: [builder], writes: [branch], requires: {fields: [spec]}, produces: [patch]}
      verify: {from: built,   to: verified, by: [qa],      requires: {artifacts: [patch], checks: [lint_clean]}}
      merge:  {from: verified, to: merged,  by: [merger],  approval: {by: [human]}}
      reject: {from: [found, planned, built], to: rejected, by: [human]}
agents:
  planner: {reports_to: alice, tier: bounded-mutator}
  builder: {reports_to: alice, tier: bounded-mutator}
  qa: {reports_to: alice, tier: bounded-mutator}
  merger: {reports_to: alice, tier: high-impact-executor}
humans:
  alice: {display_name: Alice}
  bob: {roles: [reviewer]}
"""

SPEC_TEXT = FIX_LINT
GOOD_SPEC = "Split the imports on line one into one import per line."


class StepClock:
    """A clock that advances one second per call, so timestamps are distinct and predictable."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class ManualClock:
    """A clock that stands still until the test moves it: ``advance(seconds)`` or ``advance(days=1)``."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0, **kwargs: float) -> None:
        self.now += timedelta(seconds=seconds, **kwargs)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead: it runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    """Poll ``predicate`` every 50 ms until it holds, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_lines(path: Path) -> list[dict]:
    """The JSON lines a test worker appended to ``path`` (none if it never wrote)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def ok(result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def js(result):
    return json.loads(ok(result))


@pytest.fixture
def keep_signals():
    """``roster up`` run in-process installs SIGINT/SIGTERM handlers: put pytest's back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


PG_DSN = "host=127.0.0.1 port=5432 user=root dbname=test"
"""The PostgreSQL server of this machine kind (trust auth, database ``test``)."""

BACKENDS = ("sqlite", "postgresql")
"""The backends every store and runtime test runs on (the ``db_backend`` parameter)."""

IN_CI = bool(os.environ.get("CI"))
"""Set in CI (``.ci/run`` exports ``CI=1``): a test that needs PostgreSQL fails when no server answers,
instead of being skipped, so a suite that silently ran on SQLite only cannot pass."""


def pg_reachable() -> bool:
    """Whether the PostgreSQL server at :data:`PG_DSN` answers."""
    try:
        import psycopg

        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except Exception:  # noqa: BLE001 - no driver, no server: either way, no PostgreSQL here
        return False
    return True


def need_pg() -> None:
    """Call at the start of a test (or fixture) that needs the PostgreSQL server: when none answers, the
    test fails in CI (:data:`IN_CI`) and is skipped elsewhere (a laptop without a server)."""
    if pg_reachable():
        return
    message = ("no PostgreSQL server at 127.0.0.1:5432 (database test); start it with "
               "'pg_ctlcluster --skip-systemctl-redirect 15 main start' (.ci/run does)")
    if IN_CI:
        pytest.fail(message + " - in CI the PostgreSQL tests may not be skipped", pytrace=False)
    pytest.skip(message)


@contextmanager
def pg_schema(prefix: str = "roster_test"):
    """A fresh schema on the PostgreSQL server, dropped afterwards: yields ``(schema, url)`` where ``url``
    is a SQLAlchemy URL whose connections use that schema and name themselves after it
    (``application_name``, so a test can find and kill exactly its own connections)."""
    import psycopg

    schema = f"{prefix}_{secrets.token_hex(4)}"[:63]
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema, (f"postgresql+psycopg://root@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
                       f"&application_name={schema}")
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only(reason): run this store test on SQLite only (it reads or "
                                       "edits the database file itself); the reason says why")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that (through any fixture) asks for ``db_backend`` runs once per backend in
    :data:`BACKENDS`; on SQLite only when it is marked ``sqlite_only`` or names ``db_path`` among its own
    arguments (it reads or edits the SQLite file itself, as the audit tamper tests do with ``sqlite3``)."""
    if "db_backend" in metafunc.fixturenames:
        only = (metafunc.definition.get_closest_marker("sqlite_only") is not None
                or "db_path" in inspect.signature(metafunc.function).parameters)
        metafunc.parametrize("db_backend", ["sqlite"] if only else list(BACKENDS), indirect=True)


@pytest.fixture
def db_backend(request) -> str:
    """``sqlite`` or ``postgresql``: the backend of this run of the test (see :func:`pytest_generate_tests`)."""
    return request.param


@pytest.fixture
def databases(db_backend: str, request, tmp_path: Path):
    """``databases(name)``: the URL of the database called ``name`` on this test's backend, the same URL
    for the same name: a SQLite file ``tmp_path/NAME.db``, or a fresh schema on the real PostgreSQL
    server (dropped after the test). The one place where store and runtime tests get a database."""
    made: dict[str, str] = {}
    with ExitStack() as stack:
        def url(name: str) -> str:
            if name not in made:
                if db_backend == "sqlite":
                    made[name] = f"sqlite:///{tmp_path / f'{name}.db'}"
                else:
                    need_pg()
                    module = request.node.module.__name__.removeprefix("test_")
                    _schema, made[name] = stack.enter_context(pg_schema(f"roster_{module}"))
            return made[name]

        url.backend = db_backend
        yield url


@pytest.fixture
def db_url(databases) -> str:
    """A database URL on each backend in turn: a SQLite file, or a fresh schema on the real PostgreSQL
    server."""
    return databases("store")


class Recorder:
    """A real runner: records each brief it is given (as the JSON a worker would see) and returns the
    next of ``results`` (the last one again once they run out; ``{}`` when none were given)."""

    kind = "program"

    def __init__(self, *results: dict) -> None:
        self.results = list(results) or [{}]
        self.briefs: list[dict] = []

    def run(self, brief):  # noqa: ANN001, ANN201 - a Brief in, a RunResult out
        from roster.runtime.runners import RunResult

        self.briefs.append(json.loads(brief.to_json()))
        return RunResult.parse(self.results[min(len(self.briefs), len(self.results)) - 1])


@pytest.fixture
def clock() -> ManualClock:
    """A clock that stands still until the test moves it (tests may override this fixture)."""
    return ManualClock()


@pytest.fixture
def opened(databases, tmp_path, clock):
    """``opened(spec_text)`` opens (a new :class:`Store` on) the database ``acme`` (on each backend) with
    the manual clock, applies the spec if one is given, and returns the ``acme`` company. Calling it again
    opens the same database again: a restart."""
    stores: list[Store] = []

    def open_company(text: str | None = None) -> CompanyStore:
        store = Store.open(databases("acme"), clock=clock, artifact_root=tmp_path / "art")
        stores.append(store)
        if text is not None:
            store.apply(parse_spec(text), applied_by="alice")
        return store.company("acme")

    yield open_company
    for store in stores:
        store.close()


@pytest.fixture
def still(databases, tmp_path, clock):
    """A company (FIX_LINT) in a store (on each backend) whose clock stands still: backoffs and leases
    only pass when the test advances the clock."""
    opened = Store.open(databases("still"), clock=clock, artifact_root=tmp_path / "still-art")
    opened.apply(parse_spec(FIX_LINT), applied_by="alice")
    yield opened.company("acme")
    opened.close()


@pytest.fixture
def spec() -> CompanySpec:
    return parse_spec(FIX_LINT)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The SQLite file of :func:`store`. A test that names ``db_path`` among its arguments runs on SQLite
    only (see :func:`pytest_generate_tests`)."""
    return tmp_path / "roster.db"


@pytest.fixture
def store(databases, tmp_path: Path) -> Store:
    """A store on each backend (``databases("roster")``: the file :func:`db_path` on SQLite) with a
    clock that steps one second per reading."""
    opened = Store.open(databases("roster"), clock=StepClock(), artifact_root=tmp_path / "artifacts")
    yield opened
    opened.close()


@pytest.fixture
def company(store: Store, spec: CompanySpec) -> CompanyStore:
    store.apply(spec, applied_by="alice")
    return store.company("acme")


@pytest.fixture
def new_task(company: CompanyStore) -> Callable[..., object]:
    """Make a fix-lint task with rule E501 (kwargs override create_task's)."""

    def make(**kwargs):
        args = {"workflow": "fix-lint", "title": "fix E501", "actor": "alice", "fields": {"rule": "E501"}}
        args.update(kwargs)
        return company.create_task(**args)[0]

    return make


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run the real CLI in-process inside ``tmp_path/ws``: ``cli("task", "list")`` -> click Result."""
    from roster.cli import app

    workspace = tmp_path / "ws"
    workspace.mkdir()
    monkeypatch.chdir(workspace)
    for key in list(os.environ):
        if key.startswith("ROSTER_"):
            monkeypatch.delenv(key)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    run.workspace = workspace
    return run
