"""balance_changes over graphql-transport-ws receives a change."""
from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid

from points_gateway import AsyncClient, Client


def test_a_partner_receives_a_consume_as_it_happens(gateway):
    with Client(gateway.url, gateway.service) as svc:
        u = svc.create_user(f"sub-{uuid.uuid4().hex[:8]}")
        svc.recharge(u.id, 100, f"sub-o-{uuid.uuid4().hex[:8]}", money_cents=100)
    got: "queue.Queue" = queue.Queue()
    partner = Client(gateway.url, gateway.token("partner", name="dashboard"))

    def listen() -> None:
        for change in partner.balance_changes(u.id):
            got.put(change)
            if change.entry is not None and change.entry.type == "CONSUME":
                return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    time.sleep(1.0)  # subscribed before the write
    with Client(gateway.url, gateway.service) as svc:
        row = svc.consume(u.id, 30, "script", f"sub-job-{uuid.uuid4().hex[:8]}")
    deadline = time.time() + 20
    change = None
    while time.time() < deadline:
        c = got.get(timeout=20)
        if c.entry is not None and c.entry.id == row.id:
            change = c
            break
    assert change is not None
    assert (change.user_id, change.balance, change.available, change.resync) == (u.id, 70, 70, False)
    t.join(timeout=5)


def test_the_async_iterator_receives_a_change(gateway):
    async def main() -> None:
        async with AsyncClient(gateway.url, gateway.service) as svc:
            u = await svc.create_user(f"asub-{uuid.uuid4().hex[:8]}")
            await svc.recharge(u.id, 100, f"asub-o-{uuid.uuid4().hex[:8]}", money_cents=100)
        watcher = AsyncClient(gateway.url, gateway.token("user", user=u.id))

        async def first_consume():
            async for change in watcher.balance_changes():
                if change.entry is not None and change.entry.type == "CONSUME":
                    return change

        task = asyncio.create_task(first_consume())
        await asyncio.sleep(1.0)
        async with AsyncClient(gateway.url, gateway.service) as svc:
            await svc.consume(u.id, 25, "script", f"asub-job-{uuid.uuid4().hex[:8]}")
        change = await asyncio.wait_for(task, 20)
        assert (change.user_id, change.balance) == (u.id, 75)
        await watcher.aclose()

    asyncio.run(main())
