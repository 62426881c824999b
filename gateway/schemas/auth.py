"""Bodies of /v1/auth/* and /v1/me."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field, StrictStr

from domain.enums import Role
from gateway.schemas.common import StrictRequest


class Credentials(StrictRequest):
    email: StrictStr = Field(min_length=3, max_length=320, examples=["ada@example.com"])
    password: StrictStr = Field(min_length=1, max_length=128, examples=["correct horse battery"])


class PasswordChange(StrictRequest):
    current_password: StrictStr = Field(min_length=1, max_length=128)
    new_password: StrictStr = Field(min_length=1, max_length=128)


class RefreshRequest(StrictRequest):
    refresh_token: StrictStr = Field(min_length=1, max_length=200)


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    role: Role


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="Lifetime of the access token, in seconds")
