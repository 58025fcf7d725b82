"""memory full-text index per company: on SQLite, one FTS5 table per company instead of the shared
``memory_fts``, whose bm25 statistics (row count, average length, rows per word) let one company's
search scores show whether a word occurs in another company's private memory. PostgreSQL's ts_rank
uses no statistics over other rows: nothing changes there.

Each company that has memory entries gets ``memory_fts_<company>_index``, filled from
``memory_entries``; companies with none get theirs on their first entry (``roster.store.memory``).
The names are spelled out here rather than imported, so this migration stays as it was written.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 13:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

TOKENIZE = "tokenize = 'porter unicode61'"


def _index(company: str) -> str:
    return f'"memory_fts_{company}_index"'


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for company in bind.execute(sa.text("SELECT DISTINCT company_id FROM memory_entries ORDER BY company_id")).scalars():
        op.execute(f"CREATE VIRTUAL TABLE {_index(company)} USING fts5(text, {TOKENIZE})")
        bind.execute(sa.text(f"INSERT INTO {_index(company)}(rowid, text) SELECT id, text FROM memory_entries "
                             "WHERE company_id = :company ORDER BY id"), {"company": company})
    op.execute("DROP TABLE IF EXISTS memory_fts")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    op.execute(f"CREATE VIRTUAL TABLE memory_fts USING fts5(text, {TOKENIZE})")
    op.execute("INSERT INTO memory_fts(rowid, text) SELECT id, text FROM memory_entries ORDER BY id")
    for company in bind.execute(sa.text("SELECT id FROM companies ORDER BY id")).scalars():
        op.execute(f"DROP TABLE IF EXISTS {_index(company)}")
