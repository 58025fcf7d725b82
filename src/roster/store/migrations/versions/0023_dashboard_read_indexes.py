"""indexes for the dashboard's reads at population scale (issue 18, bench/dashboard.py)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 01:20:00

- ``audit_events (company_id, action, seq)`` and ``(company_id, principal, seq)`` replace their prefixes:
  the audit page's newest page of one action or principal is then a range read in ``seq`` order, where it
  walked the chain backwards from its end until it found 51 (250 ms over 190,000 events for a rare action,
  growing with the chain).
- ``runs (company_id, ended_at)``: runs that overlap a window (presence, the overview's always-on count)
  are those still running (``ended_at IS NULL``) and those that ended after it began, each a range of
  this index, where the bound on ``started_at`` alone reads every run ever started.
- ``approval_requests (company_id, task_id)``: the earlier requests on a task (the inbox's earlier
  rejections) without reading every request of the company.
"""

from alembic import op

revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_events_company_id_action_seq", "audit_events", ["company_id", "action", "seq"])
    op.drop_index("ix_audit_events_company_id_action", table_name="audit_events")
    op.create_index("ix_audit_events_company_id_principal_seq", "audit_events", ["company_id", "principal", "seq"])
    op.drop_index("ix_audit_events_company_id_principal", table_name="audit_events")
    op.create_index("ix_runs_company_id_ended_at", "runs", ["company_id", "ended_at"])
    op.create_index("ix_approval_requests_company_id_task_id", "approval_requests", ["company_id", "task_id"])


def downgrade() -> None:
    op.drop_index("ix_approval_requests_company_id_task_id", table_name="approval_requests")
    op.drop_index("ix_runs_company_id_ended_at", table_name="runs")
    op.create_index("ix_audit_events_company_id_principal", "audit_events", ["company_id", "principal"])
    op.drop_index("ix_audit_events_company_id_principal_seq", table_name="audit_events")
    op.create_index("ix_audit_events_company_id_action", "audit_events", ["company_id", "action"])
    op.drop_index("ix_audit_events_company_id_action_seq", table_name="audit_events")
