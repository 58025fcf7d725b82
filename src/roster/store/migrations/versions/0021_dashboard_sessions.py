"""dashboard_sessions: a human's signed-in browser sessions and the one-time sign-in links that open them.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 01:05:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'dashboard_sessions',
        sa.Column('company_id', sa.String(length=63), nullable=False),
        sa.Column('id', sa.String(length=16), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('principal', sa.String(length=63), nullable=False),
        sa.Column('secret_sha256', sa.String(length=64), nullable=False),
        sa.Column('created_by', sa.String(length=63), nullable=False),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.Column('expires_at', sa.String(length=32), nullable=False),
        sa.Column('used_at', sa.String(length=32), nullable=True),
        sa.Column('revoked_at', sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(['company_id', 'principal'], ['principals.company_id', 'principals.handle'],
                                name=op.f('fk_dashboard_sessions_company_id_principals')),
        sa.PrimaryKeyConstraint('company_id', 'id', name=op.f('pk_dashboard_sessions')),
    )


def downgrade() -> None:
    op.drop_table('dashboard_sessions')
