"""Edge-triggered balance alerts: setting them, and evaluating them inside the engine.

An alert fires once when the balance crosses its threshold, and not again until the
balance has come back past the threshold by `rearm_margin`:

- `below`: fires `balance.below` when an entry takes the balance under `below`
  (strictly: `balance < below`); re-arms once the balance is `>= below + rearm_margin`.
- `above`: fires `balance.above` when the balance goes over `above` (`balance > above`);
  re-arms once it is `<= above - rearm_margin`.

An alert set while the balance is already across its threshold starts disarmed: it
fires at the next crossing after the balance has come back (edge, not level).

The engine evaluates alerts entry by entry, in the order it posts the entries, in
the transaction that writes them: a crossing and a re-arm within one batch both
count, the event is written with the transfer events (right after the event of the
transfer that crossed), and a rolled-back batch writes neither. Events go to the
alert's creator. Alert rows change only under the account's row lock (see
`repositories.alerts.count_change`), so the engine's view of them is never stale.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from domain.enums import EventType
from domain.errors import InvalidRequest, NotFound
from domain.models import BalanceAlert, User
from domain.repositories import alerts as alerts_repo
from domain.repositories.webhooks import Position
from domain.services import accounts, audit

MAX_ALERTS_PER_ACCOUNT = 10


@dataclass(frozen=True, kw_only=True)
class SetAlert:
    account_id: uuid.UUID
    below: int | None = None
    above: int | None = None
    rearm_margin: int = 0


def create_alert(*, session: Session, user: User, cmd: SetAlert) -> BalanceAlert:
    """A new alert on an account the user may see (its owner, or an operator)."""
    accounts.get_visible_account(session=session, user=user, account_id=cmd.account_id)
    if cmd.below is None and cmd.above is None:
        raise InvalidRequest(
            "give `below`, `above` or both: the balance that should fire the alert",
            code="alert_threshold_required",
        )
    if cmd.below is not None and cmd.above is not None and cmd.below >= cmd.above:
        raise InvalidRequest(
            "`below` must be less than `above`; use two alerts for other combinations",
            code="alert_thresholds_out_of_order",
        )
    # Takes the account's row lock: the balance read here is the one the engine
    # will evaluate the alert against next.
    locked = alerts_repo.count_change(session, cmd.account_id, +1)
    if locked.balance_alert_count > MAX_ALERTS_PER_ACCOUNT:
        raise InvalidRequest(  # the unit of work rolls the count back
            f"at most {MAX_ALERTS_PER_ACCOUNT} balance alerts per account; "
            "delete one you no longer need first",
            code="too_many_alerts",
        )
    balance = int(locked.balance)
    alert = alerts_repo.add(
        session,
        BalanceAlert(
            id=uuid.uuid4(),
            account_id=cmd.account_id,
            created_by=user.id,
            below=cmd.below,
            above=cmd.above,
            rearm_margin=cmd.rearm_margin,
            # Already across: disarmed, as if it had just fired (edge-triggered).
            below_armed=None if cmd.below is None else balance >= cmd.below,
            above_armed=None if cmd.above is None else balance <= cmd.above,
            created_at=datetime.now(UTC),
        ),
    )
    audit.record(
        session,
        "balance_alert.created",
        actor_id=user.id,
        subject_type="balance_alert",
        subject_id=str(alert.id),
        data={
            "account_id": str(cmd.account_id),
            "below": cmd.below,
            "above": cmd.above,
            "rearm_margin": cmd.rearm_margin,
        },
    )
    return alert


def _creator_filter(user: User) -> uuid.UUID | None:
    # Operators see every alert of an account; a customer sees the alerts they set
    # (an operator's alert on their account is the back office's, not theirs).
    return None if user.role.sees_everything else user.id


def list_alerts(
    *, session: Session, user: User, account_id: uuid.UUID, after: Position | None, limit: int
) -> list[BalanceAlert]:
    accounts.get_visible_account(session=session, user=user, account_id=account_id)
    return alerts_repo.of_account(
        session, account_id, created_by=_creator_filter(user), after=after, limit=limit
    )


def get_alert(
    *, session: Session, user: User, account_id: uuid.UUID, alert_id: uuid.UUID
) -> BalanceAlert:
    accounts.get_visible_account(session=session, user=user, account_id=account_id)
    alert = alerts_repo.get(session, alert_id)
    creator = _creator_filter(user)
    if (
        alert is None
        or alert.account_id != account_id
        or (creator is not None and alert.created_by != creator)
    ):
        raise NotFound("balance alert not found")
    return alert


def delete_alert(
    *, session: Session, user: User, account_id: uuid.UUID, alert_id: uuid.UUID
) -> None:
    alert = get_alert(session=session, user=user, account_id=account_id, alert_id=alert_id)
    alerts_repo.count_change(session, account_id, -1)  # under the account's lock, as create
    alerts_repo.delete(session, alert)
    audit.record(
        session,
        "balance_alert.deleted",
        actor_id=user.id,
        subject_type="balance_alert",
        subject_id=str(alert_id),
        data={"account_id": str(account_id)},
    )


# --- inside the engine -------------------------------------------------------------


@dataclass
class AlertState:
    """An alert as the engine evaluates it: the armed flags change in memory."""

    id: uuid.UUID
    account_id: uuid.UUID
    created_by: uuid.UUID
    below: int | None
    above: int | None
    rearm_margin: int
    below_armed: bool | None
    above_armed: bool | None
    created_at: datetime
    changed: bool = False

    def step(self, balance: int) -> list[tuple[EventType, int]]:
        """The balance is now `balance`: the (event, threshold) pairs that fire."""
        fired: list[tuple[EventType, int]] = []
        if self.below is not None:
            if self.below_armed and balance < self.below:
                self.below_armed, self.changed = False, True
                fired.append((EventType.BALANCE_BELOW, self.below))
            elif not self.below_armed and balance >= self.below + self.rearm_margin:
                self.below_armed, self.changed = True, True
        if self.above is not None:
            if self.above_armed and balance > self.above:
                self.above_armed, self.changed = False, True
                fired.append((EventType.BALANCE_ABOVE, self.above))
            elif not self.above_armed and balance <= self.above - self.rearm_margin:
                self.above_armed, self.changed = True, True
        return fired


@dataclass(frozen=True)
class Crossing:
    """One alert firing: the entry that took the balance across the threshold."""

    alert: AlertState
    type: EventType
    threshold: int
    entry: Mapping[str, Any]


def evaluate(alerts: Iterable[AlertState], entries: Sequence[Mapping[str, Any]]) -> list[Crossing]:
    """Walks `entries` (in the order they were posted) through the alerts of their
    accounts; returns the crossings in entry order. Changes the alerts' armed flags."""
    by_account: dict[uuid.UUID, list[AlertState]] = {}
    for alert in alerts:
        by_account.setdefault(alert.account_id, []).append(alert)
    crossings: list[Crossing] = []
    for entry in entries:
        for alert in by_account.get(entry["account_id"], ()):
            crossings += [
                Crossing(alert=alert, type=event_type, threshold=threshold, entry=entry)
                for event_type, threshold in alert.step(entry["balance_after"])
            ]
    return crossings


def evaluate_in_engine(
    session: Session, alerting: Collection[uuid.UUID], entries: Sequence[Mapping[str, Any]]
) -> list[Crossing]:
    """The crossings of this batch's entries, with the alerts' new states saved.

    `alerting`: the batch's accounts whose alert count is not zero; with none, no
    statement runs at all."""
    if not alerting:
        return []
    touched = {e["account_id"] for e in entries} & set(alerting)
    if not touched:
        return []
    states = [AlertState(**row._mapping) for row in alerts_repo.for_engine(session, touched)]
    crossings = evaluate(states, entries)
    alerts_repo.save_armed(
        session, [(s.id, s.below_armed, s.above_armed) for s in states if s.changed]
    )
    return crossings
