"""Four eyes: large deposits and every limit change wait for a second operator.

A request that needs approval is parked as a pending approval with its payload
as asked. Another operator approves or rejects it, once; the requester never can,
nor can an operator act on an account of their own. Approving applies the
request in the approver's unit of work, so the decision and its effect commit
together:
- a deposit goes through the acceptance path (`settle_accept`) in the requester's
  name, under an Idempotency-Key derived from the approval id that no client can
  send: a second approval of the same request could only replay it, never pay twice;
- a limit change goes through `admin.change_limits`, in the approver's name.
Every step is audited. An approval left undecided past `expires_at` expires.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from domain.enums import AccountKind, ApprovalAction, ApprovalStatus, TransferKind
from domain.errors import Conflict, IdempotencyKeyReused, InvalidRequest, NotFound, PermissionDenied
from domain.models import Account, Approval, User
from domain.repositories import accounts as accounts_repo
from domain.repositories import approvals as approvals_repo
from domain.services import acceptance, admin, audit
from domain.uow import UnitOfWork

# Client keys are printable (gateway/idempotency.py); this one starts with a control
# character, so no client can claim an approval's key before the approval uses it.
_KEY_PREFIX = "\x1fapproval:"


@dataclass(frozen=True, kw_only=True)
class ApprovalPolicy:
    deposit_threshold: int  # deposits at or above need approval
    ttl_seconds: int


@dataclass(frozen=True, kw_only=True)
class Parked:
    approval: Approval
    replayed: bool


def needs_approval(item: acceptance.MoneyItem, *, policy: ApprovalPolicy) -> bool:
    """Decided from the request alone: the common path pays no round trip for it."""
    return (
        item.kind == TransferKind.DEPOSIT
        and item.amount is not None
        and item.amount >= policy.deposit_threshold
    )


def request_deposit(
    *,
    uow: UnitOfWork,
    requester: User,
    item: acceptance.MoneyItem,
    idempotency: acceptance.Idempotency,
    limits: acceptance.MoneyLimits,
    policy: ApprovalPolicy,
    request_id: str | None = None,
) -> Parked:
    """Park a deposit; the same Idempotency-Key and body answer with the same approval."""
    session = uow.session
    earlier = approvals_repo.by_key(session, requester.id, idempotency.key)
    if earlier is not None:
        return _replay(earlier, idempotency)
    acceptance.check_items([item], limits, batch=False)
    assert item.account_id is not None  # a deposit always names its account
    account = _customer_account(session, item.account_id)
    admin.refuse_own_account(requester, account, "deposit into")
    if account.currency != item.currency:
        raise InvalidRequest(f"the account does not hold {item.currency}", code="currency_mismatch")
    payload: dict[str, object] = {
        "amount": item.amount,
        "currency": item.currency,
        "description": item.description,
    }
    # A schedule is kept with the approval and applies to the deposit it creates (only
    # when given: older approvals and plain deposits keep the payload they had).
    for name in ("execute_at", "execute_before"):
        moment = getattr(item, name)
        if moment is not None:
            payload[name] = moment.isoformat()
    if item.metadata:
        payload["metadata"] = dict(item.metadata)
    parked = _park(
        session,
        requester=requester,
        action=ApprovalAction.DEPOSIT,
        account=account,
        payload=payload,
        policy=policy,
        key=idempotency,
        request_id=request_id,
    )
    if parked is None:  # a concurrent request with the same key parked first
        earlier = approvals_repo.by_key(session, requester.id, idempotency.key)
        assert earlier is not None
        return _replay(earlier, idempotency)
    return Parked(approval=parked, replayed=False)


def request_limits_change(
    *,
    uow: UnitOfWork,
    requester: User,
    account_id: uuid.UUID,
    change: admin.LimitsChange,
    policy: ApprovalPolicy,
    request_id: str | None = None,
) -> Approval:
    session = uow.session
    admin.check_change(change)
    account = _customer_account(session, account_id)
    admin.refuse_own_account(requester, account, "change the limits of")
    approval = _park(
        session,
        requester=requester,
        action=ApprovalAction.LIMITS_CHANGE,
        account=account,
        payload=asdict(change),
        policy=policy,
        key=None,
        request_id=request_id,
    )
    assert approval is not None  # no key, no conflict
    return approval


def approve(
    *,
    uow: UnitOfWork,
    approver: User,
    approval_id: uuid.UUID,
    limits: acceptance.MoneyLimits,
    request_id: str | None = None,
) -> Approval:
    session = uow.session
    approval, now = _decidable(uow, approver, approval_id)
    account = _customer_account(session, approval.account_id)
    transfer_id = None
    if approval.action == ApprovalAction.DEPOSIT:
        admin.refuse_own_account(approver, account, "approve a deposit into")
        transfer_id = _deposit(uow, approval, limits, request_id)
    else:
        admin.refuse_own_account(approver, account, "approve a limit change of")
        admin.change_limits(
            session=session,
            actor=approver,
            account_id=approval.account_id,
            change=admin.LimitsChange(**approval.payload),
        )
    _decide(session, approval, ApprovalStatus.APPROVED, approver, now, transfer_id, request_id)
    return approval


def reject(
    *, uow: UnitOfWork, approver: User, approval_id: uuid.UUID, request_id: str | None = None
) -> Approval:
    approval, now = _decidable(uow, approver, approval_id)
    _decide(uow.session, approval, ApprovalStatus.REJECTED, approver, now, None, request_id)
    return approval


def get(*, session: Session, approval_id: uuid.UUID) -> Approval:
    approval = approvals_repo.get(session, approval_id)
    if approval is None:
        raise NotFound("approval not found")
    return approval


def list_approvals(
    *,
    session: Session,
    status: ApprovalStatus | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Approval]:
    return approvals_repo.page(
        session, status=status, before=before, limit=limit, now=datetime.now(UTC)
    )


def _customer_account(session: Session, account_id: uuid.UUID) -> Account:
    account = accounts_repo.get(session, account_id)
    if account is None or account.kind != AccountKind.CUSTOMER:
        raise NotFound("account not found")
    return account


def _replay(earlier: Approval, idempotency: acceptance.Idempotency) -> Parked:
    if earlier.fingerprint != idempotency.fingerprint:
        raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request")
    return Parked(approval=earlier, replayed=True)


def _park(
    session: Session,
    *,
    requester: User,
    action: ApprovalAction,
    account: Account,
    payload: dict[str, object],
    policy: ApprovalPolicy,
    key: acceptance.Idempotency | None,
    request_id: str | None,
) -> Approval | None:
    now = datetime.now(UTC)
    approval = approvals_repo.park(
        session,
        {
            "id": uuid.uuid4(),
            "action": action,
            "status": ApprovalStatus.PENDING,
            "requested_by": requester.id,
            "account_id": account.id,
            "payload": payload,
            "idempotency_key": key.key if key else None,
            "fingerprint": key.fingerprint if key else None,
            "request_id": request_id,
            "created_at": now,
            "expires_at": now + timedelta(seconds=policy.ttl_seconds),
        },
    )
    if approval is not None:
        _audit(session, "approval.requested", approval, requester.id, request_id)
    return approval


def _decidable(uow: UnitOfWork, decider: User, approval_id: uuid.UUID) -> tuple[Approval, datetime]:
    """The approval, locked, if `decider` may decide it now; the refusal otherwise."""
    session = uow.session
    approval = approvals_repo.lock(session, approval_id)
    if approval is None:
        raise NotFound("approval not found")
    if approval.requested_by == decider.id:
        raise PermissionDenied(
            "a request needs a second operator: its requester cannot decide it",
            code="own_request",
        )
    if approval.status != ApprovalStatus.PENDING:
        raise Conflict(f"the approval is already {approval.status}", code="approval_decided")
    now = datetime.now(UTC)
    if approval.expires_at <= now:
        approvals_repo.decide(
            session, approval.id, status=ApprovalStatus.EXPIRED, decided_by=None, decided_at=now
        )
        _audit(session, "approval.expired", approval, decider.id, None)
        uow.keep_on_refusal()  # the expiry stands, though the request is refused
        raise Conflict("the approval has expired", code="approval_expired")
    return approval, now


def _deposit(
    uow: UnitOfWork,
    approval: Approval,
    limits: acceptance.MoneyLimits,
    request_id: str | None,
) -> uuid.UUID:
    payload = approval.payload
    item = acceptance.MoneyItem(
        kind=TransferKind.DEPOSIT,
        account_id=approval.account_id,
        amount=int(payload["amount"]),
        currency=str(payload["currency"]),
        description=payload.get("description"),
        execute_at=_moment(payload.get("execute_at")),
        execute_before=_moment(payload.get("execute_before")),
        metadata=payload.get("metadata") or {},
    )
    canonical = json.dumps([str(approval.id), payload], sort_keys=True, separators=(",", ":"))
    accepted = acceptance.accept_in(
        uow=uow,
        user_id=approval.requested_by,
        items=[item],
        idempotency=acceptance.Idempotency(
            key=f"{_KEY_PREFIX}{approval.id}",
            fingerprint=hashlib.sha256(canonical.encode()).hexdigest(),
        ),
        limits=limits,
        request_id=request_id,
    )
    return accepted.transfers[0].id


def _moment(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _decide(
    session: Session,
    approval: Approval,
    status: ApprovalStatus,
    decider: User,
    now: datetime,
    transfer_id: uuid.UUID | None,
    request_id: str | None,
) -> None:
    if not approvals_repo.decide(
        session,
        approval.id,
        status=status,
        decided_by=decider.id,
        decided_at=now,
        transfer_id=transfer_id,
    ):
        raise Conflict("the approval was decided meanwhile", code="approval_decided")
    session.refresh(approval)
    _audit(session, f"approval.{status}", approval, decider.id, request_id)


def _audit(
    session: Session,
    event_type: str,
    approval: Approval,
    actor_id: uuid.UUID,
    request_id: str | None,
) -> None:
    audit.record(
        session,
        event_type,
        actor_id=actor_id,
        subject_type="approval",
        subject_id=str(approval.id),
        request_id=request_id,
        data={
            "action": approval.action,
            "account_id": approval.account_id,
            "requested_by": approval.requested_by,
            "request": approval.payload,
            "transfer_id": approval.transfer_id,
        },
    )
