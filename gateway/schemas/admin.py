"""Bodies of the operator endpoints under /v1/admin."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictBool, StrictInt

from gateway.schemas.common import StrictRequest


class LimitsUpdate(StrictRequest):
    overdraft_limit: StrictInt | None = Field(
        default=None, ge=0, le=2**62, description="Minor units the balance may go below zero"
    )
    daily_outgoing_limit: StrictInt | None = Field(
        default=None, ge=0, le=2**62, description="Minor units the account may send per UTC day"
    )
    reset_daily_outgoing_limit: StrictBool = Field(
        default=False, description="Go back to the configured default daily limit"
    )


class AdminAccountOut(BaseModel):
    id: uuid.UUID
    number: str
    owner_id: uuid.UUID | None
    kind: Literal["customer", "system"]
    currency: str
    name: str | None
    balance: int
    status: Literal["active", "frozen"]
    overdraft_limit: int
    daily_outgoing_limit: int | None = Field(description="null: the configured default applies")
    created_at: datetime


class AuditEventOut(BaseModel):
    chain_seq: int
    occurred_at: datetime
    event_type: str
    actor_id: uuid.UUID | None
    subject_type: str | None
    subject_id: str | None
    request_id: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str
