"""Bodies of /v1/accounts and ledger entries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, StrictStr

from gateway.schemas.common import StrictRequest


class AccountCreate(StrictRequest):
    currency: StrictStr = Field(pattern=r"^[A-Z]{3}$", examples=["USD"])
    name: StrictStr | None = Field(default=None, max_length=200)


class AccountOut(BaseModel):
    id: uuid.UUID
    number: str = Field(description="Non-sequential account number; the last digit is a Luhn check")
    currency: str
    name: str | None
    balance: int = Field(description="Minor units (cents)")
    status: Literal["active", "frozen"]
    created_at: datetime


class EntryOut(BaseModel):
    id: int
    transfer_id: uuid.UUID
    amount: int = Field(description="Signed minor units: negative leaves the account")
    balance_before: int
    balance_after: int
    sequence: int = Field(description="Per-account, starts at 1, increases by exactly one")
    created_at: datetime
