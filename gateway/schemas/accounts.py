"""Request bodies of /v1/accounts (the account and entry resources are domain.resources)."""

from __future__ import annotations

from pydantic import Field, StrictStr

from gateway.schemas.common import StrictRequest


class AccountCreate(StrictRequest):
    currency: StrictStr = Field(pattern=r"^[A-Z]{3}$", examples=["USD"])
    name: StrictStr | None = Field(default=None, max_length=200)
