"""Reporting: metadata and its search, statements and balance-at-a-time, closing accounts.

- `metadata` (a flat JSON object of strings, validated by the gateway, see
  domain/metadata.py) on accounts, transfers and transfer batches, `{}` by default.
- Indexes for `GET /v1/transfers?metadata[k]=v&created_after=&created_before=`:
  a GIN index (`jsonb_path_ops`, containment only) on transfers' metadata, partial
  on `metadata <> '{}'` so the money path pays nothing for transfers without any
  (the listing query repeats that predicate, which lets the planner use it), and a
  btree on `created_at`.
- `ledger_entries (account_id, created_at, sequence)`: `balance?at=` is one index
  probe (the last entry at or before the instant), and a statement is one range scan.
- Accounts may be `closed`: the database refuses a closed account with a non-zero
  balance (the engine fails every transfer touching it, `account_closed`).
- `settle_accept` restated whole from its latest version (0007 plus the 0008 patch),
  with two new arguments, `p_metadata` (a JSON array: one object per item, or NULL
  when no item has any, the common case) and `p_batch_metadata`, and one new refusal,
  `account_closed`, for a money request naming a closed account. Its signature
  changes, so the old function is dropped first (CREATE OR REPLACE would add an
  overload) and domain/db_roles.py grants the new one.

Revision ID: 0010
Revises: 0008
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
EMPTY = sa.text("'{}'::jsonb")

OLD_SIGNATURE = (
    "settle_accept(uuid, text, text, text[], uuid[], text[], bigint[], text[], text[],"
    " uuid, boolean, text, bigint)"
)


def upgrade() -> None:
    for table in ("accounts", "transfers", "transfer_batches"):
        op.add_column(table, sa.Column("metadata", JSONB, nullable=False, server_default=EMPTY))
        op.create_check_constraint(
            f"{table}_metadata_object", table, "jsonb_typeof(metadata) = 'object'"
        )
    op.create_index(
        "transfers_metadata_idx",
        "transfers",
        ["metadata"],
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
        postgresql_where=sa.text("metadata <> '{}'::jsonb"),
    )
    op.create_index("transfers_created_idx", "transfers", ["created_at"])
    op.create_index(
        "ledger_entries_account_time_idx",
        "ledger_entries",
        ["account_id", "created_at", "sequence"],
    )

    op.add_column("accounts", sa.Column("closed_at", TIMESTAMP, nullable=True))
    op.drop_constraint("accounts_status_valid", "accounts", type_="check")
    op.create_check_constraint(
        "accounts_status_valid", "accounts", "status IN ('active', 'frozen', 'closed')"
    )
    op.create_check_constraint(
        "accounts_closed_empty",
        "accounts",
        "(status = 'closed') = (closed_at IS NOT NULL) AND (status <> 'closed' OR balance = 0)",
    )

    op.execute(f"DROP FUNCTION {OLD_SIGNATURE}")
    op.execute(ACCEPT_FUNCTION)


# settle_accept: 0007's function with 0008's destination rule, plus metadata and
# `account_closed`. Every change from 0007/0008 is marked "0010:".
ACCEPT_FUNCTION = """
CREATE FUNCTION settle_accept(
    p_user uuid, p_key text, p_fingerprint text,
    p_kinds text[], p_accounts uuid[], p_destinations text[],
    p_amounts bigint[], p_currencies text[], p_descriptions text[],
    p_batch uuid, p_atomic boolean, p_request_id text, p_large_threshold bigint,
    -- 0010: a JSON array with one metadata object per item, or NULL for "none at all"
    -- (then nothing is parsed per item); and the batch's own metadata, or NULL.
    p_metadata jsonb, p_batch_metadata jsonb
) RETURNS TABLE (outcome text, item integer, detail text, transfer jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n integer := cardinality(p_kinds);
    v_role text;
    v_key record;
    v_src uuid[] := '{}';
    v_dst uuid[] := '{}';
    v_refused integer := 0;
    v_account record;
    v_other record;
    v_system uuid;
    k integer;
BEGIN
    -- One request per (user, key) at a time; a second one answers "in flight" at once.
    IF NOT pg_try_advisory_xact_lock(
        hashtextextended('idempotency:' || p_user::text || ':' || p_key, 0)
    ) THEN
        RETURN QUERY SELECT 'in_flight'::text, NULL::integer, NULL::text, NULL::jsonb;
        RETURN;
    END IF;

    -- A key seen before: replay what it accepted, or refuse a different body under it.
    SELECT k.fingerprint, k.transfer_id, k.batch_id INTO v_key
      FROM idempotency_keys k WHERE k.user_id = p_user AND k.key = p_key;
    IF FOUND THEN
        IF v_key.fingerprint <> p_fingerprint THEN
            RETURN QUERY SELECT 'key_reused'::text, NULL::integer, NULL::text, NULL::jsonb;
        ELSE
            RETURN QUERY
                SELECT 'replayed'::text, t.batch_index, NULL::text, to_jsonb(t)
                  FROM transfers t
                 WHERE t.id = v_key.transfer_id OR t.batch_id = v_key.batch_id
                 ORDER BY t.batch_index NULLS FIRST;
        END IF;
        RETURN;
    END IF;

    SELECT u.role INTO v_role FROM users u WHERE u.id = p_user;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown_user'::text, NULL::integer, NULL::text, NULL::jsonb;
        RETURN;
    END IF;

    -- Check every item; a refused one is returned (with its 1-based index) and, if any
    -- is refused, nothing is written.
    FOR k IN 1 .. n LOOP
        outcome := NULL;
        IF p_kinds[k] = 'deposit' AND v_role NOT IN ('operator', 'admin') THEN
            outcome := 'forbidden';
        ELSE
            -- 0010: also reads the status, for `account_closed`.
            SELECT a.id, a.number, a.currency, a.kind, a.owner_id, a.status INTO v_account
              FROM accounts a WHERE a.id = p_accounts[k];
            IF NOT FOUND OR v_account.kind <> 'customer'
               OR (p_kinds[k] <> 'deposit' AND v_account.owner_id IS DISTINCT FROM p_user) THEN
                outcome := 'account_not_found';
            ELSIF p_kinds[k] = 'deposit' AND v_account.owner_id = p_user THEN
                -- Separation of duties: nobody funds an account of their own.
                outcome := 'own_account';
            ELSIF v_account.status = 'closed' THEN
                -- 0010: a closed account neither sends nor receives.
                outcome := 'account_closed';
                detail := v_account.number;
            ELSIF v_account.currency <> p_currencies[k] THEN
                outcome := 'currency_mismatch';
                detail := v_account.number || ' ' || v_account.currency;
            END IF;
        END IF;
        IF outcome IS NULL AND p_kinds[k] = 'transfer' THEN
            SELECT a.id, a.number, a.currency, a.owner_id, a.status INTO v_other
              FROM accounts a WHERE a.number = p_destinations[k] AND a.kind = 'customer';
            IF NOT FOUND THEN
                outcome := 'destination_not_found';
            ELSIF v_other.id = v_account.id THEN
                outcome := 'same_account';
            ELSIF v_other.status = 'closed' THEN
                -- 0010: the payer named a closed account; no other fact of it is told.
                outcome := 'account_closed';
                detail := v_other.number;
            ELSIF v_other.currency <> p_currencies[k]
                  AND v_other.owner_id IS DISTINCT FROM p_user THEN
                -- 0008: someone else's currency is not the payer's business.
                outcome := 'destination_unavailable';
            ELSIF v_other.currency <> p_currencies[k] THEN
                outcome := 'currency_mismatch';
                detail := v_other.number || ' ' || v_other.currency;
            ELSE
                v_src := v_src || v_account.id;
                v_dst := v_dst || v_other.id;
            END IF;
        ELSIF outcome IS NULL THEN
            -- Deposits and withdrawals move money to or from the currency's settlement account.
            SELECT a.id INTO v_system
              FROM accounts a WHERE a.kind = 'system' AND a.currency = p_currencies[k];
            IF NOT FOUND THEN
                outcome := 'no_settlement_account';
                detail := p_currencies[k];
            ELSIF p_kinds[k] = 'deposit' THEN
                v_src := v_src || v_system;
                v_dst := v_dst || v_account.id;
            ELSE
                v_src := v_src || v_account.id;
                v_dst := v_dst || v_system;
            END IF;
        END IF;
        IF outcome IS NOT NULL THEN
            v_refused := v_refused + 1;
            item := k;
            transfer := NULL;
            RETURN NEXT;
            detail := NULL;
        END IF;
    END LOOP;
    IF v_refused > 0 THEN
        RETURN;
    END IF;

    IF p_batch IS NOT NULL THEN
        INSERT INTO transfer_batches (id, atomic, initiated_by, item_count, created_at, metadata)
        VALUES (p_batch, p_atomic, p_user, n, now(), COALESCE(p_batch_metadata, '{}'));
    END IF;

    -- Transfers, the key and the audit rows in one statement; `accepted` rows come back.
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO transfers (id, kind, status, source_account_id, destination_account_id,
                               amount, currency, description, initiated_by, created_at,
                               lane, batch_id, batch_index, metadata)
        SELECT gen_random_uuid(), u.kind, 'pending', u.src, u.dst, u.amount, u.currency,
               u.description, p_user, now(),
               settle_lane(CASE WHEN p_atomic THEN v_src[1] ELSE u.src END),
               p_batch, CASE WHEN p_batch IS NULL THEN NULL ELSE u.ord - 1 END,
               -- 0010: item k's object (jsonb arrays are 0-based), `{}` when none.
               COALESCE(p_metadata -> (u.ord::integer - 1), '{}')
          FROM unnest(p_kinds, v_src, v_dst, p_amounts, p_currencies, p_descriptions)
               WITH ORDINALITY AS u(kind, src, dst, amount, currency, description, ord)
         ORDER BY u.ord
        RETURNING *
    ), keyed AS (
        INSERT INTO idempotency_keys (user_id, key, fingerprint, transfer_id, batch_id, created_at)
        SELECT p_user, p_key, p_fingerprint,
               CASE WHEN p_batch IS NULL THEN (SELECT id FROM inserted LIMIT 1) END,
               p_batch, now()
    ), audited AS (
        INSERT INTO audit_events (occurred_at, event_type, actor_id, subject_type, subject_id,
                                  request_id, data)
        SELECT now(), e.event_type, p_user, 'transfer', ins.id::text, p_request_id,
               jsonb_build_object(
                   'kind', ins.kind, 'amount', ins.amount, 'currency', ins.currency,
                   'source_account_id', ins.source_account_id,
                   'destination_account_id', ins.destination_account_id,
                   'batch_id', ins.batch_id)
               || CASE WHEN e.event_type = 'anomaly.large_transfer'
                       THEN jsonb_build_object('threshold', p_large_threshold)
                       ELSE '{}'::jsonb END
          FROM inserted ins
          CROSS JOIN LATERAL (
              SELECT 'transfer.accepted' AS event_type
              UNION ALL
              SELECT 'anomaly.large_transfer'
               WHERE p_large_threshold IS NOT NULL AND ins.amount >= p_large_threshold
          ) e
    )
    SELECT 'accepted'::text, ins.batch_index, NULL::text, to_jsonb(ins)
      FROM inserted ins ORDER BY ins.seq;
END $$;
"""


def downgrade() -> None:
    raise NotImplementedError("0010 is not reversible: restore from a backup instead")
