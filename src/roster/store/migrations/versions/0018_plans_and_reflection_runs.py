"""plans: the versioned plan of an agent's mission (roster.kernel.plans), written by reflection runs and
by humans; plan_holds: a human's hold on a plan while editing it; runs.reflection marks reflection runs;
goal_tasks: the tasks a goal run filed toward its goal (one finishing makes the goal due).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 19:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'plans',
        sa.Column('company_id', sa.String(length=63), nullable=False),
        sa.Column('agent', sa.String(length=63), nullable=False),
        sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('plan', sa.Text(), nullable=False),
        sa.Column('reason', sa.Text(), server_default='', nullable=False),
        sa.Column('author', sa.String(length=63), nullable=False),
        sa.Column('run_id', sa.String(length=32), nullable=True),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(['company_id'], ['companies.id']),
        sa.PrimaryKeyConstraint('company_id', 'agent', 'version'),
    )
    op.create_table(
        'plan_holds',
        sa.Column('company_id', sa.String(length=63), nullable=False),
        sa.Column('agent', sa.String(length=63), nullable=False),
        sa.Column('holder', sa.String(length=63), nullable=False),
        sa.Column('note', sa.Text(), server_default='', nullable=False),
        sa.Column('held_at', sa.String(length=32), nullable=False),
        sa.Column('expires_at', sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(['company_id'], ['companies.id']),
        sa.PrimaryKeyConstraint('company_id', 'agent'),
    )
    op.create_table(
        'goal_tasks',
        sa.Column('company_id', sa.String(length=63), nullable=False),
        sa.Column('task_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('goal_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['company_id'], ['companies.id']),
        sa.PrimaryKeyConstraint('company_id', 'task_id'),
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reflection', sa.Boolean(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('reflection')
    op.drop_table('goal_tasks')
    op.drop_table('plan_holds')
    op.drop_table('plans')
