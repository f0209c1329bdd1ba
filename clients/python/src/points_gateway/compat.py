"""Drop-in replacements for the platforms' old balance functions.

A call site moves to the gateway by changing its import::

    # from app.api.computeHub import get_user_total_money, deduct_user_money_by_id
    from points_gateway.compat import get_user_total_money, deduct_user_money_by_id

Same names, arguments and answers as the seeds' functions (``False`` on an
insufficient balance, the total of paid and gift points). The client they
use comes from :func:`configure`, or from the environment on first use:
``POINTS_GATEWAY_URL`` and ``POINTS_GATEWAY_TOKEN`` (a service token; an
admin token for the fal usage functions).

Where the old semantics cannot be kept, the function's docstring says so.
What changes everywhere:

- **Idempotency.** The old code charged a retried job twice; the gateway
  books one charge per key (``order_id`` for the ts functions,
  ``(source_type, source_id)`` for the mjk one). Calling again with the
  same key and the same figures returns the first result; with other
  figures it raises :class:`~points_gateway.errors.IdempotencyConflict`.
- **Time.** Rows are stamped by the gateway when it writes them; the old
  ``at`` argument (back-dating) is not honoured.
- **Errors.** A user that does not exist raises
  :class:`~points_gateway.errors.UserNotFound` (the old code raised the
  ORM's ``DoesNotExist``); invalid input raises ``InvalidInput``.
"""
from __future__ import annotations

import datetime as _dt
import os
import threading
from typing import Any, Dict, List, Optional, Union

from .client import Client
from .errors import InsufficientBalance, InvalidInput
from .models import UsageDetail

_lock = threading.Lock()
_client: Optional[Client] = None
_charge_type = "ts_charge"
_uuid_ids: Dict[str, int] = {}


def configure(
    client: Optional[Client] = None,
    *,
    url: Optional[str] = None,
    token: Optional[str] = None,
    charge_type: Optional[str] = None,
) -> None:
    """Sets the client the functions use, and the source type the ts
    functions book their charges under (``ts_charge`` by default: add it
    with ``points-gateway source-types set ts_charge --label 【消费】
    --duration optional``, or name one of yours)."""
    global _client, _charge_type
    with _lock:
        if client is not None:
            _client = client
        elif url is not None:
            _client = Client(url, token)
        if charge_type is not None:
            _charge_type = charge_type
        _uuid_ids.clear()


def _gateway() -> Client:
    global _client
    with _lock:
        if _client is None:
            url = os.environ.get("POINTS_GATEWAY_URL")
            if not url:
                raise RuntimeError(
                    "points_gateway.compat: call configure(...) or set POINTS_GATEWAY_URL "
                    "and POINTS_GATEWAY_TOKEN"
                )
            _client = Client(url, os.environ.get("POINTS_GATEWAY_TOKEN"))
        return _client


# -- the ts platform (app/api/computeHub.py) --------------------------------


def get_user_total_money(user_id: int) -> int:
    """The user's points: paid plus gift (``money + gift_money`` before).

    Points reserved by open holds are included, as they are part of the
    balance; :func:`deduct_user_money_by_id` can spend only what holds do
    not reserve (the old code had no holds).
    """
    user = _gateway().user(int(user_id))
    if user is None:
        from .errors import UserNotFound

        raise UserNotFound(f"user {user_id} does not exist")
    return int(user.balance)


def deduct_user_money_by_id(
    user_id: int, money: int, title: str, order_id: str, source_type: str = "consume"
) -> bool:
    """Spends ``money`` points; ``True`` when spent, ``False`` when the balance is short.

    The gateway draws gift points first, then paid, as the old code did, and
    writes the statement rows (``ts_points_detail`` with ``title``,
    ``order_id``, ``source_type='consume'``) in the same transaction.

    Not kept: ``money == 0`` writes nothing and returns ``True`` (the gateway
    books no empty movements); a negative ``money`` raises ``ValueError``
    (the old code would have added points). ``source_type`` other than
    ``"consume"`` names the gateway source type to book under (one of
    ``sourceTypes``); ``"consume"`` books under the configured charge type.
    ``order_id`` is the charge's key (at most 64 characters): see the
    module's note on idempotency.
    """
    money = int(money)
    if money < 0:
        raise ValueError("money must not be negative")
    if money == 0:
        return True
    kind = _charge_type if source_type in (None, "", "consume") else source_type
    try:
        _gateway().consume(int(user_id), money, kind, str(order_id), title=title)
    except InsufficientBalance:
        return False
    return True


def add_user_money(
    user_id: int,
    points: int,
    title: str,
    order_id: str,
    source_type: str,
    cents: Optional[int] = None,
    pay_type: int = 0,
    at: Optional[_dt.datetime] = None,
) -> None:
    """Adds points as the old function did, by ``source_type``:

    - ``"gift"``: a gift batch (赠送积分);
    - ``"recharge"`` (or anything else) with ``cents``: a paid recharge of
      that money, with its ``ts_financial_transactions`` row;
    - ``"refund"``: gives back points of the charge booked under
      ``order_id`` (the gateway refunds only what was charged, and returns
      them to the batches they came from).

    Not kept: a paid recharge needs ``cents`` (the gateway books paid points
    only with their money; ``ValueError`` otherwise); ``at`` is ignored.
    ``order_id`` is the recharge's key.
    """
    client = _gateway()
    points = int(points)
    if source_type == "refund":
        client.refund(_charge_type, str(order_id), amount=points, reason=title)
        return None
    if source_type == "gift":
        client.recharge(int(user_id), points, str(order_id), kind="GIFT", title=title)
        return None
    if cents is None:
        raise ValueError("a paid recharge needs cents (what the user paid)")
    client.recharge(
        int(user_id),
        points,
        str(order_id),
        kind="PAID",
        money_cents=int(cents),
        pay_type=int(pay_type),
        title=title,
    )
    return None


# -- the mjk system (app/services/points.py) --------------------------------


def _id_of(user_uuid: Any) -> int:
    key = str(user_uuid)
    known = _uuid_ids.get(key)
    if known is not None:
        return known
    user = _gateway().user_by_uuid(key)
    if user is None:
        from .errors import UserNotFound

        raise UserNotFound(f"no user with uuid {key}")
    _uuid_ids[key] = user.id
    return user.id


def consume(
    user_id: Any,
    amount: int,
    source_type: str,
    source_id: str,
    duration: Optional[float] = None,
    description: Optional[str] = None,
) -> Optional[UsageDetail]:
    """Spends ``amount`` points for one job; the ledger row, or ``None``
    when the balance is short (as the old ``consume``).

    ``user_id`` is the mjk uuid, looked up once per process. The old
    function took a SQLAlchemy session and left the commit to the caller;
    here the row is committed when this returns (there is no session to
    pass). ``description`` is appended to the type's 【…】 label as a note.
    Idempotent on ``(source_type, source_id)``.
    """
    try:
        return _gateway().consume(
            _id_of(user_id), int(amount), source_type, str(source_id),
            duration=duration, note=description,
        )
    except InsufficientBalance:
        return None


# -- fal usage (app/coze/fal_balance.py) ------------------------------------


def _window(
    start: Optional[Union[str, _dt.datetime]], end: Optional[Union[str, _dt.datetime]]
) -> "tuple[_dt.datetime, _dt.datetime]":
    def parse(v: Union[str, _dt.datetime]) -> _dt.datetime:
        if isinstance(v, _dt.datetime):
            t = v
        else:
            t = _dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)

    now = _dt.datetime.now(_dt.timezone.utc)
    e = parse(end) if end is not None else now
    s = parse(start) if start is not None else e - _dt.timedelta(days=7)
    return s, e


def _account_id(account: Union[int, str]) -> int:
    """An account by id, name, or API key. A key never leaves this process:
    only its last four characters are compared with the accounts' masked
    keys, and a key that matches no account, or several, is refused."""
    if isinstance(account, int):
        return account
    accounts: List[Dict[str, Any]] = _gateway().fal_accounts()
    by_name = [a for a in accounts if a["name"] == account]
    if len(by_name) == 1:
        return int(by_name[0]["id"])
    tail = account[-4:]
    by_key = [a for a in accounts if a["maskedKey"].endswith(tail)]
    if len(by_key) == 1:
        return int(by_key[0]["id"])
    raise InvalidInput(f"no single fal account matches {account[:3]}…")


def query_fal_usage(
    account: Union[int, str],
    start: Optional[Union[str, _dt.datetime]] = None,
    end: Optional[Union[str, _dt.datetime]] = None,
) -> Dict[str, Any]:
    """fal's usage of one account over ``[start, end)`` (the last 7 days by
    default), in the shape of fal's ``/v1/models/usage`` answer: a
    ``summary`` list of ``endpoint_id``, ``quantity``, ``unit_price``,
    ``cost``, ``unit``, plus what the gateway adds: ``local_cost`` (our
    records), ``diff`` and ``mismatch`` per endpoint, and the account's
    ``total_cost``.

    Answered from the gateway's cost report (an admin token), so fal keys
    stay in the gateway: ``account`` is the account's id or name, or its
    key (matched by its last four characters, see the gateway's masked
    keys). Not kept: the ``time_series`` and ``auth_method`` expansions.
    """
    s, e = _window(start, end)
    aid = _account_id(account)
    costs = _gateway().account_costs(s, e, account_ids=[aid], fal_usage=True)
    if not costs:
        return {"summary": [], "total_cost": 0.0, "mismatch": False, "account_id": aid}
    c = costs[0]
    summary = [
        {
            "endpoint_id": ep.endpoint_id,
            "quantity": ep.fal_quantity,
            "unit_price": (ep.fal_cost_usd / ep.fal_quantity) if ep.fal_quantity else 0.0,
            "cost": ep.fal_cost_usd,
            "unit": ep.unit,
            "local_cost": ep.local_cost_usd,
            "diff": ep.diff_usd,
            "mismatch": ep.mismatch,
        }
        for ep in c.fal_endpoints
    ]
    return {
        "account_id": c.account_id,
        "account_name": c.account_name,
        "summary": summary,
        "total_cost": c.fal_total_cost_usd or 0.0,
        "mismatch": bool(c.fal_mismatch),
        "start": s.isoformat(),
        "end": e.isoformat(),
    }


def print_usage_report(
    account: Union[int, str],
    start: Optional[Union[str, _dt.datetime]] = None,
    end: Optional[Union[str, _dt.datetime]] = None,
) -> Dict[str, Any]:
    """Prints one account's usage per endpoint (fal's figures beside ours)
    and returns what :func:`query_fal_usage` returned."""
    usage = query_fal_usage(account, start, end)
    print(f"fal usage of {usage.get('account_name', account)}: {usage.get('start')} .. {usage.get('end')}")
    print(f"{'endpoint':<48} {'quantity':>10} {'fal USD':>10} {'ours USD':>10} {'diff':>8}")
    for row in usage["summary"]:
        flag = "  !" if row["mismatch"] else ""
        print(
            f"{row['endpoint_id']:<48} {row['quantity']:>10.2f} {row['cost']:>10.4f} "
            f"{row['local_cost']:>10.4f} {row['diff']:>8.4f}{flag}"
        )
    print(f"{'total':<48} {'':>10} {usage['total_cost']:>10.4f}")
    return usage
