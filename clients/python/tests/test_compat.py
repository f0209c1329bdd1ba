"""points_gateway.compat on a database the platforms built with their
own ORMs (Alembic + SQLAlchemy for mjk, peewee for ts), adopted by the
gateway: the compat functions give the old answers, and a ts call site
moves by changing one import."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import types
import uuid
from pathlib import Path

import pytest

from points_gateway import Client, UserNotFound, compat

from conftest import REPO, Gateway, fresh_postgres, run_cli

LEGACY = REPO / "tests" / "legacy"
FIXTURES = Path(__file__).parent / "fixtures"
OLD_IMPORT = "from app.api.computeHub import get_user_total_money, deduct_user_money_by_id\n"
NEW_IMPORT = "from points_gateway.compat import get_user_total_money, deduct_user_money_by_id\n"


def legacy(*args: str, cwd: Path = LEGACY, env=None) -> str:
    p = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True,
        env=dict(os.environ, **(env or {})), timeout=600,
    )
    assert p.returncode == 0, f"{args} failed:\n{p.stdout}\n{p.stderr}"
    return p.stdout


@pytest.fixture(scope="module")
def adopted(workdir, fal):
    url = fresh_postgres()
    pg = url.replace("postgres://", "postgresql://", 1)
    psycopg = url.replace("postgres://", "postgresql+psycopg2://", 1)
    legacy("-m", "alembic", "upgrade", "head", cwd=LEGACY / "mjk", env={"MJK_DB_URL": psycopg})
    legacy("fill.py", "--create-ts", "--ts", pg, "--mjk", psycopg)
    out = run_cli(url, "adopt", "--apply", "--opening-balance", "platform")
    assert "Adopted:" in out, out
    run_cli(url, "source-types", "set", "ts_charge", "--label", "【消费】", "--duration", "optional")
    g = Gateway(url, workdir, fal.url)
    # The old code, in this process, on the same database.
    for p in (str(LEGACY / "ts"), str(LEGACY / "mjk")):
        if p not in sys.path:
            sys.path.insert(0, p)
    import ts_models

    ts_models.connect(pg)
    from sqlalchemy import create_engine

    g.mjk = create_engine(psycopg)  # type: ignore[attr-defined]
    g.ts = ts_models  # type: ignore[attr-defined]
    compat.configure(Client(g.url, g.service), charge_type="ts_charge")
    yield g
    g.stop()


def detail_rows(ts, user_id):
    return list(ts.PointsDetail.select().where(ts.PointsDetail.user_id == user_id).order_by(ts.PointsDetail.id))


def test_totals_are_the_old_totals_for_every_ts_user(adopted):
    ts = adopted.ts
    users = [u.id for u in ts.User.select()]
    assert len(users) >= 20
    for uid in users:
        assert compat.get_user_total_money(uid) == ts.get_user_total_money(uid), uid


def test_deduct_answers_like_the_old_function_and_keeps_the_old_views_true(adopted):
    ts = adopted.ts
    uid = max((u for u in ts.User.select()), key=lambda u: u.money + u.gift_money).id
    start = ts.get_user_total_money(uid)
    # A gift, through compat: the old view (ts_users.gift_money) follows.
    gift_before = ts.User.get_by_id(uid).gift_money
    compat.add_user_money(uid, 20, "活动赠送", "gift-" + uuid.uuid4().hex[:6], "gift")
    assert ts.User.get_by_id(uid).gift_money == gift_before + 20
    before = ts.get_user_total_money(uid)
    assert before == start + 20 == compat.get_user_total_money(uid)
    rows_before = len(detail_rows(ts, uid))
    # Short: False, nothing written.
    too_much = "too-much-" + uuid.uuid4().hex[:6]
    assert compat.deduct_user_money_by_id(uid, before + 1, "视频生成-x", too_much) is False
    assert len(detail_rows(ts, uid)) == rows_before
    # Enough: True; gift points first; the statement row as the old code wrote it.
    order = "vid-" + uuid.uuid4().hex[:8]
    assert compat.deduct_user_money_by_id(uid, 7, f"视频生成-{order}", order) is True
    assert compat.deduct_user_money_by_id(uid, 7, f"视频生成-{order}", order) is True  # retried: once
    assert ts.get_user_total_money(uid) == before - 7 == compat.get_user_total_money(uid)
    assert ts.User.get_by_id(uid).gift_money == gift_before + 20 - 7
    last = detail_rows(ts, uid)[-1]
    assert (last.points, last.order_id, last.title, last.source_type) == (
        -7, order, f"视频生成-{order}", "consume")
    assert len(detail_rows(ts, uid)) == rows_before + 1
    money = list(ts.FinancialTransactions.select().where(ts.FinancialTransactions.order_id == order))
    assert [(m.money, m.title, m.transaction_type, m.pay_type, m.is_cash) for m in money] == [
        (-7, f"视频生成-{order}", 1, 0, 0)]
    # Zero: nothing to book, True as before.
    assert compat.deduct_user_money_by_id(uid, 0, "免费", "free-" + uuid.uuid4().hex[:6]) is True
    assert len(detail_rows(ts, uid)) == rows_before + 1
    # A paid recharge, and the charge refunded.
    compat.add_user_money(uid, 100, "充值100", "pay-" + uuid.uuid4().hex[:6], "recharge", cents=1000, pay_type=2)
    compat.add_user_money(uid, 7, "退款", order, "refund")
    assert ts.get_user_total_money(uid) == before + 100 == compat.get_user_total_money(uid)
    with pytest.raises(ValueError):
        compat.add_user_money(uid, 5, "no money", "nm-" + uuid.uuid4().hex[:6], "recharge")


def test_a_ts_call_site_moves_by_changing_one_import(adopted):
    ts = adopted.ts
    source = (FIXTURES / "video_billing.py").read_text(encoding="utf-8")
    assert OLD_IMPORT in source
    moved = source.replace(OLD_IMPORT, NEW_IMPORT)
    changed = [(a, b) for a, b in zip(source.splitlines(), moved.splitlines()) if a != b]
    assert len(changed) == 1 and len(source.splitlines()) == len(moved.splitlines())

    def load(name: str, text: str):
        m = types.ModuleType(name)
        exec(compile(text, f"{name}.py", "exec"), m.__dict__)
        return m

    # The ts platform's `app.api.computeHub`, as its callers import it: the
    # old functions (tests/legacy/ts/ts_models.py). Only while the old
    # caller is loaded: the mjk system's package is also called `app`.
    hub = types.ModuleType("app.api.computeHub")
    for f in ("get_user_total_money", "deduct_user_money_by_id", "add_user_money"):
        setattr(hub, f, getattr(ts, f))
    saved = {k: sys.modules.get(k) for k in ("app", "app.api", "app.api.computeHub")}
    sys.modules.update(
        {"app": types.ModuleType("app"), "app.api": types.ModuleType("app.api"), "app.api.computeHub": hub}
    )
    try:
        old = load("video_billing_old", source)
    finally:
        for k, m in saved.items():
            if m is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = m
    new = load("video_billing_new", moved)
    by_balance = sorted(ts.User.select(), key=lambda u: u.money + u.gift_money)
    rich_a, rich_b = by_balance[-1].id, by_balance[-2].id
    poor = by_balance[0]
    too_long = (poor.money + poor.gift_money) // 10 + 1
    # The old code (coexisting: its writes are absorbed) and the moved code
    # answer alike, and both keep both views of the balance equal.
    for module, uid in ((old, rich_a), (new, rich_b)):
        before = ts.get_user_total_money(uid)
        task = f"task-{module.__name__[-3:]}-{uuid.uuid4().hex[:6]}"
        assert module.bill_video(uid, 3.5, task) == {"ok": True, "left": before - 35}
        assert compat.get_user_total_money(uid) == ts.get_user_total_money(uid) == before - 35
        assert detail_rows(ts, uid)[-1].title == f"视频生成-{task}"
        # The money page's row: the same from the old code and the moved one.
        money = ts.FinancialTransactions.select().where(ts.FinancialTransactions.order_id == task).get()
        assert (money.user_id, money.money, money.title, money.transaction_type, money.is_cash) == (
            uid, -35, f"视频生成-{task}", 1, 0)
    for module in (old, new):
        big = f"big-{uuid.uuid4().hex[:6]}"
        assert module.bill_video(poor.id, too_long, big) == {"ok": False, "reason": "余额不足"}
    verify = subprocess.run(
        [os.environ.get("GATEWAY_BIN", str(REPO / "target" / "debug" / "points-gateway")), "verify"],
        env=dict(os.environ, DATABASE_URL=adopted.database_url, GATEWAY_JWT_SECRET="x" * 32),
        capture_output=True, text=True, timeout=300,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_the_mjk_consume_finds_users_by_uuid_and_agrees_with_the_old_balance(adopted):
    from sqlalchemy import text
    from sqlalchemy.orm import Session
    from app.services import points

    with Session(adopted.mjk) as s:
        uid = s.execute(text(
            "SELECT user_id FROM mjk_point_transactions GROUP BY user_id "
            "ORDER BY MAX(id) DESC LIMIT 1")).scalar_one()
        before = points.get_balance(s, uid)
    assert before > 5
    job = "mjk-job-" + uuid.uuid4().hex[:8]
    row = compat.consume(uid, 5, "tts", job, duration=2.5, description="第3集")
    assert row is not None and row.balance_after == before - 5 and row.description == "【配音合成】第3集"
    assert compat.consume(uid, 5, "tts", job, duration=2.5, description="第3集") == row
    assert compat.consume(uid, before * 10, "script", "mjk-big-" + uuid.uuid4().hex[:6]) is None
    with Session(adopted.mjk) as s:
        assert points.get_balance(s, uid) == before - 5
    with pytest.raises(UserNotFound):
        compat.consume(uuid.uuid4(), 1, "script", "nobody-" + uuid.uuid4().hex[:6])


def test_fal_usage_is_answered_from_the_cost_report(adopted, capsys):
    ts = adopted.ts
    account = ts.FalAccount.select().order_by(ts.FalAccount.id).first()
    with Client(adopted.url, adopted.admin) as admin:
        compat.configure(admin)
        try:
            # fill.py's jobs run from 2025-12-01 on; a report spans at most 366 days.
            start = dt.datetime(2025, 11, 30, tzinfo=dt.timezone.utc)
            end = start + dt.timedelta(days=360)
            by_name = compat.query_fal_usage(account.name, start, end)
            by_key = compat.query_fal_usage(account.api_key, start, end)
            assert by_name["account_id"] == by_key["account_id"] == account.id
            flux = [r for r in by_name["summary"] if r["endpoint_id"] == "fal-ai/flux/dev"]
            assert len(flux) == 1 and flux[0]["cost"] == pytest.approx(0.1)
            assert flux[0]["unit_price"] == pytest.approx(0.025)
            assert by_name["total_cost"] == pytest.approx(0.1)
            printed = compat.print_usage_report(account.id, start, end)
            out = capsys.readouterr().out
            assert "fal-ai/flux/dev" in out and printed["account_id"] == account.id
            assert account.api_key not in out and account.api_key not in str(by_key)
        finally:
            compat.configure(Client(adopted.url, adopted.service))
