"""a run's cost may be unknown: runs.cost_usd is NULL when the run could not be priced (a model neither
the spec's models: nor genai-prices has a price for); 0 stays 0. Existing rows keep their values.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-10 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.alter_column('cost_usd', existing_type=sa.Float(), nullable=True, existing_server_default='0')


def downgrade() -> None:
    op.execute("UPDATE runs SET cost_usd = 0 WHERE cost_usd IS NULL")
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.alter_column('cost_usd', existing_type=sa.Float(), nullable=False, existing_server_default='0')
