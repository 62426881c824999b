"""Per-user quotas: the lock that makes "count, then insert if under the cap" atomic."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.models import User


def lock_user_quotas(session: Session, user_id: uuid.UUID) -> None:
    """Serialises the quota checks of one user until the transaction ends.

    A row lock on the user: concurrent creators for the same user queue here, and each
    counts (read committed) the rows the one before it committed. FOR NO KEY UPDATE,
    not FOR UPDATE, so it never blocks the FOR KEY SHARE that foreign keys take when
    other rows (transfers, accounts) referencing the user are inserted meanwhile.
    """
    # key_share=True renders FOR NO KEY UPDATE.
    session.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))
