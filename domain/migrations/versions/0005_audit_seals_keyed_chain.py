"""Audit seals in their own INSERT-only table; a fresh, keyed (HMAC) chain.

- `audit_seals(audit_id, chain_seq, prev_hash, hash, key_id)`: one row per sealed
  audit event, written once by the sealer. With the seals out of `audit_events`, the
  app role needs no UPDATE on audit rows at all (see domain/db_roles.py): both tables
  refuse UPDATE, DELETE and TRUNCATE in triggers, and the app role is granted only
  SELECT and INSERT on them.
- The chain is now HMAC-SHA256 under a key that is not in the database
  (SETTLE_AUDIT_KEY, domain/services/audit.py). The old unkeyed seals proved nothing
  against someone able to recompute them, so they are dropped and every existing
  event is chained again, keyed, by the next sealer run (the head restarts at 0).
- The sealer finds unsealed rows as those after the last sealed `(xid, id)`, on a
  plain `(xid, id)` index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS_HASH = "0" * 64


def upgrade() -> None:
    op.execute(REFUSE_CHANGE)
    op.create_table(
        "audit_seals",
        sa.Column("audit_id", sa.BigInteger, sa.ForeignKey("audit_events.id"), primary_key=True),
        sa.Column("chain_seq", sa.BigInteger, nullable=False, unique=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.CheckConstraint("chain_seq > 0", name="audit_seals_seq_positive"),
    )
    op.execute(
        """
        CREATE TRIGGER audit_seals_append_only
            BEFORE UPDATE OR DELETE ON audit_seals
            FOR EACH ROW EXECUTE FUNCTION settle_refuse_change();
        CREATE TRIGGER audit_seals_no_truncate
            BEFORE TRUNCATE ON audit_seals
            FOR EACH STATEMENT EXECUTE FUNCTION settle_refuse_change();

        DROP TRIGGER audit_events_seal_only ON audit_events;
        DROP FUNCTION settle_audit_seal_only();
        DROP TRIGGER audit_events_no_delete ON audit_events;
        CREATE TRIGGER audit_events_append_only
            BEFORE UPDATE OR DELETE ON audit_events
            FOR EACH ROW EXECUTE FUNCTION settle_refuse_change();
        """
    )
    op.drop_constraint("audit_events_sealed_whole", "audit_events")
    op.execute("DROP INDEX audit_events_unsealed_idx")
    for column in ("chain_seq", "prev_hash", "hash"):
        op.drop_column("audit_events", column)
    op.execute("CREATE INDEX audit_events_xid_id_idx ON audit_events (xid, id)")
    op.execute(
        sa.text("UPDATE audit_chain_head SET last_seq = 0, last_hash = :h WHERE id = 1").bindparams(
            h=GENESIS_HASH
        )
    )


REFUSE_CHANGE = """
CREATE FUNCTION settle_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;
"""


def downgrade() -> None:
    raise NotImplementedError("0005 is not reversible: restore from a backup instead")
