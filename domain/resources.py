"""The resources Settle shows the outside world, each defined once.

The same model renders a GET response, the body of an idempotent replay, and the
payload of an event (polled from /v1/events or pushed as a webhook), so the three
can never drift apart. Timestamps serialise one way everywhere: RFC 3339 in UTC
with a `Z` suffix.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    model_validator,
)

from domain.enums import (
    AccountStatus,
    ApprovalAction,
    ApprovalStatus,
    EventType,
    TransferKind,
    TransferStatus,
)


def _in_utc(moment: datetime) -> datetime:
    # Whatever offset the driver or the session's TimeZone gave, the same instant in
    # UTC, which pydantic writes with a `Z`: one spelling in every response and event.
    return moment.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_in_utc)]
"""Every timestamp the API shows: RFC 3339, UTC, `Z` suffix (a naive datetime is a bug)."""


class Resource(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _orm_metadata(cls, data: Any) -> Any:
        """ORM rows keep `metadata` as `metadata_` (SQLAlchemy reserves the plain name):
        read it from there. (A validation alias would split the OpenAPI schemas into
        input and output versions.)"""
        if "metadata" not in cls.model_fields or not hasattr(data, "metadata_"):
            return data
        fields = {name: getattr(data, name) for name in cls.model_fields if hasattr(data, name)}
        return {**fields, "metadata": data.metadata_}


def metadata_field() -> Any:
    return Field(
        default_factory=dict,
        description="Your own key/value strings, as sent (at most 20 keys of at most 40 "
        "characters, values at most 500 characters)",
    )


class AccountResource(Resource):
    id: uuid.UUID
    number: str = Field(description="Non-sequential account number; the last digit is a Luhn check")
    currency: str
    name: str | None
    balance: int = Field(description="Minor units (cents)")
    available_balance: int = Field(
        description="balance less active holds: what a debit or a new hold may use"
    )
    status: AccountStatus = Field(description="active, frozen (by an operator), or closed (final)")
    created_at: UtcDatetime
    metadata: dict[str, str] = metadata_field()


class EntryResource(Resource):
    id: int
    transfer_id: uuid.UUID
    account_id: uuid.UUID
    amount: int = Field(description="Signed minor units: negative leaves the account")
    currency: str
    balance_before: int
    balance_after: int
    sequence: int = Field(description="Per-account, starts at 1, increases by exactly one")
    created_at: UtcDatetime
    kind: TransferKind | None = Field(default=None, description="The kind of its transfer")
    description: str | None = Field(default=None, description="Its transfer's description")
    counterparty_account_number: str | None = Field(
        default=None,
        description="The other account of its transfer. A settlement account (the other side "
        "of deposits and withdrawals) is only named to operators",
    )


class TransferResource(Resource):
    id: uuid.UUID
    kind: TransferKind
    status: TransferStatus
    failure_code: str | None = Field(description="Set when status is failed")
    source_account_id: uuid.UUID
    destination_account_id: uuid.UUID
    amount: int = Field(description="Minor units (cents)")
    currency: str
    description: str | None
    created_at: UtcDatetime
    completed_at: UtcDatetime | None
    reverses: uuid.UUID | None = Field(
        default=None, description="A reversal: the transfer it moves money back for"
    )
    hold_id: uuid.UUID | None = Field(default=None, description="A capture or void: its hold")
    execute_at: UtcDatetime | None = Field(default=None, description="Not applied before this")
    execute_before: UtcDatetime | None = Field(
        default=None, description="Not applied by then: failed with `expired`"
    )
    expires_at: UtcDatetime | None = Field(
        default=None, description="A hold: expires (releasing the amount) unless captured first"
    )
    captured_amount: int | None = Field(
        default=None, description="A captured hold: the amount captured (the rest was released)"
    )
    metadata: dict[str, str] = metadata_field()

    @classmethod
    def as_accepted(cls, transfer: Any) -> TransferResource:
        """The transfer as its 202 showed it: pending, whatever happened since.

        An idempotent replay answers with exactly this, so it is derived from the
        row rather than stored beside it.
        """
        return cls.model_validate(transfer).model_copy(
            update={"status": TransferStatus.PENDING, "failure_code": None, "completed_at": None}
        )


class BatchStatus(StrEnum):
    PENDING = "pending"  # some transfers are still pending
    COMPLETED = "completed"  # every transfer is succeeded or failed


class BatchResource(Resource):
    id: uuid.UUID
    atomic: bool = Field(description="All transfers succeed, or none does")
    status: BatchStatus
    transfers: list[TransferResource] = Field(description="In the order they were submitted")
    metadata: dict[str, str] = metadata_field()

    @classmethod
    def of(
        cls,
        batch_id: uuid.UUID,
        atomic: bool,
        transfers: list[TransferResource],
        metadata: dict[str, str] | None = None,
    ) -> BatchResource:
        done = all(t.status.is_terminal for t in transfers)
        return cls(
            id=batch_id,
            atomic=atomic,
            status=BatchStatus.COMPLETED if done else BatchStatus.PENDING,
            transfers=transfers,
            metadata=metadata or {},
        )


class BalanceAlertResource(Resource):
    """An edge-triggered balance alert on one account (see domain/services/alerts.py)."""

    id: uuid.UUID
    account_id: uuid.UUID
    below: int | None = Field(
        description="Fires `balance.below` when the balance drops under this (minor units)"
    )
    above: int | None = Field(
        description="Fires `balance.above` when the balance rises over this (minor units)"
    )
    rearm_margin: int = Field(
        description="After firing, the balance must come back past the threshold by at least "
        "this much before the alert can fire again"
    )
    below_armed: bool | None = Field(
        description="true: the next drop under `below` fires; false: fired, waiting to re-arm; "
        "null: no `below` threshold"
    )
    above_armed: bool | None = Field(
        description="true: the next rise over `above` fires; false: fired, waiting to re-arm; "
        "null: no `above` threshold"
    )
    created_by: uuid.UUID = Field(description="The user who set it; its events go to them")
    created_at: UtcDatetime


class BalanceResource(Resource):
    """An account's balance at an instant, from its ledger entries."""

    balance: int = Field(
        description="Minor units: the balance after the last entry at or "
        "before `as_of` (0 before the first)"
    )
    as_of: UtcDatetime = Field(description="The instant asked for (`at`)")
    sequence: int = Field(description="The sequence of that last entry; 0 before the first")


class StatementResource(Resource):
    """An account's entries over `(from, to]`, between its balances at both instants."""

    account: AccountResource
    from_: UtcDatetime = Field(alias="from", description="Exclusive: entries after this instant")
    to: UtcDatetime = Field(description="Inclusive: entries up to and including this instant")
    opening_balance: int = Field(description="The balance at `from` (balance?at=from)")
    closing_balance: int = Field(
        description="The balance at `to` (balance?at=to): opening_balance plus every entry"
    )
    entries: list[EntryResource] = Field(description="In sequence order, oldest first")

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class TransferEventData(Resource):
    transfer: TransferResource
    entries: list[EntryResource] = Field(
        description="The transfer's ledger entries that the event's recipient may see"
    )


class BalanceEventData(Resource):
    """What crossed which threshold: the ledger entry that took the balance across it."""

    alert_id: uuid.UUID
    account_id: uuid.UUID
    currency: str
    threshold: int = Field(description="The alert's `below` or `above` that was crossed")
    rearm_margin: int
    balance_before: int = Field(description="The balance before the crossing entry")
    balance: int = Field(description="The balance right after the crossing entry")
    transfer_id: uuid.UUID = Field(description="The transfer whose entry crossed the threshold")
    sequence: int = Field(description="That entry's per-account sequence")


class BatchEventData(Resource):
    """A batch whose last transfer reached a terminal state; the transfers themselves
    are at `GET /v1/transfer-batches/{id}` (each also had its own event)."""

    id: uuid.UUID
    atomic: bool
    item_count: int = Field(description="How many transfers the batch holds")
    succeeded: int = Field(description="How many of them succeeded")
    failed: int = Field(description="How many failed (an atomic batch's all, or none)")
    canceled: int = Field(description="How many were canceled while pending")
    metadata: dict[str, str] = metadata_field()
    created_at: UtcDatetime
    completed_at: UtcDatetime = Field(description="When its last transfer finished")


class PingData(Resource):
    endpoint_id: uuid.UUID = Field(description="The endpoint this test was sent to")


_EVENT_ID = Field(description="Unique; webhook receivers deduplicate on it (webhook-id)")


class TransferEvent(Resource):
    """A transfer reached a terminal state (or was canceled while pending)."""

    id: str = _EVENT_ID
    type: Literal[
        EventType.TRANSFER_SUCCEEDED, EventType.TRANSFER_FAILED, EventType.TRANSFER_CANCELED
    ]
    created_at: UtcDatetime
    data: TransferEventData


class HoldEvent(Resource):
    """A hold (a transfer of kind `hold`) was placed, captured, voided or expired."""

    id: str = _EVENT_ID
    type: Literal[
        EventType.HOLD_HELD, EventType.HOLD_CAPTURED, EventType.HOLD_VOIDED, EventType.HOLD_EXPIRED
    ]
    created_at: UtcDatetime
    data: TransferEventData


class BalanceEvent(Resource):
    """A balance alert fired: the balance crossed its threshold (once per crossing)."""

    id: str = _EVENT_ID
    type: Literal[EventType.BALANCE_BELOW, EventType.BALANCE_ABOVE]
    created_at: UtcDatetime
    data: BalanceEventData


class BatchEvent(Resource):
    """Every transfer of a batch is terminal (once per batch, to its initiator)."""

    id: str = _EVENT_ID
    type: Literal[EventType.BATCH_COMPLETED]
    created_at: UtcDatetime
    data: BatchEventData


class PingEvent(Resource):
    """Sent by `POST /v1/webhook-endpoints/{id}/test` only; never on /v1/events."""

    id: str = _EVENT_ID
    type: Literal["ping"]
    created_at: UtcDatetime
    data: PingData


AnyEvent = Annotated[
    TransferEvent | HoldEvent | BalanceEvent | BatchEvent, Field(discriminator="type")
]


class EventResource(RootModel[AnyEvent]):
    """One event, as /v1/events lists it and as webhooks push it; `type` says its shape."""

    model_config = ConfigDict(frozen=True)


# The payload model of each event type (the OpenAPI `webhooks` section is built from it).
EVENT_MODELS: dict[EventType, type[Resource]] = {
    event_type: model
    for model in (TransferEvent, HoldEvent, BalanceEvent, BatchEvent)
    for event_type in get_args(model.model_fields["type"].annotation)
}


class ApprovalResource(Resource):
    """A request parked for a second operator (four eyes): a large deposit or a limit change."""

    id: uuid.UUID
    action: ApprovalAction
    requested_by: uuid.UUID
    status: ApprovalStatus = Field(
        description="pending, then approved or rejected by another operator, or expired"
    )
    account_id: uuid.UUID
    request: dict[str, Any] = Field(
        description="What was asked: the deposit body, or the limits change, as sent"
    )
    created_at: UtcDatetime
    expires_at: UtcDatetime = Field(description="Undecided by then, it expires")
    decided_by: uuid.UUID | None
    decided_at: UtcDatetime | None
    transfer_id: uuid.UUID | None = Field(description="The deposit an approval created")

    @classmethod
    def of(cls, approval: Any, *, now: datetime) -> ApprovalResource:
        status = ApprovalStatus(approval.status)
        if status is ApprovalStatus.PENDING and approval.expires_at <= now:
            status = ApprovalStatus.EXPIRED
        return cls(
            id=approval.id,
            action=approval.action,
            requested_by=approval.requested_by,
            status=status,
            account_id=approval.account_id,
            request=approval.payload,
            created_at=approval.created_at,
            expires_at=approval.expires_at,
            decided_by=approval.decided_by,
            decided_at=approval.decided_at,
            transfer_id=approval.transfer_id,
        )
