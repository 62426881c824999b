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
  balance or anything held (the engine fails every transfer touching it, `account_closed`).
- `settle_accept` restated whole from its latest version (0009's), with two new
  arguments at the end (DEFAULT NULL), `p_metadata` (a JSON array: one object per item, or NULL
  when no item has any, the common case) and `p_batch_metadata`, and one new refusal,
  `account_closed`, for a money request naming a closed account. Its signature
  changes, so the old function is dropped first (CREATE OR REPLACE would add an
  overload) and domain/db_roles.py grants the new one.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
EMPTY = sa.text("'{}'::jsonb")

OLD_SIGNATURE = (
    "settle_accept(uuid, text, text, text[], uuid[], text[], bigint[], text[], text[],"
    " uuid, boolean, text, bigint, uuid[], timestamptz[], timestamptz[], integer[], integer)"
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
        "(status = 'closed') = (closed_at IS NOT NULL)"
        " AND (status <> 'closed' OR (balance = 0 AND held = 0))",
    )

    op.execute(f"DROP FUNCTION {OLD_SIGNATURE}")
    op.execute(ACCEPT_FUNCTION)


# settle_accept: 0009's function (0007 with 0008's destination rule, holds, reversals,
# schedules and backpressure), plus metadata and `account_closed`. Every change from
# 0009 is marked "0010:".
ACCEPT_FUNCTION = """
CREATE FUNCTION settle_accept(
    p_user uuid, p_key text, p_fingerprint text,
    p_kinds text[], p_accounts uuid[], p_destinations text[],
    p_amounts bigint[], p_currencies text[], p_descriptions text[],
    p_batch uuid, p_atomic boolean, p_request_id text, p_large_threshold bigint,
    p_targets uuid[] DEFAULT NULL, p_execute_at timestamptz[] DEFAULT NULL,      -- 0009
    p_execute_before timestamptz[] DEFAULT NULL, p_expires_in integer[] DEFAULT NULL,
    p_max_pending integer DEFAULT NULL,
    -- 0010: a JSON array with one metadata object per item, or NULL for "none at all"
    -- (then nothing is parsed per item); and the batch's own metadata, or NULL.
    p_metadata jsonb DEFAULT NULL, p_batch_metadata jsonb DEFAULT NULL
) RETURNS TABLE (outcome text, item integer, detail text, transfer jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n integer := cardinality(p_kinds);
    v_role text;
    v_key record;
    v_src uuid[] := '{}';
    v_dst uuid[] := '{}';
    v_amounts bigint[] := p_amounts;         -- 0009: filled in for reversals, captures, voids
    v_currencies text[] := p_currencies;     -- 0009
    v_refused integer := 0;
    v_account record;
    v_other record;
    v_target record;                         -- 0009: the transfer a command names
    v_left bigint;                           -- 0009
    v_pending integer;                       -- 0009
    v_system uuid;
    k integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(
        hashtextextended('idempotency:' || p_user::text || ':' || p_key, 0)
    ) THEN
        RETURN QUERY SELECT 'in_flight'::text, NULL::integer, NULL::text, NULL::jsonb;
        RETURN;
    END IF;

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

    FOR k IN 1 .. n LOOP
        outcome := NULL;
        IF p_kinds[k] = 'deposit' AND v_role NOT IN ('operator', 'admin') THEN
            outcome := 'forbidden';
        ELSIF p_kinds[k] = 'reversal' THEN                                   -- 0009
            -- Money back from the original's destination to its source: allowed to the
            -- destination's owner (a refund) and to operators.
            SELECT t.kind, t.status, t.amount, t.currency, t.initiated_by,
                   t.source_account_id, t.destination_account_id,
                   s.owner_id AS source_owner, d.owner_id AS destination_owner
              INTO v_target
              FROM transfers t
              JOIN accounts s ON s.id = t.source_account_id
              JOIN accounts d ON d.id = t.destination_account_id
             WHERE t.id = p_targets[k];
            IF NOT FOUND OR NOT (v_role IN ('operator', 'admin')
                                 OR p_user = v_target.initiated_by
                                 OR p_user IS NOT DISTINCT FROM v_target.source_owner
                                 OR p_user IS NOT DISTINCT FROM v_target.destination_owner) THEN
                outcome := 'transfer_not_found';
            ELSIF v_role NOT IN ('operator', 'admin')
                  AND v_target.destination_owner IS DISTINCT FROM p_user THEN
                outcome := 'reversal_forbidden';
            ELSIF v_target.destination_owner IS DISTINCT FROM p_user
                  AND v_target.source_owner = p_user THEN
                -- Separation of duties: an operator does not pull money back from someone
                -- else into an account of their own (a refund by the payee is fine).
                outcome := 'own_account';
            ELSIF v_target.kind NOT IN ('transfer', 'deposit') THEN
                -- Reversing a withdrawal would credit a customer from the settlement
                -- account: that is a deposit, with its own rules (approvals, own_account).
                outcome := 'not_reversible';
                detail := v_target.kind;
            ELSIF v_target.status <> 'succeeded' THEN
                outcome := 'transfer_not_succeeded';
                detail := v_target.status;
            ELSE
                -- Serialise reversals of one transfer: the sum below then sees every
                -- other one that committed (the insert trigger checks it again).
                PERFORM 1 FROM transfers t WHERE t.id = p_targets[k] FOR NO KEY UPDATE;
                SELECT v_target.amount - COALESCE(sum(r.amount), 0) INTO v_left
                  FROM transfers r
                 WHERE r.reverses = p_targets[k] AND r.status NOT IN ('failed', 'canceled');
                v_amounts[k] := COALESCE(p_amounts[k], v_left);
                v_currencies[k] := v_target.currency;
                IF v_left <= 0 OR v_amounts[k] > v_left THEN
                    outcome := 'reversal_exceeds_original';
                    detail := v_left::text;
                ELSE
                    v_src := v_src || v_target.destination_account_id;
                    v_dst := v_dst || v_target.source_account_id;
                END IF;
            END IF;
        ELSIF p_kinds[k] IN ('capture', 'void') THEN                         -- 0009
            -- A command on a hold, for its initiator, its source's owner and operators.
            SELECT t.kind, t.status, t.amount, t.currency, t.initiated_by, t.expires_at,
                   t.source_account_id, t.destination_account_id, s.owner_id AS source_owner
              INTO v_target
              FROM transfers t JOIN accounts s ON s.id = t.source_account_id
             WHERE t.id = p_targets[k];
            IF NOT FOUND OR v_target.kind <> 'hold'
               OR NOT (v_role IN ('operator', 'admin') OR p_user = v_target.initiated_by
                       OR p_user IS NOT DISTINCT FROM v_target.source_owner) THEN
                outcome := 'hold_not_found';
            ELSIF v_target.status NOT IN ('pending', 'held') THEN
                outcome := 'hold_not_active';
                detail := v_target.status;
            ELSIF v_target.expires_at <= now() THEN
                outcome := 'hold_not_active';
                detail := 'expired';
            ELSIF p_amounts[k] > v_target.amount THEN
                outcome := 'capture_exceeds_hold';
                detail := v_target.amount::text;
            ELSE
                v_amounts[k] := CASE WHEN p_kinds[k] = 'void' THEN v_target.amount
                                     ELSE COALESCE(p_amounts[k], v_target.amount) END;
                v_currencies[k] := v_target.currency;
                v_src := v_src || v_target.source_account_id;
                v_dst := v_dst || v_target.destination_account_id;
            END IF;
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
        IF outcome IS NULL AND p_kinds[k] IN ('transfer', 'hold') THEN       -- 0009: hold
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
                outcome := 'destination_unavailable';
            ELSIF v_other.currency <> p_currencies[k] THEN
                outcome := 'currency_mismatch';
                detail := v_other.number || ' ' || v_other.currency;
            ELSE
                v_src := v_src || v_account.id;
                v_dst := v_dst || v_other.id;
            END IF;
        ELSIF outcome IS NULL AND p_kinds[k] IN ('deposit', 'withdrawal') THEN
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
        -- 0009: backpressure. A debit from an account that already has p_max_pending
        -- pending debits is refused; counting stops there (index on pending by source).
        -- Captures and voids are exempt: they only ever release reserved money.
        IF outcome IS NULL AND p_max_pending IS NOT NULL
           AND p_kinds[k] NOT IN ('deposit', 'capture', 'void') THEN
            SELECT count(*) INTO v_pending FROM (
                SELECT 1 FROM transfers t
                 WHERE t.source_account_id = v_src[cardinality(v_src)] AND t.status = 'pending'
                 LIMIT p_max_pending) p;
            IF v_pending >= p_max_pending THEN
                outcome := 'account_backlog';
                detail := v_pending || ' ' || v_src[cardinality(v_src)];
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

    RETURN QUERY
    WITH inserted AS (
        INSERT INTO transfers (id, kind, status, source_account_id, destination_account_id,
                               amount, currency, description, initiated_by, created_at,
                               lane, batch_id, batch_index,
                               reverses, hold_id, execute_at, execute_before, expires_at,
                               metadata)
        SELECT gen_random_uuid(), u.kind, 'pending', u.src, u.dst, u.amount, u.currency,
               u.description, p_user, now(),
               settle_lane(CASE WHEN p_atomic THEN v_src[1] ELSE u.src END),
               p_batch, CASE WHEN p_batch IS NULL THEN NULL ELSE u.ord - 1 END,
               -- 0009: the new columns (a NULL array unnests as NULLs)
               CASE WHEN u.kind = 'reversal' THEN u.target END,
               CASE WHEN u.kind IN ('capture', 'void') THEN u.target END,
               u.execute_at, u.execute_before,
               CASE WHEN u.kind = 'hold' THEN now() + make_interval(secs => u.expires_in) END,
               -- 0010: item k's object (jsonb arrays are 0-based), `{}` when none.
               COALESCE(p_metadata -> (u.ord::integer - 1), '{}')
          FROM unnest(p_kinds, v_src, v_dst, v_amounts, v_currencies, p_descriptions,
                      p_targets, p_execute_at, p_execute_before, p_expires_in)
               WITH ORDINALITY AS u(kind, src, dst, amount, currency, description,
                                    target, execute_at, execute_before, expires_in, ord)
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
               || jsonb_strip_nulls(jsonb_build_object(                     -- 0009
                   'reverses', ins.reverses, 'hold_id', ins.hold_id,
                   'execute_at', ins.execute_at, 'execute_before', ins.execute_before,
                   'expires_at', ins.expires_at))
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
