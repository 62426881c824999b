"""Users, accounts, transfers, the append-only ledger, idempotency keys, refresh tokens.

The money rules that the database can enforce are enforced here, not only in Python:
- ledger entries are append-only (UPDATE, DELETE and TRUNCATE raise);
- each transfer's entries sum to zero, two per transfer (deferred constraint trigger);
- per-account `sequence` is gapless and each entry continues the previous balance;
- an account's stored balance equals its latest entry's `balance_after`;
- a customer balance never drops below minus its overdraft limit (check constraint).

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("role IN ('customer', 'operator', 'admin')", name="users_role_valid"),
    )
    op.create_index("users_email_lower_key", "users", [sa.text("lower(email)")], unique=True)

    op.create_table(
        "accounts",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("number", sa.String(32), nullable=False, unique=True),
        sa.Column("owner_id", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("balance", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("overdraft_limit", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_sequence", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('customer', 'system')", name="accounts_kind_valid"),
        sa.CheckConstraint("status IN ('active', 'frozen')", name="accounts_status_valid"),
        sa.CheckConstraint("overdraft_limit >= 0", name="accounts_overdraft_limit_nonnegative"),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="accounts_currency_iso"),
        # System (settlement) accounts mirror money that entered or left Settle,
        # so they go negative by design; customer accounts never below -limit.
        sa.CheckConstraint(
            "kind = 'system' OR balance >= -overdraft_limit", name="accounts_balance_floor"
        ),
        sa.CheckConstraint(
            "(kind = 'system') = (owner_id IS NULL)", name="accounts_owner_matches_kind"
        ),
    )
    op.create_index("accounts_owner_idx", "accounts", ["owner_id"])
    op.create_index(
        "accounts_one_system_per_currency",
        "accounts",
        ["currency"],
        unique=True,
        postgresql_where=sa.text("kind = 'system'"),
    )

    op.create_table(
        "transfers",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_code", sa.String(64), nullable=True),
        sa.Column(
            "source_account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False
        ),
        sa.Column(
            "destination_account_id",
            UUID(as_uuid=True),
            sa.ForeignKey("accounts.id"),
            nullable=False,
        ),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("description", sa.String(500), nullable=True),
        sa.Column("initiated_by", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.Column("completed_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(
            "kind IN ('transfer', 'deposit', 'withdrawal')", name="transfers_kind_valid"
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed')", name="transfers_status_valid"
        ),
        sa.CheckConstraint("amount > 0", name="transfers_amount_positive"),
        sa.CheckConstraint(
            "source_account_id <> destination_account_id", name="transfers_distinct_accounts"
        ),
        sa.CheckConstraint(
            "(status = 'failed') = (failure_code IS NOT NULL)", name="transfers_failure_code"
        ),
        sa.CheckConstraint(
            "(status = 'pending') = (completed_at IS NULL)", name="transfers_completed_at"
        ),
    )
    # The engine's hot query: the oldest pending transfers of one source account.
    op.create_index(
        "transfers_pending_by_source",
        "transfers",
        ["source_account_id", "seq"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("transfers_source_idx", "transfers", ["source_account_id", "seq"])
    op.create_index("transfers_destination_idx", "transfers", ["destination_account_id", "seq"])
    op.create_index("transfers_initiator_idx", "transfers", ["initiated_by", "seq"])

    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id"), nullable=False),
        sa.Column("account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("balance_before", sa.BigInteger, nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("amount <> 0", name="ledger_entries_amount_nonzero"),
        sa.CheckConstraint("sequence >= 1", name="ledger_entries_sequence_positive"),
        sa.CheckConstraint(
            "balance_after = balance_before + amount", name="ledger_entries_balance_arithmetic"
        ),
        sa.UniqueConstraint("account_id", "sequence", name="ledger_entries_account_sequence_key"),
        sa.UniqueConstraint(
            "transfer_id", "account_id", name="ledger_entries_transfer_account_key"
        ),
    )

    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("user_id", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id"), nullable=False),
        sa.Column("response_status", sa.Integer, nullable=False),
        sa.Column("response_body", JSONB, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("user_id", "key", name="idempotency_keys_user_key"),
    )

    op.create_table(
        "refresh_tokens",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("user_id", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("family_id", UUID(as_uuid=True), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("used_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
    )
    op.create_index("refresh_tokens_family_idx", "refresh_tokens", ["family_id"])

    op.execute(LEDGER_TRIGGERS)


LEDGER_TRIGGERS = """
CREATE FUNCTION settle_refuse_ledger_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION settle_refuse_ledger_change();
CREATE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION settle_refuse_ledger_change();

-- Checked at commit, when both legs of every transfer in the transaction exist.
CREATE FUNCTION settle_check_entry() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    legs integer;
    total numeric;
    prev_after bigint;
BEGIN
    SELECT count(*), sum(amount) INTO legs, total
      FROM ledger_entries WHERE transfer_id = NEW.transfer_id;
    IF legs <> 2 OR total <> 0 THEN
        RAISE EXCEPTION 'transfer % is unbalanced: % entries summing to %',
            NEW.transfer_id, legs, total USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.sequence = 1 THEN
        IF NEW.balance_before <> 0 THEN
            RAISE EXCEPTION 'first entry of account % must start from 0', NEW.account_id
                USING ERRCODE = 'check_violation';
        END IF;
    ELSE
        SELECT balance_after INTO prev_after FROM ledger_entries
         WHERE account_id = NEW.account_id AND sequence = NEW.sequence - 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'gap in sequence of account % before %', NEW.account_id, NEW.sequence
                USING ERRCODE = 'check_violation';
        END IF;
        IF prev_after <> NEW.balance_before THEN
            RAISE EXCEPTION 'entry % of account % does not continue the previous balance',
                NEW.sequence, NEW.account_id USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_entries_consistent
    AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION settle_check_entry();

-- The stored balance is a cache of the ledger; it must agree with the last entry.
CREATE FUNCTION settle_check_account_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    current_balance bigint;
    current_sequence bigint;
    last_after bigint;
BEGIN
    SELECT balance, last_sequence INTO current_balance, current_sequence
      FROM accounts WHERE id = NEW.id;
    IF current_sequence = 0 THEN
        last_after := 0;
    ELSE
        SELECT balance_after INTO last_after FROM ledger_entries
         WHERE account_id = NEW.id AND sequence = current_sequence;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account % claims sequence % but has no such entry',
                NEW.id, current_sequence USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF last_after <> current_balance THEN
        RAISE EXCEPTION 'account % balance % disagrees with its ledger (%)',
            NEW.id, current_balance, last_after USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER accounts_balance_matches_ledger
    AFTER INSERT OR UPDATE OF balance, last_sequence ON accounts
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION settle_check_account_balance();
"""


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS accounts_balance_matches_ledger ON accounts")
    op.execute("DROP TRIGGER IF EXISTS ledger_entries_consistent ON ledger_entries")
    op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_truncate ON ledger_entries")
    op.execute("DROP TRIGGER IF EXISTS ledger_entries_append_only ON ledger_entries")
    for table in (
        "refresh_tokens",
        "idempotency_keys",
        "ledger_entries",
        "transfers",
        "accounts",
        "users",
    ):
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS settle_check_account_balance()")
    op.execute("DROP FUNCTION IF EXISTS settle_check_entry()")
    op.execute("DROP FUNCTION IF EXISTS settle_refuse_ledger_change()")
