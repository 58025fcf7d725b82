"""Tenants kept apart in shared structures (issue 15, deliverable 5): full-text ranking statistics and
artifact blobs never cross companies, on SQLite and on PostgreSQL, and stores written before that
(one shared FTS5 index, one shared blob directory) keep working after an upgrade."""

from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import FIX_LINT, StepClock, pg_schema
from sqlalchemy import text

from roster.errors import CorruptArtifact
from roster.specfile import parse_spec
from roster.store import Store
from roster.store.dialects import fts_table
from roster.store.engine import shipped_head

GLOBEX = FIX_LINT.replace("company: acme", "company: globex")

ACME_MEMORY = [
    "The parser chokes on tabs in the config file.",
    "Deploys happen on Tuesday afternoon.",
    "The parser is rewritten in the next release.",
    "Alice prefers short pull request descriptions.",
]
SECRET = "Acquisition of parser vendor Initech closes in March; parser parser parser."
PATCH = b"--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-import os, sys\n+import os\n"


@pytest.fixture
def two(db_url, tmp_path):
    """A store on each backend with companies 'acme' and 'globex' (the same workforce), blobs under
    ``tmp_path/artifacts``."""
    store = Store.open(db_url, clock=StepClock(), artifact_root=tmp_path / "artifacts")
    store.apply(parse_spec(FIX_LINT), applied_by="alice")
    store.apply(parse_spec(GLOBEX), applied_by="alice")
    yield store
    store.close()


def _scores(company, query: str) -> list[tuple[int, float]]:
    return [(e.id, e.score) for e in company.recall(query, actor="planner", limit=50)]


# -- full-text ranking -------------------------------------------------------------------------------


def test_memory_scores_do_not_depend_on_another_companys_private_memory(two):
    acme, globex = two.company("acme"), two.company("globex")
    for line in ACME_MEMORY:
        acme.remember(line, actor="planner")
    alone = _scores(acme, "parser release")
    assert len(alone) == 2 and all(score > 0 for _, score in alone)
    # globex's private pad gets the word many times over: acme's statistics must not notice.
    secrets = [globex.remember(SECRET, actor="planner") for _ in range(5)]
    for i in range(20):
        globex.remember(f"unrelated note {i} about lunch", actor="builder")
    assert _scores(acme, "parser release") == alone
    assert _scores(acme, "initech") == []
    for entry in secrets:
        globex.forget(entry.id, actor="planner")
    assert _scores(acme, "parser release") == alone
    # globex's own search sees its entries, ranked among its own statistics only
    assert [e.text for e in globex.recall("parser", actor="planner")] == []
    assert globex.recall("lunch", actor="builder")[0].text.startswith("unrelated note")


def test_ranking_within_one_company_is_as_if_it_were_alone(two, tmp_path):
    """The same entries in a store of their own and in a store shared with a busy company rank the same,
    with the same scores."""
    shared_acme, globex = two.company("acme"), two.company("globex")
    for i in range(30):
        globex.remember(f"parser tabs release note {i}", actor="planner")
    with ExitStack() as stack:
        if two.engine.dialect.name == "sqlite":
            url = f"sqlite:///{tmp_path / 'alone.db'}"
        else:
            _schema, url = stack.enter_context(pg_schema("roster_tenants_alone"))
        alone_store = Store.open(url, clock=StepClock())
        stack.callback(alone_store.close)
        alone_store.apply(parse_spec(FIX_LINT), applied_by="alice")
        alone = alone_store.company("acme")
        for line in ACME_MEMORY:
            shared_acme.remember(line, actor="planner")
            alone.remember(line, actor="planner")
        for query in ("parser", "parser tabs", "release deploys", "alice descriptions parser"):
            got = [(e.text, round(e.score, 12)) for e in shared_acme.recall(query, actor="planner")]
            assert got == [(e.text, round(e.score, 12)) for e in alone.recall(query, actor="planner")], query


def test_each_company_has_its_own_fts5_index_on_sqlite(two):
    if two.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's ts_rank uses no statistics over other rows: one expression index serves all")
    acme = two.company("acme")
    entry = acme.remember("the parser chokes on tabs", actor="planner")
    with two.engine.connect() as conn:
        tables = set(conn.scalars(text("SELECT name FROM sqlite_schema WHERE type = 'table' "
                                       "AND name LIKE 'memory_fts%' AND sql IS NOT NULL "
                                       "AND sql LIKE 'CREATE VIRTUAL TABLE%'")))
        rows = list(conn.execute(text(f'SELECT rowid, text FROM "{fts_table("acme")}"')))
    assert tables == {"memory_fts_acme_index"}, "globex saved nothing: it has no index yet"
    assert rows == [(entry.id, "the parser chokes on tabs")]
    acme.forget(entry.id, actor="planner")
    with two.engine.connect() as conn:
        assert list(conn.execute(text(f'SELECT rowid FROM "{fts_table("acme")}"'))) == []


# -- blobs -------------------------------------------------------------------------------------------


def _attach(company, content: bytes = PATCH):
    task, _ = company.create_task(workflow="fix-lint", title="fix E501", actor="alice", fields={"rule": "E501"})
    return task, company.record_artifact(task.id, "patch", content, actor="builder", name="fix.diff")


def test_identical_bytes_of_two_companies_are_two_blobs(two, tmp_path):
    acme, globex = two.company("acme"), two.company("globex")
    _, a = _attach(acme)
    a_path = two.blobs.path("acme", a.sha256)
    a_stat = a_path.stat()
    g_path = two.blobs.path("globex", a.sha256)
    assert not g_path.exists()
    g_task, g = _attach(globex)
    assert g.sha256 == a.sha256
    assert g_path.is_file() and g_path.read_bytes() == PATCH, "globex's save wrote its own file"
    assert os.stat(g_path).st_ino != a_stat.st_ino
    assert a_path.stat().st_mtime_ns == a_stat.st_mtime_ns, "globex's save did not touch acme's file"
    files = sorted(p.relative_to(tmp_path / "artifacts").as_posix() for p in (tmp_path / "artifacts").rglob("*")
                   if p.is_file())
    assert files == [f"acme/{a.sha256[:2]}/{a.sha256}", f"globex/{a.sha256[:2]}/{a.sha256}"]
    # Deleting acme's blob breaks acme's artifact only.
    a_path.unlink()
    assert globex.artifact(g_task.id, "fix.diff") == (g, PATCH)
    with pytest.raises(CorruptArtifact):
        acme.artifact(a.task_id, "fix.diff")
    # Corrupting acme's blob (re-created by hand) does not reach globex either.
    a_path.write_bytes(b"tampered\n")
    with pytest.raises(CorruptArtifact):
        acme.artifact(a.task_id, "fix.diff")
    assert globex.artifact(g_task.id, "fix.diff")[1] == PATCH


def test_reading_a_companys_artifact_never_opens_another_companys_blob(two):
    acme, globex = two.company("acme"), two.company("globex")
    _, a = _attach(acme)
    g_task, _ = _attach(globex)
    # acme's blob replaced by a directory: any attempt to read it as a file would raise.
    a_path = two.blobs.path("acme", a.sha256)
    a_path.unlink()
    a_path.mkdir()
    assert globex.artifact(g_task.id, "fix.diff")[1] == PATCH
    assert globex.artifact_diff(g_task.id, "fix.diff").startswith("--- /dev/null")


# -- stores written before: the old layouts keep working --------------------------------------------


def _to_legacy_layout(root: Path) -> None:
    """Rewrite ``root`` the way a store written before per-company blobs kept it: ``<root>/<xx>/<digest>``,
    one file for identical content whatever the company."""
    for company_dir in [p for p in root.iterdir() if p.is_dir()]:
        for blob in [p for p in company_dir.rglob("*") if p.is_file()]:
            legacy = root / blob.name[:2] / blob.name
            legacy.parent.mkdir(exist_ok=True)
            blob.replace(legacy)
        shutil.rmtree(company_dir)


def test_blobs_in_the_legacy_shared_layout_still_read_and_are_adopted_on_open(db_url, tmp_path):
    root = tmp_path / "artifacts"
    store = Store.open(db_url, clock=StepClock(), artifact_root=root)
    store.apply(parse_spec(FIX_LINT), applied_by="alice")
    store.apply(parse_spec(GLOBEX), applied_by="alice")
    a_task, a = _attach(store.company("acme"))
    g_task, _ = _attach(store.company("globex"))
    _, only = _attach(store.company("acme"), b"acme only\n")
    orphan = b"saved, then its transaction rolled back\n"
    orphan_digest = hashlib.sha256(orphan).hexdigest()
    store.close()
    _to_legacy_layout(root)
    (root / orphan_digest[:2]).mkdir(exist_ok=True)
    (root / orphan_digest[:2] / orphan_digest).write_bytes(orphan)
    shared = root / a.sha256[:2] / a.sha256
    assert shared.is_file() and not (root / "acme").exists()

    reopened = Store.open(db_url, clock=StepClock(), artifact_root=root)
    try:
        assert reopened.company("acme").artifact(a_task.id, "fix.diff")[1] == PATCH
        assert reopened.company("globex").artifact(g_task.id, "fix.diff")[1] == PATCH
        assert reopened.company("acme").artifact(only.task_id, "fix.diff")[1] == b"acme only\n"
        # each owner has its own copy now; the shared file is gone; a blob nobody names stays put
        assert reopened.blobs.path("acme", a.sha256).read_bytes() == PATCH
        assert reopened.blobs.path("globex", a.sha256).read_bytes() == PATCH
        assert reopened.blobs.path("acme", only.sha256).is_file()
        assert not reopened.blobs.path("globex", only.sha256).exists()
        assert not shared.exists() and not (root / only.sha256[:2] / only.sha256).exists()
        assert reopened.blobs.legacy_digests() == [orphan_digest]
        # and from now on the companies are apart: corrupting acme's copy leaves globex's intact
        reopened.blobs.path("acme", a.sha256).write_bytes(b"tampered\n")
        assert reopened.company("globex").artifact(g_task.id, "fix.diff")[1] == PATCH
    finally:
        reopened.close()


def test_a_legacy_blob_not_yet_adopted_is_read_from_the_shared_layout(tmp_path):
    from roster.store.blobs import FileBlobStore

    root = tmp_path / "artifacts"
    digest = hashlib.sha256(PATCH).hexdigest()
    (root / digest[:2]).mkdir(parents=True)
    (root / digest[:2] / digest).write_bytes(PATCH)
    blobs = FileBlobStore(root)
    assert blobs.get("acme", digest) == PATCH
    assert blobs.legacy_digests() == [digest]
    # a company whose id looks like a shard ("ab") is never taken for legacy blobs
    blobs.put("ab", b"x")
    assert blobs.legacy_digests() == [digest]
    with pytest.raises(CorruptArtifact) as info:
        blobs.get("acme", "0" * 64)
    assert "missing" in str(info.value)


def test_a_store_with_the_shared_fts5_index_is_upgraded_to_one_index_per_company(tmp_path):
    """A SQLite store written before migration 0015 (one ``memory_fts`` for every company) gets an index
    per company holding exactly its entries, the shared one dropped, and recall works on."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store.open(url, clock=StepClock())
    store.apply(parse_spec(FIX_LINT), applied_by="alice")
    store.apply(parse_spec(GLOBEX), applied_by="alice")
    acme, globex = store.company("acme"), store.company("globex")
    kept = [acme.remember(line, actor="planner") for line in ACME_MEMORY]
    gone = acme.remember("forgotten parser note", actor="planner")
    acme.forget(gone.id, actor="planner")
    theirs = globex.remember(SECRET, actor="planner")
    expected = _scores(acme, "parser release")
    _downgrade(store, "0015")  # the later migrations undone by Alembic, as they would have been absent
    with store.engine.begin() as conn:  # back to the layout of revision 0014
        for company in ("acme", "globex"):
            conn.execute(text(f'DROP TABLE "{fts_table(company)}"'))
        conn.execute(text("CREATE VIRTUAL TABLE memory_fts USING fts5(text, tokenize = 'porter unicode61')"))
        conn.execute(text("INSERT INTO memory_fts(rowid, text) SELECT id, text FROM memory_entries ORDER BY id"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0014'"))
    store.close()

    upgraded = Store.open(url, clock=StepClock())
    try:
        with upgraded.engine.connect() as conn:
            names = set(conn.scalars(text("SELECT name FROM sqlite_schema WHERE sql LIKE 'CREATE VIRTUAL TABLE%'")))
            acme_rows = list(conn.execute(text(f'SELECT rowid FROM "{fts_table("acme")}" ORDER BY rowid')))
            globex_rows = list(conn.execute(text(f'SELECT rowid FROM "{fts_table("globex")}"')))
            version = conn.scalar(text("SELECT version_num FROM alembic_version"))
        assert version == shipped_head() != "0014"
        assert names == {fts_table("acme"), fts_table("globex")}
        assert [r[0] for r in acme_rows] == [e.id for e in kept]
        assert [r[0] for r in globex_rows] == [theirs.id]
        assert _scores(upgraded.company("acme"), "parser release") == expected
        assert [e.id for e in upgraded.company("globex").recall("initech", actor="planner")] == [theirs.id]
    finally:
        upgraded.close()


def _downgrade(store: Store, revision: str) -> None:
    """Run Alembic's downgrades of ``store``'s database to ``revision``."""
    from alembic import command
    from alembic.config import Config

    from roster.store.engine import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def test_two_processes_stores_share_a_companys_index_made_by_either(db_url):
    """Two stores on one database (as two processes have): the index one creates is the other's too."""
    first, second = Store.open(db_url, clock=StepClock()), Store.open(db_url, clock=StepClock())
    try:
        first.apply(parse_spec(FIX_LINT), applied_by="alice")
        assert second.company("acme").recall("parser", actor="planner") == []  # nothing saved: no index yet
        one = first.company("acme").remember("the parser chokes on tabs", actor="planner")
        two_ = second.company("acme").remember("the parser is slow", actor="planner")
        for store in (first, second):
            assert {e.id for e in store.company("acme").recall("parser", actor="planner")} == {one.id, two_.id}
    finally:
        first.close()
        second.close()
