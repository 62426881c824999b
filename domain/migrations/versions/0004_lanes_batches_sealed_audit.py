"""No global serialisation point on the money path; batches; one-statement acceptance.

- Lanes: every transfer belongs to one of 16 lanes (`settle_lane` of its source
  account, or of an atomic batch's first source). A worker drains a lane, so one
  wake-up message covers every account of the lane (see domain/lanes.py).
- `accounts.daily_sent` / `daily_sent_on`: what the account sent on that UTC day,
  kept by the engine under the account lock (the daily limit no longer sums rows).
- Events and audit rows carry the id of the transaction that wrote them (`xid`).
  A reader only returns rows of transactions that can no longer commit
  (`xid < pg_snapshot_xmin(pg_current_snapshot())`), ordered by `(xid, seq)`: a
  cursor over that order never skips a late commit, and nobody has to hold a
  global lock until commit to make it so.
- The audit chain is sealed after commit, by one sealer at a time: rows arrive
  unsealed (`chain_seq`, `prev_hash`, `hash` NULL) and are chained in
  `(xid, id)` order. Content columns never change; the only UPDATE allowed is
  the sealing of an unsealed row.
- `transfer_batches`; transfers gain `batch_id`, `batch_index` and `lane`.
- Idempotency records no longer store the response: a replay is re-rendered from
  the transfer(s) as accepted (see domain/resources.py). A key points at one
  transfer or one batch.
- `settle_accept`: records one money request or a whole batch in ONE statement
  (idempotency claim and replay, account resolution and checks, inserts, audit).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.execute(LANE_FUNCTION)

    op.create_table(
        "transfer_batches",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("atomic", sa.Boolean, nullable=False),
        sa.Column("initiated_by", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("item_count BETWEEN 1 AND 1000", name="transfer_batches_size"),
    )
    op.create_index("transfer_batches_initiator_idx", "transfer_batches", ["initiated_by"])

    op.add_column("transfers", sa.Column("lane", sa.SmallInteger, nullable=True))
    op.execute("UPDATE transfers SET lane = settle_lane(source_account_id)")
    op.alter_column("transfers", "lane", nullable=False)
    op.add_column(
        "transfers",
        sa.Column(
            "batch_id", UUID(as_uuid=True), sa.ForeignKey("transfer_batches.id"), nullable=True
        ),
    )
    op.add_column("transfers", sa.Column("batch_index", sa.Integer, nullable=True))
    op.create_check_constraint(
        "transfers_batch_index", "transfers", "(batch_id IS NULL) = (batch_index IS NULL)"
    )
    op.create_index(
        "transfers_batch_idx",
        "transfers",
        ["batch_id", "batch_index"],
        unique=True,
        postgresql_where=sa.text("batch_id IS NOT NULL"),
    )
    # /metrics counts quarantined transfers on every scrape.
    op.create_index(
        "transfers_quarantined_idx",
        "transfers",
        ["id"],
        postgresql_where=sa.text("failure_code = 'internal_error'"),
    )
    # The engine's hot query: the oldest pending transfers of one lane.
    op.create_index(
        "transfers_pending_by_lane",
        "transfers",
        ["lane", "seq"],
        postgresql_where=sa.text("status = 'pending'"),
    )

    op.add_column(
        "accounts", sa.Column("daily_sent", sa.BigInteger, nullable=False, server_default="0")
    )
    op.add_column("accounts", sa.Column("daily_sent_on", sa.Date, nullable=True))
    op.execute(
        """
        UPDATE accounts a SET daily_sent = s.total, daily_sent_on = s.day
          FROM (SELECT source_account_id, (now() AT TIME ZONE 'UTC')::date AS day,
                       SUM(amount) AS total
                  FROM transfers
                 WHERE status = 'succeeded'
                   AND completed_at >=
                       date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                 GROUP BY source_account_id) s
         WHERE a.id = s.source_account_id
        """
    )

    # Rows written before this revision all committed long ago: xid 1 sorts them first.
    for table in ("events", "audit_events"):
        op.execute(f"ALTER TABLE {table} ADD COLUMN xid xid8 NOT NULL DEFAULT '1'")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN xid SET DEFAULT pg_current_xact_id()")
    op.drop_index("events_user_seq_idx", table_name="events")
    op.execute("CREATE INDEX events_user_xid_seq_idx ON events (user_id, xid, seq)")

    for column in ("chain_seq", "prev_hash", "hash"):
        op.alter_column("audit_events", column, nullable=True)
    op.create_check_constraint(
        "audit_events_sealed_whole",
        "audit_events",
        "(chain_seq IS NULL) = (hash IS NULL) AND (hash IS NULL) = (prev_hash IS NULL)",
    )
    op.execute(
        "CREATE INDEX audit_events_unsealed_idx ON audit_events (xid, id) WHERE chain_seq IS NULL"
    )
    op.execute(AUDIT_SEAL_ONLY)

    op.drop_column("idempotency_keys", "response_body")
    op.drop_column("idempotency_keys", "response_status")
    op.alter_column("idempotency_keys", "transfer_id", nullable=True)
    op.add_column(
        "idempotency_keys",
        sa.Column(
            "batch_id", UUID(as_uuid=True), sa.ForeignKey("transfer_batches.id"), nullable=True
        ),
    )
    op.create_check_constraint(
        "idempotency_keys_one_target",
        "idempotency_keys",
        "(transfer_id IS NULL) <> (batch_id IS NULL)",
    )
    op.execute(ACCEPT_FUNCTION)


# Lanes: the low 4 bits of the account id (uuid4: random). domain/lanes.py computes
# the same in Python; a test pins that they agree.
LANE_FUNCTION = """
CREATE FUNCTION settle_lane(account uuid) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (('x' || right(account::text, 4))::bit(16)::int % 16)::smallint $$;
"""

AUDIT_SEAL_ONLY = """
DROP TRIGGER audit_events_append_only ON audit_events;
CREATE TRIGGER audit_events_no_delete
    BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION settle_refuse_ledger_change();

-- The one UPDATE an audit row may see: sealing it, once, without touching its content.
CREATE FUNCTION settle_audit_seal_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.chain_seq IS NOT NULL
       OR NEW.chain_seq IS NULL
       OR (NEW.id, NEW.xid, NEW.occurred_at, NEW.event_type, NEW.actor_id, NEW.subject_type,
           NEW.subject_id, NEW.request_id, NEW.data)
          IS DISTINCT FROM
          (OLD.id, OLD.xid, OLD.occurred_at, OLD.event_type, OLD.actor_id, OLD.subject_type,
           OLD.subject_id, OLD.request_id, OLD.data)
    THEN
        RAISE EXCEPTION 'audit_events is append-only (only sealing an unsealed row is allowed)'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER audit_events_seal_only
    BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION settle_audit_seal_only();
"""

# One money request (one item) or a batch (up to 1,000 items), in one statement.
#
# Outcomes, one row each unless said otherwise:
#   in_flight         another request with this key is being processed (409)
#   key_reused        the key was used with a different request (422)
#   unknown_user      the token's user no longer exists (401)
#   replayed          one row per transfer recorded under this key, in item order
#   accepted          one row per new transfer, in item order
#   <error code>      one row per refused item (item = its 1-based index, detail = facts
#                     for the message); nothing is written when any item is refused.
# The caller turns codes into domain errors and messages (domain/services/acceptance.py).
ACCEPT_FUNCTION = """
CREATE FUNCTION settle_accept(
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
    raise NotImplementedError("0004 is not reversible: restore from a backup instead")
