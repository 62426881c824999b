"""Separation of duties: four-eyes approvals, and no deposit into one's own account.

- `approvals`: a deposit at or above `SETTLE_APPROVAL_THRESHOLD`, or a limit
  change, parked until a second operator approves or rejects it. The requested
  payload is stored as asked. The database holds the rules that matter: a row is
  decided once (`pending` -> `approved` | `rejected` | `expired`, then frozen),
  never by its requester, its content never changes, and it is never deleted.
- `settle_accept` (from 0004, same signature and outcomes) gains one refusal,
  `own_account`: a deposit into an account the depositor owns. It costs nothing:
  the function already reads the account's owner.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("requested_by", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("request_id", sa.Text, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("decided_by", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("decided_at", TIMESTAMP, nullable=True),
        sa.Column("transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id"), nullable=True),
        sa.CheckConstraint("action IN ('deposit', 'limits_change')", name="approvals_action"),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'expired')", name="approvals_status"
        ),
        sa.CheckConstraint("(status = 'pending') = (decided_at IS NULL)", name="approvals_decided"),
        sa.CheckConstraint(
            "(status IN ('approved', 'rejected')) = (decided_by IS NOT NULL)",
            name="approvals_decider",
        ),
        sa.CheckConstraint(
            "decided_by IS NULL OR decided_by <> requested_by", name="approvals_four_eyes"
        ),
        sa.CheckConstraint(
            "transfer_id IS NULL OR (action = 'deposit' AND status = 'approved')",
            name="approvals_transfer",
        ),
    )
    op.create_index(
        "approvals_request_key",
        "approvals",
        ["requested_by", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index("approvals_created_idx", "approvals", ["created_at", "id"])
    op.execute(DECIDED_ONCE)
    op.execute(ACCEPT_FUNCTION)


DECIDED_ONCE = """
CREATE FUNCTION settle_approval_decided_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'approvals are kept (% refused)', TG_OP
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.status <> 'pending'
       OR (NEW.id, NEW.action, NEW.requested_by, NEW.account_id, NEW.payload,
           NEW.idempotency_key, NEW.fingerprint, NEW.request_id, NEW.created_at,
           NEW.expires_at)
          IS DISTINCT FROM
          (OLD.id, OLD.action, OLD.requested_by, OLD.account_id, OLD.payload,
           OLD.idempotency_key, OLD.fingerprint, OLD.request_id, OLD.created_at,
           OLD.expires_at)
    THEN
        RAISE EXCEPTION 'an approval is decided once, and nothing else of it changes'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER approvals_decided_once
    BEFORE UPDATE OR DELETE ON approvals
    FOR EACH ROW EXECUTE FUNCTION settle_approval_decided_once();
CREATE TRIGGER approvals_no_truncate
    BEFORE TRUNCATE ON approvals
    FOR EACH STATEMENT EXECUTE FUNCTION settle_approval_decided_once();
"""

# settle_accept as in 0004, plus the `own_account` refusal for deposits.
ACCEPT_FUNCTION = """
CREATE OR REPLACE FUNCTION settle_accept(
    p_user uuid, p_key text, p_fingerprint text,
    p_kinds text[], p_accounts uuid[], p_destinations text[],
    p_amounts bigint[], p_currencies text[], p_descriptions text[],
    p_batch uuid, p_atomic boolean, p_request_id text, p_large_threshold bigint
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
        ELSE
            SELECT a.id, a.number, a.currency, a.kind, a.owner_id INTO v_account
              FROM accounts a WHERE a.id = p_accounts[k];
            IF NOT FOUND OR v_account.kind <> 'customer'
               OR (p_kinds[k] <> 'deposit' AND v_account.owner_id IS DISTINCT FROM p_user) THEN
                outcome := 'account_not_found';
            ELSIF p_kinds[k] = 'deposit' AND v_account.owner_id = p_user THEN
                -- Separation of duties: nobody funds an account of their own.
                outcome := 'own_account';
            ELSIF v_account.currency <> p_currencies[k] THEN
                outcome := 'currency_mismatch';
                detail := v_account.number || ' ' || v_account.currency;
            END IF;
        END IF;
        IF outcome IS NULL AND p_kinds[k] = 'transfer' THEN
            SELECT a.id, a.number, a.currency INTO v_other
              FROM accounts a WHERE a.number = p_destinations[k] AND a.kind = 'customer';
            IF NOT FOUND THEN
                outcome := 'destination_not_found';
            ELSIF v_other.id = v_account.id THEN
                outcome := 'same_account';
            ELSIF v_other.currency <> p_currencies[k] THEN
                outcome := 'currency_mismatch';
                detail := v_other.number || ' ' || v_other.currency;
            ELSE
                v_src := v_src || v_account.id;
                v_dst := v_dst || v_other.id;
            END IF;
        ELSIF outcome IS NULL THEN
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
        INSERT INTO transfer_batches (id, atomic, initiated_by, item_count, created_at)
        VALUES (p_batch, p_atomic, p_user, n, now());
    END IF;

    RETURN QUERY
    WITH inserted AS (
        INSERT INTO transfers (id, kind, status, source_account_id, destination_account_id,
                               amount, currency, description, initiated_by, created_at,
                               lane, batch_id, batch_index)
        SELECT gen_random_uuid(), u.kind, 'pending', u.src, u.dst, u.amount, u.currency,
               u.description, p_user, now(),
               settle_lane(CASE WHEN p_atomic THEN v_src[1] ELSE u.src END),
               p_batch, CASE WHEN p_batch IS NULL THEN NULL ELSE u.ord - 1 END
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
    raise NotImplementedError("0007 is not reversible: restore from a backup instead")
