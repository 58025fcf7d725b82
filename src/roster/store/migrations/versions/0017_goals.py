"""goals: an agent's objective with a program-decided check, a budget and its spend, and a state
(roster.kernel.goals); runs.goal_id attributes a run's spend to the goal it worked toward; an
escalation may be about a goal (escalations.goal_id) instead of a task (task_id becomes nullable).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 16:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'goals',
        sa.Column('company_id', sa.String(length=63), nullable=False),
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('agent', sa.String(length=63), nullable=False),
        sa.Column('objective', sa.Text(), nullable=False),
        sa.Column('check_spec', sa.Text(), nullable=False),
        sa.Column('budget', sa.Text(), nullable=False),
        sa.Column('every_seconds', sa.Integer(), nullable=False),
        sa.Column('stall_after', sa.Integer(), nullable=False),
        sa.Column('deadline_at', sa.String(length=32), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.Text(), server_default='', nullable=False),
        sa.Column('spent_usd', sa.Float(), server_default='0', nullable=False),
        sa.Column('spent_tokens', sa.Integer(), server_default='0', nullable=False),
        sa.Column('spent_runs', sa.Integer(), server_default='0', nullable=False),
        sa.Column('spent_seconds', sa.Float(), server_default='0', nullable=False),
        sa.Column('unpriced_runs', sa.Integer(), server_default='0', nullable=False),
        sa.Column('idle_runs', sa.Integer(), server_default='0', nullable=False),
        sa.Column('due_at', sa.String(length=32), nullable=True),
        sa.Column('last_check', sa.Text(), nullable=True),
        sa.Column('checked_at', sa.String(length=32), nullable=True),
        sa.Column('created_by', sa.String(length=63), nullable=False),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.Column('updated_at', sa.String(length=32), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['company_id'], ['companies.id']),
        sa.PrimaryKeyConstraint('company_id', 'id'),
    )
    op.create_index(op.f('ix_goals_company_id_agent_state'), 'goals', ['company_id', 'agent', 'state'], unique=False)
    op.create_index(op.f('ix_goals_company_id_state_due_at'), 'goals', ['company_id', 'state', 'due_at'], unique=False)
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('goal_id', sa.Integer(), nullable=True))
    with op.batch_alter_table('escalations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('goal_id', sa.Integer(), nullable=True))
        batch_op.alter_column('task_id', existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM escalations WHERE task_id IS NULL")
    with op.batch_alter_table('escalations', schema=None) as batch_op:
        batch_op.alter_column('task_id', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column('goal_id')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('goal_id')
    op.drop_index(op.f('ix_goals_company_id_state_due_at'), table_name='goals')
    op.drop_index(op.f('ix_goals_company_id_agent_state'), table_name='goals')
    op.drop_table('goals')
