"""`settle_accept` no longer tells a payer another customer's account currency.

A transfer to someone else's account in another currency was refused with the
destination's currency in `detail` ("account 123 holds EUR, not USD"). Now:
- the destination is the caller's own account: `currency_mismatch`, with the facts, as
  before (the caller may see them anyway);
- it is someone else's: `destination_unavailable`, with no detail.

The change is three lines of the function: the destination lookup also reads
`owner_id`, and its currency check branches on it. It is applied as a text
replacement to the function *as currently defined* (pg_get_functiondef), so it
composes with other migrations that replace `settle_accept` for other reasons, in
either order; it fails loudly if the lines it replaces are not there.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = [
    (
        "SELECT a.id, a.number, a.currency INTO v_other",
        "SELECT a.id, a.number, a.currency, a.owner_id INTO v_other",
    ),
    (
        """            ELSIF v_other.currency <> p_currencies[k] THEN
                outcome := 'currency_mismatch';
                detail := v_other.number || ' ' || v_other.currency;""",
        """            ELSIF v_other.currency <> p_currencies[k]
                  AND v_other.owner_id IS DISTINCT FROM p_user THEN
                outcome := 'destination_unavailable';
            ELSIF v_other.currency <> p_currencies[k] THEN
                outcome := 'currency_mismatch';
                detail := v_other.number || ' ' || v_other.currency;""",
    ),
]


def _rewrite(replacements: list[tuple[str, str]]) -> None:
    bind = op.get_bind()
    definition = bind.execute(
        text("SELECT pg_get_functiondef('settle_accept'::regproc)")
    ).scalar_one()
    for old, new in replacements:
        if definition.count(old) != 1:
            raise RuntimeError(
                f"settle_accept does not contain exactly one {old!r}: another migration "
                "changed these lines; merge this change into it by hand"
            )
        definition = definition.replace(old, new)
    op.execute(definition)


def upgrade() -> None:
    _rewrite(BEFORE)


def downgrade() -> None:
    _rewrite([(new, old) for old, new in reversed(BEFORE)])
