"""kpi readings: each measurement of a KPI, kept with its time

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-21 11:12:53.431860
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('kpi_readings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('company_id', sa.String(length=63), nullable=False),
    sa.Column('kpi', sa.String(length=63), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('measured_at', sa.String(length=32), nullable=False),
    sa.Column('recorded_by', sa.String(length=63), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['company_id'], ['companies.id'], name=op.f('fk_kpi_readings_company_id_companies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_kpi_readings'))
    )
    with op.batch_alter_table('kpi_readings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_kpi_readings_company_id_kpi_id'), ['company_id', 'kpi', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('kpi_readings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_kpi_readings_company_id_kpi_id'))
    op.drop_table('kpi_readings')
