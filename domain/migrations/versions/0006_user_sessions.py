"""Sessions: revocable access tokens and disabled users.

- `users.tokens_valid_after`: access tokens issued before this instant are
  invalid (password change, disabling, an admin's revocation). Routes that load
  the user check it; the money routes read the same cutoff from Redis, in the
  pipeline they already make (gateway/ratelimit.py).
- `users.disabled_at`: a disabled user cannot log in or refresh, and every
  token they hold stopped working when they were disabled.
- Stored emails are brought to the one normal form (NFKC, trimmed of Unicode
  whitespace, case-folded; domain/services/users.py `normalise_email`, copied
  here as it is today). Before, they were only trimmed and lower-cased, so an
  address whose case-folded form differs (e.g. with "ß") could no longer be
  found. An address whose normal form already belongs to another user is left
  as it is (and reported).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import logging
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

logger = logging.getLogger("alembic.runtime.migration")

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _normal(email: str) -> str:
    def blank(char: str) -> bool:
        return char.isspace() or unicodedata.category(char) == "Cf"

    text = unicodedata.normalize("NFKC", email)
    start, end = 0, len(text)
    while start < end and blank(text[start]):
        start += 1
    while end > start and blank(text[end - 1]):
        end -= 1
    return unicodedata.normalize("NFKC", text[start:end].casefold())


def upgrade() -> None:
    op.add_column("users", sa.Column("tokens_valid_after", sa.DateTime(timezone=True)))
    op.add_column("users", sa.Column("disabled_at", sa.DateTime(timezone=True)))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, email FROM users")).all()
    taken = {email.lower() for _, email in rows}
    for user_id, email in rows:
        normal = _normal(email)
        if normal == email:
            continue
        if normal in taken:
            logger.warning("user %s: email not normalised, its normal form is taken", user_id)
            continue
        bind.execute(
            sa.text("UPDATE users SET email = :email WHERE id = :id"),
            {"email": normal, "id": user_id},
        )
        taken.discard(email.lower())
        taken.add(normal)


def downgrade() -> None:
    op.drop_column("users", "disabled_at")
    op.drop_column("users", "tokens_valid_after")
