"""task urgency index

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21 07:09:46.725160
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Written by hand: autogenerate cannot compare an index with a DESC column on SQLite.
    op.create_index("ix_tasks_work_order", "tasks",
                    ["company_id", "workflow", "state", sa.text("priority DESC"), "id"])
    # Its prefix: one index fewer to update on every transition.
    op.drop_index("ix_tasks_company_id_workflow_state", table_name="tasks")


def downgrade() -> None:
    op.create_index("ix_tasks_company_id_workflow_state", "tasks", ["company_id", "workflow", "state"])
    op.drop_index("ix_tasks_work_order", table_name="tasks")
