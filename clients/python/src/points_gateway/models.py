"""Typed results: frozen dataclasses built from the gateway's JSON.

Points are ``int`` (the ledger is exact integer arithmetic); times are
timezone-aware ``datetime`` in UTC.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Dict, Generic, List, Optional, TypeVar

T = TypeVar("T")


def _time(v: Optional[str]) -> Optional[_dt.datetime]:
    if v is None:
        return None
    # Python 3.9's fromisoformat does not take "Z".
    return _dt.datetime.fromisoformat(v.replace("Z", "+00:00"))


@dataclass(frozen=True)
class User:
    id: int
    uuid: str
    name: str
    #: Settled balance, open holds included (paid + gift).
    balance: int
    #: Reserved by open holds.
    held: int
    #: What may be spent now: balance − held.
    available: int
    paid: int
    gift: int

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "User":
        return cls(
            id=d["id"],
            uuid=d["uuid"],
            name=d["name"],
            balance=d["balance"],
            held=d["held"],
            available=d["available"],
            paid=d["paid"],
            gift=d["gift"],
        )


@dataclass(frozen=True)
class UsageDetail:
    """One ledger row (a row of the UsageDetail page)."""

    id: int
    created_at: _dt.datetime
    type: str
    source_type: Optional[str]
    source_id: Optional[str]
    amount: int
    #: Signed: + recharge/refund/opening, − consume/expire.
    change: int
    balance_before: int
    balance_after: int
    duration: Optional[float]
    description: Optional[str]
    batch_id: Optional[str]
    user_id: Optional[int] = None
    #: Admins only (``with_writer=True``): who wrote the row.
    written_by: Optional[str] = None

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "UsageDetail":
        return cls(
            id=int(d["id"]),
            created_at=_time(d["createdAt"]),  # type: ignore[arg-type]
            type=d["type"],
            source_type=d.get("sourceType"),
            source_id=d.get("sourceId"),
            amount=d["amount"],
            change=d["change"],
            balance_before=d["balanceBefore"],
            balance_after=d["balanceAfter"],
            duration=d.get("duration"),
            description=d.get("description"),
            batch_id=d.get("batchId"),
            user_id=(d.get("user") or {}).get("id"),
            written_by=d.get("writtenBy"),
        )


@dataclass(frozen=True)
class Hold:
    id: str
    user_id: int
    source_type: str
    source_id: str
    amount: int
    status: str
    duration: Optional[float]
    note: Optional[str]
    created_at: _dt.datetime
    expires_at: _dt.datetime
    settled_at: Optional[_dt.datetime]
    captured: Optional[int]
    reason: Optional[str]
    #: The consume row a capture wrote.
    entry: Optional[UsageDetail]

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Hold":
        return cls(
            id=d["id"],
            user_id=d["userId"],
            source_type=d["sourceType"],
            source_id=d["sourceId"],
            amount=d["amount"],
            status=d["status"],
            duration=d.get("duration"),
            note=d.get("note"),
            created_at=_time(d["createdAt"]),  # type: ignore[arg-type]
            expires_at=_time(d["expiresAt"]),  # type: ignore[arg-type]
            settled_at=_time(d.get("settledAt")),
            captured=d.get("captured"),
            reason=d.get("reason"),
            entry=UsageDetail.from_json(d["entry"]) if d.get("entry") else None,
        )


@dataclass(frozen=True)
class PointsDetail:
    """A row of the ts platform's signed statement (``ts_points_detail``)."""

    id: int
    user_id: int
    points: int
    order_id: Optional[str]
    title: Optional[str]
    source_type: Optional[str]
    balance_before: int
    balance_after: int
    created_at: _dt.datetime

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "PointsDetail":
        return cls(
            id=d["id"],
            user_id=d["userId"],
            points=d["points"],
            order_id=d.get("orderId"),
            title=d.get("title"),
            source_type=d.get("sourceType"),
            balance_before=d["balanceBefore"],
            balance_after=d["balanceAfter"],
            created_at=_time(d["createdAt"]),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class SourceTypeInfo:
    name: str
    label: str
    #: ``REQUIRED``, ``OPTIONAL`` or ``REFUSED``.
    duration: str

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "SourceTypeInfo":
        return cls(name=d["name"], label=d["label"], duration=d["duration"])


@dataclass(frozen=True)
class EndpointUsage:
    endpoint_id: str
    unit: Optional[str]
    fal_quantity: float
    fal_cost_usd: float
    local_cost_usd: float
    diff_usd: float
    mismatch: bool

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "EndpointUsage":
        return cls(
            endpoint_id=d["endpointId"],
            unit=d.get("unit"),
            fal_quantity=d["falQuantity"],
            fal_cost_usd=d["falCostUsd"],
            local_cost_usd=d["localCostUsd"],
            diff_usd=d["diffUsd"],
            mismatch=d["mismatch"],
        )


@dataclass(frozen=True)
class AccountCost:
    account_id: int
    account_name: str
    masked_key: str
    task_count: int
    succeeded_count: int
    failed_count: int
    refunded_count: int
    charged_points: int
    refunded_points: int
    cost_usd: float
    margin_usd: float
    #: fal's own figures when asked for (``fal_usage=True``).
    fal_total_cost_usd: Optional[float] = None
    fal_mismatch: Optional[bool] = None
    fal_endpoints: List[EndpointUsage] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "AccountCost":
        usage = d.get("falUsage")
        return cls(
            account_id=d["account"]["id"],
            account_name=d["account"]["name"],
            masked_key=d["account"]["maskedKey"],
            task_count=d["taskCount"],
            succeeded_count=d["succeededCount"],
            failed_count=d["failedCount"],
            refunded_count=d["refundedCount"],
            charged_points=d["chargedPoints"],
            refunded_points=d["refundedPoints"],
            cost_usd=d["costUsd"],
            margin_usd=d["marginUsd"],
            fal_total_cost_usd=usage["totalCostUsd"] if usage else None,
            fal_mismatch=usage["mismatch"] if usage else None,
            fal_endpoints=[EndpointUsage.from_json(e) for e in usage["endpoints"]] if usage else [],
        )


@dataclass(frozen=True)
class BalanceChange:
    """One event of ``balanceChanged``."""

    user_id: int
    balance: int
    held: int
    available: int
    #: True: events may have been missed before this one; re-read what you keep.
    resync: bool
    entry: Optional[UsageDetail]
    hold_id: Optional[str] = None
    hold_status: Optional[str] = None

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "BalanceChange":
        hold = d.get("hold") or {}
        return cls(
            user_id=d["userId"],
            balance=d["balance"],
            held=d["held"],
            available=d["available"],
            resync=d["resync"],
            entry=UsageDetail.from_json(d["entry"]) if d.get("entry") else None,
            hold_id=hold.get("id"),
            hold_status=hold.get("status"),
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    items: List[T]
    has_next: bool
    end_cursor: Optional[str]
    total_count: Optional[int] = None
