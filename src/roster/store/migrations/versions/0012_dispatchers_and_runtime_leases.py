"""dispatchers and runtime leases: the fleet runtime's processes, their heartbeats, which process ran
each run, and named leases so that one process does what every process could

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 08:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dispatchers',
    sa.Column('company_id', sa.String(length=63), nullable=False),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('host', sa.Text(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('agents', sa.Text(), nullable=True),
    sa.Column('max_runs', sa.Integer(), nullable=False),
    sa.Column('lease_seconds', sa.Float(), nullable=False),
    sa.Column('started_at', sa.String(length=32), nullable=False),
    sa.Column('heartbeat_at', sa.String(length=32), nullable=False),
    sa.Column('stopped_at', sa.String(length=32), nullable=True),
    sa.Column('runs_in_flight', sa.Integer(), server_default='0', nullable=False),
    sa.Column('runs_started', sa.Integer(), server_default='0', nullable=False),
    sa.Column('lost_races', sa.Integer(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['company_id'], ['companies.id'], name=op.f('fk_dispatchers_company_id_companies')),
    sa.PrimaryKeyConstraint('company_id', 'id', name=op.f('pk_dispatchers'))
    )
    op.create_table('runtime_leases',
    sa.Column('company_id', sa.String(length=63), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('holder', sa.String(length=32), nullable=False),
    sa.Column('expires_at', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['company_id'], ['companies.id'], name=op.f('fk_runtime_leases_company_id_companies')),
    sa.PrimaryKeyConstraint('company_id', 'name', name=op.f('pk_runtime_leases'))
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dispatcher_id', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_runs_company_id_outcome_agent'), ['company_id', 'outcome', 'agent'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_runs_company_id_outcome_agent'))
        batch_op.drop_column('dispatcher_id')
    op.drop_table('runtime_leases')
    op.drop_table('dispatchers')
