"""Bodies of /v1/webhook-endpoints and /v1/events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictStr

from gateway.schemas.common import StrictRequest

EventType = Literal["transfer.succeeded", "transfer.failed"]


class EndpointCreate(StrictRequest):
    url: StrictStr = Field(max_length=2048, examples=["https://hooks.example.com/settle"])
    events: list[EventType] = Field(min_length=1, max_length=10)


class EndpointOut(BaseModel):
    id: uuid.UUID
    url: str
    events: list[str]
    status: Literal["active", "disabled"]
    disabled_reason: str | None
    created_at: datetime


class EndpointWithSecret(EndpointOut):
    secret: str = Field(description="whsec_… signing secret. Shown only in this response.")


class AttemptOut(BaseModel):
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: uuid.UUID
    event_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    created_at: datetime
    completed_at: datetime | None
    attempt_log: list[AttemptOut]


class EventOut(BaseModel):
    id: str
    type: str
    created_at: datetime
    data: dict[str, Any]
