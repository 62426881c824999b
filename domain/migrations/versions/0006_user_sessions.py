"""Sessions: revocable access tokens and disabled users.

- `users.tokens_valid_after`: access tokens issued before this instant are
  invalid (password change, disabling, an admin's revocation). Routes that load
  the user check it; the money routes read the same cutoff from Redis, in the
  pipeline they already make (gateway/ratelimit.py).
- `users.disabled_at`: a disabled user cannot log in or refresh, and every
  token they hold stopped working when they were disabled.

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("tokens_valid_after", sa.DateTime(timezone=True)))
    op.add_column("users", sa.Column("disabled_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("users", "disabled_at")
    op.drop_column("users", "tokens_valid_after")
