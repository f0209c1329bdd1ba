"""Retries after a dropped connection: a proxy lets the consume reach the
gateway (which commits it) and cuts the reply; the client sends it again
with the same key and gets the original row, written once."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from points_gateway import AsyncClient, Client, RetryPolicy, TransportError

from conftest import CuttingProxy


@pytest.fixture()
def proxy(gateway):
    p = CuttingProxy(gateway.url)
    yield p
    p.close()


def ledger_rows(admin: Client, user_id: int):
    return list(admin.iter_usage_details(user_id, first=100))


def test_a_consume_whose_reply_is_cut_is_retried_and_written_once(gateway, proxy):
    with Client(gateway.url, gateway.admin) as admin, Client(proxy.url, gateway.service) as svc:
        u = svc.create_user(f"cut-{uuid.uuid4().hex[:8]}")
        svc.recharge(u.id, 100, f"cut-o-{uuid.uuid4().hex[:8]}", money_cents=100)
        job = f"cut-job-{uuid.uuid4().hex[:8]}"
        proxy.cuts = 1
        row = svc.consume(u.id, 40, "script", job)
        assert proxy.cut_count == 1, "the first reply was cut"
        assert (row.balance_before, row.balance_after) == (100, 60)
        rows = ledger_rows(admin, u.id)
        consumes = [r for r in rows if r.type == "CONSUME"]
        assert [r.id for r in consumes] == [row.id], "written once, and the retry got that row"
        assert admin.user(u.id).balance == 60
        # Cut twice more than the client will try: it gives up with TransportError,
        # and still nothing is written twice.
        with Client(proxy.url, gateway.service, retry=RetryPolicy(max_attempts=2, backoff=0.01)) as impatient:
            proxy.cuts = 2
            with pytest.raises(TransportError) as e:
                impatient.consume(u.id, 10, "script", job + "-b")
            assert e.value.retry_safe
        again = svc.consume(u.id, 10, "script", job + "-b")
        assert again.balance_after == 50
        assert admin.user(u.id).balance == 50
        assert len([r for r in ledger_rows(admin, u.id) if r.type == "CONSUME"]) == 2


def test_the_async_client_retries_a_cut_reply_too(gateway, proxy):
    async def main() -> None:
        async with AsyncClient(proxy.url, gateway.service) as svc:
            u = await svc.create_user(f"acut-{uuid.uuid4().hex[:8]}")
            proxy.cuts = 1
            await svc.recharge(u.id, 70, f"acut-o-{uuid.uuid4().hex[:8]}", money_cents=70)
            assert proxy.cut_count == 1
            assert (await svc.user(u.id)).balance == 70

    asyncio.run(main())


def test_errors_that_a_retry_cannot_fix_are_never_retried(gateway, proxy):
    with Client(gateway.url, gateway.service) as svc:
        u = svc.create_user(f"noretry-{uuid.uuid4().hex[:8]}")
    with Client(proxy.url, gateway.service) as svc:
        before = proxy.cut_count
        from points_gateway import InsufficientBalance

        with pytest.raises(InsufficientBalance):
            svc.consume(u.id, 5, "script", f"nr-{uuid.uuid4().hex[:8]}")
        assert proxy.cut_count == before


def test_the_client_follows_the_readme_retry_table():
    """Each row of the README's table: the client retries exactly the
    errors the table says it retries (read from the README, so the two
    cannot drift apart)."""
    import re
    from pathlib import Path

    from points_gateway.errors import from_graphql

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Retries", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| ") and not r.startswith("| code") and "---" not in r]
    policy = RetryPolicy()
    checked = 0
    for row in rows:
        cols = [c.strip() for c in row.strip("|").split("|")]
        codes = re.findall(r"`([A-Z_]+)`", cols[0])
        statuses = [int(s) for s in re.findall(r"\d{3}", cols[1])] or [200]
        expect = cols[3].startswith("yes")
        for status in statuses:
            if codes:
                errors = [from_graphql({"message": "m", "extensions": {"code": c}}, status=status) for c in codes]
            else:
                errors = [TransportError("no answer", status=status if "5xx" in cols[1] else None)]
            for err in errors:
                assert policy.should_retry(err, 0) == expect, (row, err)
                checked += 1
    assert checked >= 15


def test_the_package_parses_as_python_3_9():
    """The package promises Python ≥ 3.9: no syntax of later versions."""
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "points_gateway"
    files = sorted(src.glob("*.py"))
    assert len(files) >= 10
    for f in files:
        ast.parse(f.read_text(encoding="utf-8"), filename=str(f), feature_version=(3, 9))
