"""Request body of /v1/accounts/{id}/balance-alerts (the alert resource is domain.resources)."""

from __future__ import annotations

from pydantic import Field, StrictInt

from gateway.schemas.common import StrictRequest

_BOUND = 2**62  # far past any balance, and still a bigint after adding a margin


class AlertCreate(StrictRequest):
    below: StrictInt | None = Field(
        default=None,
        ge=-_BOUND,
        le=_BOUND,
        description="Fire `balance.below` when the balance drops under this (minor units)",
        examples=[10_000],
    )
    above: StrictInt | None = Field(
        default=None,
        ge=-_BOUND,
        le=_BOUND,
        description="Fire `balance.above` when the balance rises over this (minor units)",
    )
    rearm_margin: StrictInt = Field(
        default=0,
        ge=0,
        le=_BOUND,
        description="After firing, the balance must come back past the threshold by at least "
        "this much (minor units) before the alert fires again; 0: as soon as it is back",
        examples=[500],
    )
