"""Money movement, complete: holds, reversals, cancel, deadlines, scheduling, backpressure.

Schema:
- `transfers.kind` gains `hold` (two-phase: reserve, then capture or void), `capture`
  and `void` (commands on a hold, applied by the engine in the hold's lane, named by
  `hold_id`), and `reversal` (money back from the destination, named by `reverses`).
- `transfers.status` gains `held`, `captured`, `voided`, `expired` (holds only) and
  `canceled` (any pending transfer, by its initiator or an operator).
- `execute_at` (not applied before), `execute_before` (failed `expired` if not applied
  by then), `expires_at` (a hold's expiry), `captured_amount` (a captured hold).
- `accounts.held`: the sum of the account's active holds, kept by the engine under the
  account lock; `available_balance` = `balance - held`.

What the database enforces, whatever the code does:
- a customer account's available balance never goes below minus its overdraft limit
  (`accounts_available_floor`), and `held` never below zero;
- a transfer's status only moves forward: from `pending` once, and for a hold from
  `held` once more to `captured`, `voided` or `expired`; a terminal status never
  changes again (trigger `transfers_status_forward`). So a hold has at most one
  terminal outcome, and a failed, voided or expired hold is never captured;
- at most one capture or void of a hold succeeds (`transfers_one_hold_outcome`), and a
  capture is never above its hold's amount (`transfers_capture_within_hold`);
- the reversals of a transfer that are not failed or canceled never add up to more than
  it: checked on every insert under a lock on the original, so concurrent requests
  are serialised (`transfers_reversal_within_original`).

`settle_accept` is restated whole from its latest version (0007 as patched by 0008):
see ACCEPT_FUNCTION below for exactly what changed.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)

KINDS = "'transfer', 'deposit', 'withdrawal', 'hold', 'capture', 'void', 'reversal'"
STATUSES = "'pending', 'succeeded', 'failed', 'held', 'captured', 'voided', 'expired', 'canceled'"


def upgrade() -> None:
    op.add_column("accounts", sa.Column("held", sa.BigInteger, nullable=False, server_default="0"))
    op.create_check_constraint("accounts_held_nonnegative", "accounts", "held >= 0")
    op.create_check_constraint(
        "accounts_available_floor",
        "accounts",
        "kind = 'system' OR balance - held >= -overdraft_limit",
    )

    for column in ("reverses", "hold_id"):
        op.add_column(
            "transfers",
            sa.Column(column, UUID(as_uuid=True), sa.ForeignKey("transfers.id"), nullable=True),
        )
    for column in ("execute_at", "execute_before", "expires_at"):
        op.add_column("transfers", sa.Column(column, TIMESTAMP, nullable=True))
    op.add_column("transfers", sa.Column("captured_amount", sa.BigInteger, nullable=True))

    op.drop_constraint("transfers_kind_valid", "transfers", type_="check")
    op.create_check_constraint("transfers_kind_valid", "transfers", f"kind IN ({KINDS})")
    op.drop_constraint("transfers_status_valid", "transfers", type_="check")
    op.create_check_constraint("transfers_status_valid", "transfers", f"status IN ({STATUSES})")
    checks = {
        "transfers_hold_statuses": "kind = 'hold' OR status NOT IN "
        "('held', 'captured', 'voided', 'expired')",
        "transfers_reverses": "(kind = 'reversal') = (reverses IS NOT NULL)",
        "transfers_hold_command": "(kind IN ('capture', 'void')) = (hold_id IS NOT NULL)",
        "transfers_hold_expiry": "(kind = 'hold') = (expires_at IS NOT NULL)",
        "transfers_captured_amount": "(status = 'captured') = (captured_amount IS NOT NULL)"
        " AND (captured_amount IS NULL OR captured_amount BETWEEN 1 AND amount)",
        "transfers_schedule": "execute_at IS NULL OR execute_before IS NULL"
        " OR execute_before > execute_at",
    }
    for name, condition in checks.items():
        op.create_check_constraint(name, "transfers", condition)

    op.create_index(
        "transfers_one_hold_outcome",
        "transfers",
        ["hold_id"],
        unique=True,
        postgresql_where=sa.text("hold_id IS NOT NULL AND status = 'succeeded'"),
    )
    op.create_index(
        "transfers_hold_commands",
        "transfers",
        ["hold_id"],
        postgresql_where=sa.text("hold_id IS NOT NULL"),
    )
    op.create_index(
        "transfers_reversals",
        "transfers",
        ["reverses"],
        postgresql_where=sa.text("reverses IS NOT NULL"),
    )
    # The sweeper's expiry query: active holds by expiry time.
    op.create_index(
        "transfers_held_by_expiry",
        "transfers",
        ["expires_at"],
        postgresql_where=sa.text("status = 'held'"),
    )
    # The sweeper's query for scheduled transfers that have become due.
    op.create_index(
        "transfers_scheduled",
        "transfers",
        ["execute_at"],
        postgresql_where=sa.text("status = 'pending' AND execute_at IS NOT NULL"),
    )
    op.execute(GUARDS)
    # The signature grows, so the old function is dropped, not replaced (an overload
    # would leave the old 13-argument version callable).
    op.execute(
        "DROP FUNCTION settle_accept(uuid, text, text, text[], uuid[], text[], bigint[], text[],"
        " text[], uuid, boolean, text, bigint)"
    )
    op.execute(ACCEPT_FUNCTION)


GUARDS = """
-- A status moves forward only. The engine's ordinary update (pending -> a result)
-- does not even call the function (WHEN clause): the hot path pays nothing for it.
CREATE FUNCTION settle_status_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'held' AND NEW.status IN ('captured', 'voided', 'expired') THEN
        IF NEW.status = 'captured' AND NEW.captured_amount > OLD.amount THEN
            RAISE EXCEPTION 'hold %: capture % above the held amount %',
                OLD.id, NEW.captured_amount, OLD.amount USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'transfer % cannot go from % to %', OLD.id, OLD.status, NEW.status
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER transfers_status_forward
    BEFORE UPDATE ON transfers
    FOR EACH ROW
    WHEN (OLD.status <> 'pending' OR NEW.status IN ('captured', 'voided', 'expired'))
    EXECUTE FUNCTION settle_status_forward();

-- A capture command never asks for more than its hold.
CREATE FUNCTION settle_capture_within_hold() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_hold record;
BEGIN
    SELECT kind, amount, source_account_id, destination_account_id, currency INTO v_hold
      FROM transfers WHERE id = NEW.hold_id;
    IF v_hold.kind IS DISTINCT FROM 'hold'
       OR NEW.source_account_id <> v_hold.source_account_id
       OR NEW.destination_account_id <> v_hold.destination_account_id
       OR NEW.currency <> v_hold.currency
       OR NEW.amount > v_hold.amount THEN
        RAISE EXCEPTION 'a % of hold % must name its accounts and stay within %',
            NEW.kind, NEW.hold_id, v_hold.amount USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER transfers_capture_within_hold
    BEFORE INSERT ON transfers
    FOR EACH ROW WHEN (NEW.hold_id IS NOT NULL)
    EXECUTE FUNCTION settle_capture_within_hold();

-- The reversals of a transfer never add up to more than it. The original is locked
-- first, so two concurrent reversals of it are checked one after the other, each
-- seeing the other once committed (every statement of a function reads afresh).
CREATE FUNCTION settle_reversal_within_original() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_original record;
    v_reversed bigint;
BEGIN
    SELECT kind, status, amount, currency, source_account_id, destination_account_id
      INTO v_original FROM transfers WHERE id = NEW.reverses FOR NO KEY UPDATE;
    IF v_original.status IS DISTINCT FROM 'succeeded'
       OR v_original.kind NOT IN ('transfer', 'deposit')
       OR NEW.source_account_id <> v_original.destination_account_id
       OR NEW.destination_account_id <> v_original.source_account_id
       OR NEW.currency <> v_original.currency THEN
        RAISE EXCEPTION 'transfer % cannot be reversed this way', NEW.reverses
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT COALESCE(sum(amount), 0) INTO v_reversed FROM transfers
     WHERE reverses = NEW.reverses AND status NOT IN ('failed', 'canceled');
    IF v_reversed + NEW.amount > v_original.amount THEN
        RAISE EXCEPTION 'reversals of % would add up to % of %', NEW.reverses,
            v_reversed + NEW.amount, v_original.amount USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER transfers_reversal_within_original
    BEFORE INSERT ON transfers
    FOR EACH ROW WHEN (NEW.reverses IS NOT NULL)
    EXECUTE FUNCTION settle_reversal_within_original();
"""

# settle_accept, restated whole from 0007 as patched by 0008. What changed, and only that:
#   * five parameters at the end, all DEFAULT NULL (a call with the first thirteen
#     behaves as before): p_targets (per item: the transfer a reversal reverses, or the
#     hold a capture/void acts on), p_execute_at, p_execute_before, p_expires_in (a
#     hold's lifetime in seconds) and p_max_pending (backpressure; NULL: off);
#   * kinds `hold` (resolved like `transfer`), `reversal`, `capture`, `void` (resolved
#     from the transfer they name: accounts, currency and a missing amount come from it);
#   * refusals: transfer_not_found, reversal_forbidden, own_account, not_reversible,
#     transfer_not_succeeded, reversal_exceeds_original (detail: what is left),
#     hold_not_found, hold_not_active (detail: the hold's status), capture_exceeds_hold
#     (detail: the held amount), account_backlog (detail: "<pending> <account id>");
#   * the insert writes the new columns; amounts and currencies come from
#     v_amounts / v_currencies (filled in for the new kinds).
# Marked "-- 0009" below.
ACCEPT_FUNCTION = """
CREATE FUNCTION settle_accept(
    p_user uuid, p_key text, p_fingerprint text,
    p_kinds text[], p_accounts uuid[], p_destinations text[],
    p_amounts bigint[], p_currencies text[], p_descriptions text[],
    p_batch uuid, p_atomic boolean, p_request_id text, p_large_threshold bigint,
    p_targets uuid[] DEFAULT NULL, p_execute_at timestamptz[] DEFAULT NULL,      -- 0009
    p_execute_before timestamptz[] DEFAULT NULL, p_expires_in integer[] DEFAULT NULL,
    p_max_pending integer DEFAULT NULL
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
        IF outcome IS NULL AND p_kinds[k] IN ('transfer', 'hold') THEN       -- 0009: hold
            SELECT a.id, a.number, a.currency, a.owner_id INTO v_other
              FROM accounts a WHERE a.number = p_destinations[k] AND a.kind = 'customer';
            IF NOT FOUND THEN
                outcome := 'destination_not_found';
            ELSIF v_other.id = v_account.id THEN
                outcome := 'same_account';
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
        INSERT INTO transfer_batches (id, atomic, initiated_by, item_count, created_at)
        VALUES (p_batch, p_atomic, p_user, n, now());
    END IF;

    RETURN QUERY
    WITH inserted AS (
        INSERT INTO transfers (id, kind, status, source_account_id, destination_account_id,
                               amount, currency, description, initiated_by, created_at,
                               lane, batch_id, batch_index,
                               reverses, hold_id, execute_at, execute_before, expires_at)
        SELECT gen_random_uuid(), u.kind, 'pending', u.src, u.dst, u.amount, u.currency,
               u.description, p_user, now(),
               settle_lane(CASE WHEN p_atomic THEN v_src[1] ELSE u.src END),
               p_batch, CASE WHEN p_batch IS NULL THEN NULL ELSE u.ord - 1 END,
               -- 0009: the new columns (a NULL array unnests as NULLs)
               CASE WHEN u.kind = 'reversal' THEN u.target END,
               CASE WHEN u.kind IN ('capture', 'void') THEN u.target END,
               u.execute_at, u.execute_before,
               CASE WHEN u.kind = 'hold' THEN now() + make_interval(secs => u.expires_in) END
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
    raise NotImplementedError("0009 is not reversible: restore from a backup instead")
