"""memory words split on punctuation on PostgreSQL, as SQLite's FTS5 (unicode61) splits them: the
full-text index becomes ``to_tsvector('english', regexp_replace(text, '[^[:alnum:]_]+', ' ', 'g'))``,
so 'tool.ruff' is the words 'tool' and 'ruff' (the default parser read it as one host name, and a
search for 'ruff' found nothing). SQLite: nothing changes. The expression is spelled out here rather
than imported, so this migration stays as it was written.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 14:10:00
"""

from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("DROP INDEX IF EXISTS ix_memory_entries_fts")
    op.execute("CREATE INDEX ix_memory_entries_fts ON memory_entries USING gin "
               "(to_tsvector('english', regexp_replace(text, '[^[:alnum:]_]+', ' ', 'g')))")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("DROP INDEX IF EXISTS ix_memory_entries_fts")
    op.execute("CREATE INDEX ix_memory_entries_fts ON memory_entries USING gin (to_tsvector('english', text))")
