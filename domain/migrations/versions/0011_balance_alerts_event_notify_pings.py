"""Balance alerts; a notification per user whose events were written; test pings.

- `balance_alerts`: edge-triggered thresholds on an account, evaluated by the engine
  in the transaction that moves the balance. `accounts.balance_alert_count` says
  which accounts have any, so the engine reads it with the account locks it takes
  anyway and looks alerts up only for those accounts: with no alerts defined, the
  engine pays nothing. Creating or deleting an alert changes the count, which takes
  the account's row lock: alert changes and engine batches on one account are
  serialised, so an alert's initial state always matches the balance it starts from.
- `events_notify`: after every INSERT into `events`, one `NOTIFY settle_events` with
  the distinct recipients' user ids (comma-separated, 200 a notification; PostgreSQL
  caps a payload at 8000 bytes). Delivered on commit only. Gateways LISTEN, so a
  long-polled `GET /v1/events?wait=N` sleeps without querying. A statement trigger
  with a transition table: one notification per INSERT statement, whatever writes
  the events.
- `webhook_deliveries.payload`: a delivery that carries its own body instead of an
  event (`event_seq` null): the `ping` of `POST /v1/webhook-endpoints/{id}/test`,
  which is no event of the user's stream.

Revision ID: 0011
Revises: 0008
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)

NOTIFY_EVENTS = """
CREATE FUNCTION settle_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('settle_events', string_agg(recipient, ','))
       FROM (SELECT recipient, (row_number() OVER () - 1) / 200 AS chunk
               FROM (SELECT DISTINCT user_id::text AS recipient FROM inserted) AS d) AS c
      GROUP BY chunk;
    RETURN NULL;
END $$;

CREATE TRIGGER events_notify AFTER INSERT ON events
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION settle_notify_events();
"""


def upgrade() -> None:
    op.add_column(
        "accounts",
        sa.Column("balance_alert_count", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_check_constraint(
        "accounts_balance_alert_count_valid", "accounts", "balance_alert_count >= 0"
    )
    op.create_table(
        "balance_alerts",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("created_by", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("below", sa.BigInteger, nullable=True),
        sa.Column("above", sa.BigInteger, nullable=True),
        sa.Column("rearm_margin", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("below_armed", sa.Boolean, nullable=True),
        sa.Column("above_armed", sa.Boolean, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "below IS NOT NULL OR above IS NOT NULL", name="balance_alerts_threshold_given"
        ),
        sa.CheckConstraint(
            "below IS NULL OR above IS NULL OR below < above", name="balance_alerts_order"
        ),
        sa.CheckConstraint("rearm_margin >= 0", name="balance_alerts_margin_valid"),
        # An armed flag exactly where there is a threshold.
        sa.CheckConstraint(
            "(below IS NULL) = (below_armed IS NULL) AND (above IS NULL) = (above_armed IS NULL)",
            name="balance_alerts_armed_matches",
        ),
    )
    op.create_index(
        "balance_alerts_account_idx", "balance_alerts", ["account_id", "created_at", "id"]
    )
    op.execute(NOTIFY_EVENTS)
    op.alter_column("webhook_deliveries", "event_seq", nullable=True)
    op.add_column("webhook_deliveries", sa.Column("payload", JSONB, nullable=True))
    op.create_check_constraint(
        "webhook_deliveries_event_or_payload",
        "webhook_deliveries",
        "(event_seq IS NULL) <> (payload IS NULL)",
    )


def downgrade() -> None:
    op.execute(
        "DELETE FROM webhook_attempts a USING webhook_deliveries d"
        " WHERE a.delivery_id = d.id AND d.event_seq IS NULL"
    )
    op.execute("DELETE FROM webhook_deliveries WHERE event_seq IS NULL")
    op.drop_constraint("webhook_deliveries_event_or_payload", "webhook_deliveries")
    op.drop_column("webhook_deliveries", "payload")
    op.alter_column("webhook_deliveries", "event_seq", nullable=False)
    op.execute("DROP TRIGGER IF EXISTS events_notify ON events")
    op.execute("DROP FUNCTION IF EXISTS settle_notify_events()")
    op.drop_table("balance_alerts")
    op.drop_constraint("accounts_balance_alert_count_valid", "accounts")
    op.drop_column("accounts", "balance_alert_count")
