"""Bodies of /v1/transfers, /v1/deposits and /v1/withdrawals."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, StrictInt, StrictStr

from gateway.schemas.common import StrictRequest

Amount = Field(gt=0, description="Integer minor units (cents); floats and strings are rejected")
Currency = Field(pattern=r"^[A-Z]{3}$", examples=["USD"])
Description = Field(default=None, max_length=500)


class TransferCreate(StrictRequest):
    source_account_id: uuid.UUID
    destination_account_number: StrictStr = Field(pattern=r"^[0-9]{6,32}$")
    amount: StrictInt = Amount
    currency: StrictStr = Currency
    description: StrictStr | None = Description


class DepositCreate(StrictRequest):
    account_id: uuid.UUID
    amount: StrictInt = Amount
    currency: StrictStr = Currency
    description: StrictStr | None = Description


class WithdrawalCreate(StrictRequest):
    account_id: uuid.UUID
    amount: StrictInt = Amount
    currency: StrictStr = Currency
    description: StrictStr | None = Description


class TransferOut(BaseModel):
    id: uuid.UUID
    kind: Literal["transfer", "deposit", "withdrawal"]
    status: Literal["pending", "succeeded", "failed"]
    failure_code: str | None
    source_account_id: uuid.UUID
    destination_account_id: uuid.UUID
    amount: int
    currency: str
    description: str | None
    created_at: datetime
    completed_at: datetime | None
