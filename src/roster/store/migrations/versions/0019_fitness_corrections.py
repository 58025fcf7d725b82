"""corrections: events that corrected an agent's transition within the settle window (fitness);
runs.approval_id (the request a waiting run opened) and runs.corrected_at; runs indexed by start.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 22:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'corrections',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('company_id', sa.String(length=63), nullable=False),
        sa.Column('run_id', sa.String(length=32), nullable=False),
        sa.Column('agent', sa.String(length=63), nullable=False),
        sa.Column('workflow', sa.String(length=63), nullable=False),
        sa.Column('task_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('by', sa.String(length=63), nullable=False),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.Column('at', sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(['company_id'], ['companies.id'], name=op.f('fk_corrections_company_id_companies')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_corrections')),
    )
    op.create_index(op.f('ix_corrections_company_id_at'), 'corrections', ['company_id', 'at'])
    op.create_index(op.f('ix_corrections_company_id_run_id'), 'corrections', ['company_id', 'run_id'])
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('approval_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('corrected_at', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_runs_company_id_started_at'), ['company_id', 'started_at'])


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_runs_company_id_started_at'))
        batch_op.drop_column('corrected_at')
        batch_op.drop_column('approval_id')
    op.drop_index(op.f('ix_corrections_company_id_run_id'), table_name='corrections')
    op.drop_index(op.f('ix_corrections_company_id_at'), table_name='corrections')
    op.drop_table('corrections')
