"""Hash-chained audit trail, per-account daily outgoing limits, ledger verification runs.

- `audit_events` is append-only (triggers) and hash-chained: each row stores the
  previous row's hash, and `chain_seq` is gapless. Writers serialise on the single
  `audit_chain_head` row, taken last in every transaction, for the shortest hold.
- `accounts.daily_outgoing_limit`: NULL means "use the configured default".
- `ledger_verifications` keeps the outcome of each `settle verify` run for /metrics.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS_HASH = "0" * 64
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("accounts", sa.Column("daily_outgoing_limit", sa.BigInteger, nullable=True))
    op.create_check_constraint(
        "accounts_daily_outgoing_limit_nonnegative",
        "accounts",
        "daily_outgoing_limit IS NULL OR daily_outgoing_limit >= 0",
    )
    # The daily-limit rule sums today's outgoing transfers per source account.
    op.create_index(
        "transfers_source_completed_idx",
        "transfers",
        ["source_account_id", "completed_at"],
        postgresql_where=sa.text("status = 'succeeded'"),
    )

    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("chain_seq", sa.BigInteger, nullable=False, unique=True),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("actor_id", UUID(as_uuid=True), nullable=True),
        sa.Column("subject_type", sa.String(32), nullable=True),
        sa.Column("subject_id", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("audit_events_subject_idx", "audit_events", ["subject_type", "subject_id"])
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.SmallInteger, primary_key=True),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name="audit_chain_head_single_row"),
    )
    op.execute(
        sa.text(
            "INSERT INTO audit_chain_head (id, last_seq, last_hash) VALUES (1, 0, :h)"
        ).bindparams(h=GENESIS_HASH)
    )
    op.execute(
        """
        CREATE TRIGGER audit_events_append_only
            BEFORE UPDATE OR DELETE ON audit_events
            FOR EACH ROW EXECUTE FUNCTION settle_refuse_ledger_change();
        CREATE TRIGGER audit_events_no_truncate
            BEFORE TRUNCATE ON audit_events
            FOR EACH STATEMENT EXECUTE FUNCTION settle_refuse_ledger_change();
        """
    )

    op.create_table(
        "ledger_verifications",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("ran_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("problems", sa.Integer, nullable=False),
        sa.Column("summary", JSONB, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ledger_verifications")
    op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
    op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
    op.drop_table("audit_chain_head")
    op.drop_table("audit_events")
    op.drop_index("transfers_source_completed_idx", table_name="transfers")
    op.drop_constraint("accounts_daily_outgoing_limit_nonnegative", "accounts")
    op.drop_column("accounts", "daily_outgoing_limit")
