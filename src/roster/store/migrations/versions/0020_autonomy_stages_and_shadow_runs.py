"""stages: an agent's autonomy stage per workflow set by a human or by the criteria; runs.proposal and
runs.agreed: what a shadow run proposed and whether it matched what happened.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 22:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'stages',
        sa.Column('company_id', sa.String(length=63), nullable=False),
        sa.Column('agent', sa.String(length=63), nullable=False),
        sa.Column('workflow', sa.String(length=63), nullable=False),
        sa.Column('stage', sa.String(length=16), nullable=False),
        sa.Column('set_by', sa.String(length=63), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('evidence', sa.Text(), server_default='{}', nullable=False),
        sa.Column('set_at', sa.String(length=32), nullable=False),
        sa.Column('breaches', sa.Integer(), server_default='0', nullable=False),
        sa.ForeignKeyConstraint(['company_id'], ['companies.id'], name=op.f('fk_stages_company_id_companies')),
        sa.PrimaryKeyConstraint('company_id', 'agent', 'workflow', name=op.f('pk_stages')),
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('proposal', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('agreed', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('agreed')
        batch_op.drop_column('proposal')
    op.drop_table('stages')
