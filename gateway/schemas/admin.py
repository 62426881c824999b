"""Bodies of the operator endpoints under /v1/admin."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field, StrictBool, StrictInt

from domain.enums import AccountKind
from domain.resources import AccountResource, UtcDatetime
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


class AdminAccountOut(AccountResource):
    """The account resource, plus what operators manage."""

    owner_id: uuid.UUID | None
    kind: AccountKind
    overdraft_limit: int
    daily_outgoing_limit: int | None = Field(description="null: the configured default applies")


class AuditEventOut(BaseModel):
    id: int
    chain_seq: int | None = Field(description="null until the sealer has chained the event")
    occurred_at: UtcDatetime
    event_type: str
    actor_id: uuid.UUID | None
    subject_type: str | None
    subject_id: str | None
    request_id: str | None
    data: dict[str, Any]
    prev_hash: str | None
    hash: str | None
