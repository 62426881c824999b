"""Request bodies of /v1/accounts (the account and entry resources are domain.resources)."""

from __future__ import annotations

from pydantic import Field, StrictStr

from gateway.schemas.common import Metadata, StrictRequest


class AccountCreate(StrictRequest):
    currency: StrictStr = Field(pattern=r"^[A-Z]{3}$", examples=["USD"])
    name: StrictStr | None = Field(default=None, max_length=200)
    metadata: Metadata = Field(default_factory=dict)
