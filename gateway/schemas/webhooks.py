"""Bodies of /v1/webhook-endpoints and their deliveries (events are domain.resources)."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field, StrictBool, StrictStr

from domain.enums import EventType
from domain.resources import UtcDatetime
from gateway.schemas.common import StrictRequest


class EndpointCreate(StrictRequest):
    url: StrictStr = Field(max_length=2048, examples=["https://hooks.example.com/settle"])
    events: list[EventType] = Field(min_length=1, max_length=20)


class EndpointUpdate(StrictRequest):
    """Only the fields given change; at least one is needed."""

    url: StrictStr | None = Field(
        default=None,
        max_length=2048,
        description="Vetted as at creation: http(s), a host resolving to public addresses",
    )
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=20)
    enabled: StrictBool | None = Field(
        default=None,
        description="false: stop sending (pending deliveries fail); true: send again, and "
        "forget past failures (also after Settle disabled it)",
    )


class EndpointOut(BaseModel):
    id: uuid.UUID
    url: str
    events: list[EventType]
    status: Literal["active", "disabled"]
    disabled_reason: str | None
    created_at: UtcDatetime


class EndpointWithSecret(EndpointOut):
    secret: str = Field(description="whsec_… signing secret. Shown only in this response.")


class AttemptOut(BaseModel):
    attempted_at: UtcDatetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: uuid.UUID
    event_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: UtcDatetime | None
    last_status_code: int | None
    created_at: UtcDatetime
    completed_at: UtcDatetime | None
    attempt_log: list[AttemptOut]
