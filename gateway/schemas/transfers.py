"""Request bodies of the money routes. The transfer resource itself is domain.resources."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import AwareDatetime, Field, StrictBool, StrictInt, StrictStr

from gateway.schemas.common import Metadata, StrictRequest

Amount = Field(
    gt=0,
    description="Integer minor units (cents): 12.50 USD is 1250. Floats and strings are rejected",
    examples=[1250],
)
Currency = Field(pattern=r"^[A-Z]{3}$", examples=["USD"])
Description = Field(default=None, max_length=500)
ExecuteAt = Field(
    default=None,
    description="RFC 3339 with an offset: the transfer is not applied before this moment "
    "(picked up by the sweeper within a few seconds of it)",
    examples=["2026-12-01T09:00:00Z"],
)
ExecuteBefore = Field(
    default=None,
    description="RFC 3339 with an offset: not applied by then, the transfer fails with "
    "`expired`. Must be later than execute_at",
    examples=["2026-12-01T17:00:00Z"],
)


class Scheduled(StrictRequest):
    """`execute_at` / `execute_before`, accepted by every money request."""

    execute_at: AwareDatetime | None = ExecuteAt
    execute_before: AwareDatetime | None = ExecuteBefore

    def schedule(self) -> dict[str, Any]:
        return {"execute_at": self.execute_at, "execute_before": self.execute_before}


class TransferCreate(Scheduled):
    source_account_id: uuid.UUID
    destination_account_number: StrictStr = Field(pattern=r"^[0-9]{6,32}$")
    amount: StrictInt = Amount
    currency: StrictStr = Currency
    description: StrictStr | None = Description
    metadata: Metadata = Field(default_factory=dict)

    def item_fields(self) -> dict[str, Any]:
        return {
            "account_id": self.source_account_id,
            "destination_account_number": self.destination_account_number,
            "amount": self.amount,
            "currency": self.currency,
            "description": self.description,
            **self.schedule(),
            "metadata": self.metadata,
        }


class AccountMoneyCreate(Scheduled):
    """A deposit into, or a withdrawal from, one account."""

    account_id: uuid.UUID
    amount: StrictInt = Amount
    currency: StrictStr = Currency
    description: StrictStr | None = Description
    metadata: Metadata = Field(default_factory=dict)

    def item_fields(self) -> dict[str, Any]:
        return self.model_dump()


class HoldCreate(TransferCreate):
    """Reserve money on your account for a destination: captured later (all or part),
    voided, or expired after `expires_in_seconds`."""

    expires_in_seconds: StrictInt = Field(
        ge=1,
        le=7 * 24 * 3600,
        description="Seconds until the hold expires (releasing the money) unless captured; "
        "at most 7 days",
        examples=[3600],
    )

    def item_fields(self) -> dict[str, Any]:
        return {**super().item_fields(), "expires_in_seconds": self.expires_in_seconds}


class HoldCapture(StrictRequest):
    amount: StrictInt | None = Field(
        default=None,
        gt=0,
        description="At most the held amount; omitted: all of it. The rest is released",
        examples=[800],
    )


class HoldVoid(StrictRequest):
    """No fields: the body may be empty or `{}`."""


class ReversalCreate(StrictRequest):
    amount: StrictInt | None = Field(
        default=None,
        gt=0,
        description="Omitted: everything not reversed yet. The reversals of a transfer never "
        "add up to more than it",
        examples=[500],
    )
    reason: StrictStr | None = Field(
        default=None, max_length=500, description="Kept as the reversal's description"
    )


class TransferBatchCreate(StrictRequest):
    transfers: list[TransferCreate] = Field(min_length=1, max_length=1000)
    atomic: StrictBool = Field(
        default=False, description="true: all transfers succeed or none does (one transaction)"
    )
    metadata: Metadata = Field(default_factory=dict)
