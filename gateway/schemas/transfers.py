"""Request bodies of the money routes. The transfer resource itself is domain.resources."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field, StrictBool, StrictInt, StrictStr

from gateway.schemas.common import Metadata, StrictRequest

Amount = Field(
    gt=0,
    description="Integer minor units (cents): 12.50 USD is 1250. Floats and strings are rejected",
    examples=[1250],
)
Currency = Field(pattern=r"^[A-Z]{3}$", examples=["USD"])
Description = Field(default=None, max_length=500)


class TransferCreate(StrictRequest):
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
            "metadata": self.metadata,
        }


class AccountMoneyCreate(StrictRequest):
    """A deposit into, or a withdrawal from, one account."""

    account_id: uuid.UUID
    amount: StrictInt = Amount
    currency: StrictStr = Currency
    description: StrictStr | None = Description
    metadata: Metadata = Field(default_factory=dict)

    def item_fields(self) -> dict[str, Any]:
        return self.model_dump()


class TransferBatchCreate(StrictRequest):
    transfers: list[TransferCreate] = Field(min_length=1, max_length=1000)
    atomic: StrictBool = Field(
        default=False, description="true: all transfers succeed or none does (one transaction)"
    )
    metadata: Metadata = Field(default_factory=dict)
