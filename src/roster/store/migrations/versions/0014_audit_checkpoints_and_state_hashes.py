"""audit checkpoints and state hashes: signed chain heads (audit_checkpoints), and the hash of the rows
each event produced (audit_events.state, part of the event's hash when set). Existing events keep
state NULL and verify as before.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 12:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state', sa.Text(), nullable=True))
    op.create_table('audit_checkpoints',
    sa.Column('company_id', sa.String(length=63), nullable=False),
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('head', sa.String(length=64), nullable=False),
    sa.Column('ts', sa.String(length=32), nullable=False),
    sa.Column('signature', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['company_id'], ['companies.id'], name=op.f('fk_audit_checkpoints_company_id_companies')),
    sa.PrimaryKeyConstraint('company_id', 'seq', 'key_id', name=op.f('pk_audit_checkpoints'))
    )


def downgrade() -> None:
    op.drop_table('audit_checkpoints')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_column('state')
