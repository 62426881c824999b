"""Names for roles, states and kinds, so no rule compares against a bare string.

Each is a `StrEnum`: its members are the exact strings stored in PostgreSQL (where
check constraints list the same values) and sent over the API.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    CUSTOMER = "customer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def sees_everything(self) -> bool:
        """Operators and admins may read every account, transfer and entry."""
        return self in (Role.OPERATOR, Role.ADMIN)


class AccountKind(StrEnum):
    CUSTOMER = "customer"
    # One settlement account per currency: the other side of deposits and withdrawals.
    SYSTEM = "system"


class AccountStatus(StrEnum):
    ACTIVE = "active"
    FROZEN = "frozen"
    # Final: zero balance, nothing pending or held when closed; money neither enters nor
    # leaves it again (the database refuses a closed account with a non-zero balance).
    CLOSED = "closed"


class TransferKind(StrEnum):
    TRANSFER = "transfer"
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"


class TransferStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self is not TransferStatus.PENDING


class ApprovalAction(StrEnum):
    """What a four-eyes approval would do once a second operator approves it."""

    DEPOSIT = "deposit"
    LIMITS_CHANGE = "limits_change"


class ApprovalStatus(StrEnum):
    """`pending` until decided once: approved or rejected by a second operator, or
    expired (left undecided past its `expires_at`)."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class EventType(StrEnum):
    TRANSFER_SUCCEEDED = "transfer.succeeded"
    TRANSFER_FAILED = "transfer.failed"

    @classmethod
    def for_outcome(cls, status: TransferStatus) -> EventType:
        return cls(f"transfer.{status}")
