"""Every method of the client against a running gateway, on SQLite and
PostgreSQL (the ``gateway`` fixture runs each module once per engine)."""
from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest

from points_gateway import (
    AsyncClient,
    Client,
    Forbidden,
    HoldSettled,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidInput,
    LimitExceeded,
    NotFound,
    RefundExceedsConsumed,
    RetryPolicy,
    Unauthenticated,
    UserNotFound,
)

from conftest import FAL_KEY


def key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def svc(gateway):
    with Client(gateway.url, gateway.service) as c:
        yield c


@pytest.fixture()
def admin(gateway):
    with Client(gateway.url, gateway.admin) as c:
        yield c


def funded(svc: Client, points: int = 1000):
    u = svc.create_user(key("py-user"))
    svc.recharge(u.id, points, key("order"), money_cents=points)
    return u


def test_users_are_created_once_and_found_by_id_and_uuid(svc, gateway):
    fixed = str(uuid.uuid4())
    a = svc.create_user("张三", uuid=fixed)
    again = svc.create_user("张三", uuid=fixed)
    assert a.id == again.id and a.uuid == fixed
    assert (a.balance, a.held, a.available, a.paid, a.gift) == (0, 0, 0, 0, 0)
    assert svc.user(a.id) == a
    assert svc.user_by_uuid(fixed) == a
    assert svc.user_by_uuid(uuid.uuid4()) is None
    with Client(gateway.url, gateway.token("user", user=a.id)) as me:
        assert me.me().id == a.id
        with pytest.raises(Forbidden) as e:
            me.user(a.id + 1)
        assert e.value.code == "FORBIDDEN"


def test_recharge_consume_refund_with_keys_and_exact_points(svc):
    u = svc.create_user(key("ledger"))
    order = key("pay")
    r = svc.recharge(u.id, 500, order, money_cents=500, pay_type=1, title="充值-500")
    assert (r.type, r.amount, r.balance_after) == ("RECHARGE", 500, 500)
    assert svc.recharge(u.id, 500, order, money_cents=500, pay_type=1, title="充值-500") == r
    g = svc.recharge(
        u.id, 50, key("gift"), kind="GIFT",
        expires_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30),
    )
    assert g.balance_after == 550
    job = key("job")
    c = svc.consume(u.id, 120, "TTS", job, duration=12.5, note="第1集", title="配音-第1集")
    assert (c.type, c.change, c.balance_after, c.duration) == ("CONSUME", -120, 430, 12.5)
    assert c.description == "【配音合成】第1集"
    # The same call again: the same row, nothing written twice.
    assert svc.consume(u.id, 120, "tts", job, duration=12.5, note="第1集", title="配音-第1集") == c
    with pytest.raises(IdempotencyConflict):
        svc.consume(u.id, 121, "tts", job, duration=12.5, note="第1集", title="配音-第1集")
    with pytest.raises(InsufficientBalance) as short:
        svc.consume(u.id, 10_000, "script", key("big"))
    assert short.value.code == "INSUFFICIENT_BALANCE" and short.value.retry_safe
    with pytest.raises(InvalidInput):
        svc.consume(u.id, 5, "tts", key("no-duration"))
    with pytest.raises(InvalidInput):
        svc.consume(u.id, 5, "no_such_type", key("x"))
    with pytest.raises(UserNotFound):
        svc.consume(999_999, 5, "script", key("nobody"))
    # Refunds: keyed parts, then the keyless rest, replayed.
    part = svc.refund("tts", job, amount=20, refund_key=key("rk"), reason="部分失败")
    assert (part.type, part.change, part.balance_after) == ("REFUND", 20, 450)
    rest = svc.refund("tts", job)
    assert rest.amount == 100 and rest.balance_after == 550
    assert svc.refund("tts", job) == rest
    with pytest.raises(RefundExceedsConsumed):
        svc.refund("tts", job, amount=1, refund_key=key("rk"))
    with pytest.raises(NotFound):
        svc.refund("script", key("never-consumed"))
    user = svc.user(u.id)
    assert (user.balance, user.paid + user.gift) == (550, 550)


def test_holds_capture_and_release(svc):
    u = funded(svc, 300)
    job = key("video")
    h = svc.hold(u.id, 200, "video", job, duration=20.0, note="预估", expires_in_secs=600)
    assert (h.status, h.amount) == ("HELD", 200)
    assert svc.user(u.id).available == 100
    with pytest.raises(InsufficientBalance):
        svc.consume(u.id, 150, "script", key("s"))
    cap = svc.capture_hold("video", job, 150, duration=15.0)
    assert cap.status == "CAPTURED" and cap.captured == 150 and cap.entry.amount == 150
    assert svc.capture_hold("video", job, 150, duration=15.0) == cap
    with pytest.raises(HoldSettled):
        svc.release_hold("video", job)
    other = key("voice")
    svc.hold(u.id, 100, "voice_clone", other)
    rel = svc.release_hold("voice_clone", other, reason="任务取消")
    assert rel.status == "RELEASED"
    listed = svc.holds(u.id, first=10)
    assert {h.source_id for h in listed.items} == {job, other}
    assert [h.source_id for h in svc.holds(u.id, status="released").items] == [other]
    assert svc.user(u.id).balance == 150


def test_usage_details_statements_and_source_types(svc, admin):
    u = funded(svc, 1000)
    for i in range(25):
        svc.consume(u.id, 3, "script", key(f"page{i}"))
    page = svc.usage_details(u.id, first=10)
    assert len(page.items) == 10 and page.has_next and page.total_count == 26
    rows = list(svc.iter_usage_details(u.id, first=7))
    assert len(rows) == 26 and rows[0].balance_after == 1000 - 75
    assert [r.id for r in rows] == sorted((r.id for r in rows), reverse=True)
    consumes = svc.usage_details(u.id, types=["consume"], source_types=["SCRIPT"], first=100)
    assert len(consumes.items) == 25
    written = admin.usage_details(u.id, first=1, with_writer=True).items[0]
    assert written.written_by == "service:py-tests"
    with pytest.raises(Forbidden):
        svc.usage_details(u.id, first=1, with_writer=True)
    st = svc.points_statement(u.id, first=5)
    assert st.items[0].points == -3 and st.total_count == 26
    names = {t.name: t for t in svc.source_types()}
    assert names["tts"].duration == "REQUIRED" and names["tts"].label == "【配音合成】"
    data = svc.execute("query($id: Int!) { user(id: $id) { balance } }", {"id": u.id})
    assert data == {"user": {"balance": 925}}


def test_cost_report_and_fal_usage_keep_keys_secret(admin, svc, fal):
    accounts = admin.fal_accounts()
    assert accounts and all("…" in a["maskedKey"] for a in accounts)
    end = dt.datetime.now(dt.timezone.utc)
    start = end - dt.timedelta(days=120)
    costs = admin.account_costs(start, end)
    assert sum(c.task_count for c in costs) > 0
    one = admin.account_costs(start, end, account_ids=[costs[0].account_id], fal_usage=True)[0]
    assert one.fal_total_cost_usd == pytest.approx(0.1)
    flux = [e for e in one.fal_endpoints if e.endpoint_id == "fal-ai/flux/dev"]
    assert len(flux) == 1 and flux[0].fal_cost_usd == pytest.approx(0.1)
    assert fal.keys_seen, "the gateway asked fal"
    with pytest.raises(Forbidden):
        svc.account_costs(start, end)
    raw = admin.execute("query { falAccounts { maskedKey } }")
    for seen in fal.keys_seen:
        assert seen.removeprefix("Key ") not in str(raw)


def test_errors_carry_their_codes_and_bad_tokens_are_refused(gateway):
    with Client(gateway.url, "not-a-token") as bad:
        with pytest.raises(Unauthenticated) as e:
            bad.source_types()
        assert e.value.code == "UNAUTHENTICATED" and not e.value.retry_safe
    with Client(gateway.url, gateway.token("partner")) as partner:
        with pytest.raises(Forbidden):
            partner.user(1)
    with Client(gateway.url, gateway.service) as svc:
        deep = "query { " + "me { " * 20 + "id" + " }" * 20 + " }"
        with pytest.raises((LimitExceeded, InvalidInput)) as e2:
            svc.execute(deep)
        assert not e2.value.retry_safe


def test_rate_limits_are_per_service_and_waited_out_with_retry_after(workdir, fal):
    """Services over their rate get 429 with Retry-After; the client waits
    and succeeds. Another named service shares none of that budget."""
    from conftest import Gateway, database_for

    g = Gateway(database_for("sqlite", workdir), workdir, fal.url, env={"RATE_LIMIT_SERVICE": "1"})
    try:
        busy = g.token("service", name="busy")
        calm = g.token("service", name="calm")
        once = RetryPolicy(max_attempts=1)
        with Client(g.url, busy, retry=once) as c:
            limited = []
            for _ in range(6):
                try:
                    c.source_types()
                except LimitExceeded as e:
                    limited.append(e)
            assert limited and all(e.status == 429 and e.retry_after for e in limited)
            assert all(e.retry_safe for e in limited)
        with Client(g.url, calm, retry=once) as other:
            assert other.source_types(), "the calm service was not limited by the busy one"
        with Client(g.url, busy, retry=RetryPolicy(max_attempts=8, max_retry_after=5)) as patient:
            for _ in range(3):
                assert patient.source_types()
    finally:
        g.stop()


def test_async_client_does_the_same(gateway):
    async def main() -> None:
        async with AsyncClient(gateway.url, gateway.service) as a:
            u = await a.create_user(key("async"))
            await a.recharge(u.id, 100, key("o"), money_cents=100)
            jobs = [key("aj") for _ in range(10)]
            rows = await asyncio.gather(*(a.consume(u.id, 7, "script", j) for j in jobs))
            assert sorted(r.balance_after for r in rows) == list(range(30, 100, 7))
            again = await asyncio.gather(*(a.consume(u.id, 7, "script", j) for j in jobs))
            assert sorted(r.id for r in again) == sorted(r.id for r in rows)
            assert (await a.user(u.id)).balance == 30
            with pytest.raises(InsufficientBalance):
                await a.consume(u.id, 31, "script", key("aj"))
            seen = [r async for r in a.iter_usage_details(u.id, first=4)]
            assert len(seen) == 11
            assert (await a.user_by_uuid(u.uuid)).id == u.id

    asyncio.run(main())
