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
    # Two-phase: reserves the amount on the source (`held`) until captured or voided.
    HOLD = "hold"
    # Commands on a hold (`hold_id`), applied by the engine in the hold's lane.
    CAPTURE = "capture"
    VOID = "void"
    # Money back from a transfer's destination to its source (`reverses`).
    REVERSAL = "reversal"


class TransferStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Holds only: reserved, then exactly one of captured, voided or expired.
    HELD = "held"
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"
    # Withdrawn by its initiator or an operator while still pending.
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        """Done being processed: every status but pending. A `held` hold counts (its
        request was applied); it only moves on by a capture, a void or its expiry."""
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
    """Every event Settle publishes (on /v1/events and to webhook endpoints).

    The payload shape of each is in domain/resources.py (`EVENT_MODELS`)."""

    TRANSFER_SUCCEEDED = "transfer.succeeded"
    TRANSFER_FAILED = "transfer.failed"
    TRANSFER_CANCELED = "transfer.canceled"
    HOLD_HELD = "hold.held"
    HOLD_CAPTURED = "hold.captured"
    HOLD_VOIDED = "hold.voided"
    HOLD_EXPIRED = "hold.expired"
    BALANCE_BELOW = "balance.below"
    BALANCE_ABOVE = "balance.above"
    BATCH_COMPLETED = "batch.completed"

    @classmethod
    def for_outcome(cls, status: TransferStatus) -> EventType:
        if status in (
            TransferStatus.HELD,
            TransferStatus.CAPTURED,
            TransferStatus.VOIDED,
            TransferStatus.EXPIRED,
        ):
            return cls(f"hold.{status}")
        return cls(f"transfer.{status}")
