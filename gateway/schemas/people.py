"""Bodies of the admin's people endpoints (/v1/admin/users...)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from domain.enums import Role
from gateway.schemas.common import StrictRequest


class RoleChange(StrictRequest):
    role: Role


class AdminUserOut(BaseModel):
    id: uuid.UUID
    email: str
    role: Role
    created_at: datetime
    disabled_at: datetime | None
