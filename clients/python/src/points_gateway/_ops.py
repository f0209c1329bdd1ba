"""The operations the clients send: one document, its variables and how
its answer is read, written once for the sync and the async client."""
from __future__ import annotations

import datetime as _dt
import uuid as _uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from .models import (
    AccountCost,
    Hold,
    Page,
    PointsDetail,
    SourceTypeInfo,
    UsageDetail,
    User,
)

ENTRY = (
    "id createdAt type sourceType sourceId amount change balanceBefore balanceAfter "
    "duration description batchId user { id }"
)
USER = "id uuid name balance held available paid gift"
HOLD = (
    "id userId sourceType sourceId amount status duration note createdAt expiresAt "
    "settledAt captured reason entry { " + ENTRY + " }"
)
STATEMENT = "id userId points orderId title sourceType balanceBefore balanceAfter createdAt"
PAGE = "pageInfo { hasNextPage endCursor } totalCount"


@dataclass(frozen=True)
class Op:
    query: str
    variables: Dict[str, Any]
    parse: Callable[[Dict[str, Any]], Any]
    #: The name of the root field whose value ``parse`` reads.
    field: str


def _time(t: Optional[_dt.datetime]) -> Optional[str]:
    if t is None:
        return None
    if t.tzinfo is None:
        raise ValueError("times must be timezone-aware (datetime with tzinfo)")
    return t.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _drop_none(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _source_type(s: str) -> str:
    """The stored spelling (``tts``); the gateway also takes ``TTS``."""
    return s.lower()


def consume(
    user_id: int,
    amount: int,
    source_type: str,
    source_id: str,
    duration: Optional[float],
    note: Optional[str],
    title: Optional[str],
) -> Op:
    return Op(
        "mutation($input: ConsumeInput!) { consume(input: $input) { " + ENTRY + " } }",
        {
            "input": _drop_none(
                {
                    "userId": user_id,
                    "amount": amount,
                    "sourceType": _source_type(source_type),
                    "sourceId": source_id,
                    "duration": duration,
                    "note": note,
                    "title": title,
                }
            )
        },
        UsageDetail.from_json,
        "consume",
    )


def refund(
    source_type: str,
    source_id: str,
    refund_key: Optional[str],
    amount: Optional[int],
    reason: Optional[str],
) -> Op:
    return Op(
        "mutation($input: RefundInput!) { refund(input: $input) { " + ENTRY + " } }",
        {
            "input": _drop_none(
                {
                    "sourceType": _source_type(source_type),
                    "sourceId": source_id,
                    "refundKey": refund_key,
                    "amount": amount,
                    "reason": reason,
                }
            )
        },
        UsageDetail.from_json,
        "refund",
    )


def recharge(
    user_id: int,
    amount: int,
    order_id: str,
    kind: str,
    money_cents: Optional[int],
    pay_type: Optional[int],
    expires_at: Optional[_dt.datetime],
    title: Optional[str],
) -> Op:
    return Op(
        "mutation($input: RechargeInput!) { recharge(input: $input) { " + ENTRY + " } }",
        {
            "input": _drop_none(
                {
                    "userId": user_id,
                    "amount": amount,
                    "orderId": order_id,
                    "kind": kind.upper(),
                    "moneyCents": money_cents,
                    "payType": pay_type,
                    "expiresAt": _time(expires_at),
                    "title": title,
                }
            )
        },
        UsageDetail.from_json,
        "recharge",
    )


def hold(
    user_id: int,
    amount: int,
    source_type: str,
    source_id: str,
    duration: Optional[float],
    note: Optional[str],
    expires_in_secs: Optional[int],
) -> Op:
    return Op(
        "mutation($input: HoldInput!) { hold(input: $input) { " + HOLD + " } }",
        {
            "input": _drop_none(
                {
                    "userId": user_id,
                    "amount": amount,
                    "sourceType": _source_type(source_type),
                    "sourceId": source_id,
                    "duration": duration,
                    "note": note,
                    "expiresInSecs": expires_in_secs,
                }
            )
        },
        Hold.from_json,
        "hold",
    )


def capture_hold(
    source_type: str,
    source_id: str,
    amount: int,
    duration: Optional[float],
    note: Optional[str],
) -> Op:
    return Op(
        "mutation($input: CaptureHoldInput!) { captureHold(input: $input) { " + HOLD + " } }",
        {
            "input": _drop_none(
                {
                    "sourceType": _source_type(source_type),
                    "sourceId": source_id,
                    "amount": amount,
                    "duration": duration,
                    "note": note,
                }
            )
        },
        Hold.from_json,
        "captureHold",
    )


def release_hold(source_type: str, source_id: str, reason: Optional[str]) -> Op:
    return Op(
        "mutation($input: ReleaseHoldInput!) { releaseHold(input: $input) { " + HOLD + " } }",
        {
            "input": _drop_none(
                {
                    "sourceType": _source_type(source_type),
                    "sourceId": source_id,
                    "reason": reason,
                }
            )
        },
        Hold.from_json,
        "releaseHold",
    )


def create_user(name: str, uuid: Optional[str], id: Optional[int]) -> Op:
    # A uuid chosen here makes a retry of the same call return the same
    # user instead of creating a second one.
    return Op(
        "mutation($input: CreateUserInput!) { createUser(input: $input) { " + USER + " } }",
        {"input": _drop_none({"name": name, "uuid": str(uuid or _uuid.uuid4()), "id": id})},
        User.from_json,
        "createUser",
    )


def _maybe_user(d: Optional[Dict[str, Any]]) -> Optional[User]:
    return User.from_json(d) if d else None


def user(id: int) -> Op:
    return Op(
        "query($id: Int!) { user(id: $id) { " + USER + " } }",
        {"id": id},
        _maybe_user,
        "user",
    )


def user_by_uuid(uuid: str) -> Op:
    return Op(
        "query($u: UUID!) { userByUuid(uuid: $u) { " + USER + " } }",
        {"u": str(uuid)},
        _maybe_user,
        "userByUuid",
    )


def me() -> Op:
    return Op("query { me { " + USER + " } }", {}, _maybe_user, "me")


def _page(parse_node: Callable[[Dict[str, Any]], Any]) -> Callable[[Dict[str, Any]], Page]:
    def parse(d: Dict[str, Any]) -> Page:
        return Page(
            items=[parse_node(n) for n in d["nodes"]],
            has_next=d["pageInfo"]["hasNextPage"],
            end_cursor=d["pageInfo"]["endCursor"],
            total_count=d.get("totalCount"),
        )

    return parse


def usage_details(
    user_id: Optional[int],
    first: int,
    after: Optional[str],
    types: Optional[Sequence[str]],
    source_types: Optional[Sequence[str]],
    since: Optional[_dt.datetime],
    until: Optional[_dt.datetime],
    with_writer: bool,
) -> Op:
    node = ENTRY + (" writtenBy" if with_writer else "")
    flt = _drop_none(
        {
            "types": [t.upper() for t in types] if types else None,
            "sourceTypes": [_source_type(s) for s in source_types] if source_types else None,
            "from": _time(since),
            "to": _time(until),
        }
    )
    return Op(
        "query($u: Int, $first: Int, $after: String, $f: UsageFilter) { "
        "usageDetails(userId: $u, first: $first, after: $after, filter: $f) { "
        "nodes { " + node + " } " + PAGE + " } }",
        {"u": user_id, "first": first, "after": after, "f": flt or None},
        _page(UsageDetail.from_json),
        "usageDetails",
    )


def points_statement(user_id: Optional[int], first: int, after: Optional[str]) -> Op:
    return Op(
        "query($u: Int, $first: Int, $after: String) { "
        "pointsStatement(userId: $u, first: $first, after: $after) { "
        "nodes { " + STATEMENT + " } " + PAGE + " } }",
        {"u": user_id, "first": first, "after": after},
        _page(PointsDetail.from_json),
        "pointsStatement",
    )


def holds(user_id: Optional[int], status: Optional[str], first: int, after: Optional[str]) -> Op:
    return Op(
        "query($u: Int, $s: HoldStatus, $first: Int, $after: String) { "
        "holds(userId: $u, status: $s, first: $first, after: $after) { "
        "nodes { " + HOLD + " } " + PAGE + " } }",
        {"u": user_id, "s": status.upper() if status else None, "first": first, "after": after},
        _page(Hold.from_json),
        "holds",
    )


def source_types() -> Op:
    return Op(
        "query { sourceTypes { name label duration } }",
        {},
        lambda d: [SourceTypeInfo.from_json(t) for t in d],
        "sourceTypes",
    )


def account_costs(
    start: _dt.datetime,
    end: _dt.datetime,
    account_ids: Optional[List[int]],
    fal_usage: bool,
) -> Op:
    usage = (
        " falUsage { totalCostUsd mismatch endpoints { endpointId unit falQuantity "
        "falCostUsd localCostUsd diffUsd mismatch } }"
        if fal_usage
        else ""
    )
    return Op(
        "query($from: DateTime!, $to: DateTime!, $ids: [Int!]) { "
        "accountCosts(from: $from, to: $to, accountIds: $ids) { "
        "account { id name maskedKey } taskCount succeededCount failedCount refundedCount "
        "chargedPoints refundedPoints costUsd marginUsd" + usage + " } }",
        {"from": _time(start), "to": _time(end), "ids": account_ids},
        lambda d: [AccountCost.from_json(a) for a in d],
        "accountCosts",
    )


def fal_accounts() -> Op:
    return Op(
        "query { falAccounts { id name maskedKey status balance useCount errorCount remark } }",
        {},
        lambda d: d,
        "falAccounts",
    )


BALANCE_CHANGED = (
    "subscription($u: Int) { balanceChanged(userId: $u) { userId balance held available "
    "resync entry { " + ENTRY + " } hold { id status } } }"
)
