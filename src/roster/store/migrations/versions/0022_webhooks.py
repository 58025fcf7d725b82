"""webhook_cursors and webhook_deliveries: how far each webhook has followed the audit chain, and the
delivery log (one row per event and hook, with its payload, attempts and outcome).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 01:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'webhook_cursors',
        sa.Column('company_id', sa.String(length=63), nullable=False),
        sa.Column('hook', sa.String(length=63), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('updated_at', sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(['company_id'], ['companies.id'], name=op.f('fk_webhook_cursors_company_id_companies')),
        sa.PrimaryKeyConstraint('company_id', 'hook', name=op.f('pk_webhook_cursors')),
    )
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('company_id', sa.String(length=63), nullable=False),
        sa.Column('hook', sa.String(length=63), nullable=False),
        sa.Column('event', sa.String(length=63), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('payload', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('next_attempt_at', sa.String(length=32), nullable=False),
        sa.Column('last_status', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.Text(), server_default='', nullable=False),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.Column('delivered_at', sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(['company_id'], ['companies.id'],
                                name=op.f('fk_webhook_deliveries_company_id_companies')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
        sa.UniqueConstraint('company_id', 'hook', 'seq', name=op.f('uq_webhook_deliveries_company_id_hook_seq')),
    )
    op.create_index(op.f('ix_webhook_deliveries_company_id_status_next_attempt_at'), 'webhook_deliveries',
                    ['company_id', 'status', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_webhook_deliveries_company_id_status_next_attempt_at'), table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_cursors')
