"""The asyncio client: the same methods, awaited."""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Dict, Optional

import httpx

from . import _ops, _transport, _ws
from ._methods import Methods
from .client import USER_AGENT
from .errors import GatewayError
from .models import BalanceChange, UsageDetail


class AsyncClient(Methods):
    """Like :class:`points_gateway.Client`; every method returns an awaitable."""

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        *,
        timeout: float = 15.0,
        retry: Optional[_transport.RetryPolicy] = None,
        http: Optional[httpx.AsyncClient] = None,
    ) -> None:
        self.endpoint = _transport.endpoint(url)
        self.token = token
        self.retry = retry or _transport.RetryPolicy()
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._timeout = timeout

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def execute(self, query: str, variables: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return await self._run(_ops.Op(query, variables or {}, lambda d: d, ""))

    async def _run(self, op: _ops.Op) -> Any:
        body = {"query": op.query, "variables": op.variables}
        hdrs = _transport.headers(self.token, USER_AGENT)
        attempts = _transport.Attempts(self.retry)
        while True:
            err: GatewayError
            try:
                resp = await self._http.post(self.endpoint, json=body, headers=hdrs)
            except httpx.TransportError as e:
                err = _transport.transport_error(e)
            else:
                value, failed = _transport.read(resp, op.field)
                if failed is None:
                    return op.parse(value)
                err = failed
            await asyncio.sleep(attempts.pause_after(err))

    async def iter_usage_details(
        self, user_id: Optional[int] = None, **kw: Any
    ) -> AsyncIterator[UsageDetail]:
        after = None
        while True:
            page = await self.usage_details(user_id, after=after, **kw)
            for item in page.items:
                yield item
            if not page.has_next:
                return
            after = page.end_cursor

    async def balance_changes(self, user_id: Optional[int] = None) -> AsyncIterator[BalanceChange]:
        """Balance events over WebSocket, as an async iterator."""
        from websockets.asyncio.client import connect

        async with connect(
            _ws.ws_url(self.endpoint),
            subprotocols=[_ws.SUBPROTOCOL],  # type: ignore[list-item]
            open_timeout=self._timeout,
        ) as ws:
            await ws.send(_ws.init(self.token))
            await ws.send(_ws.subscribe(_ops.BALANCE_CHANGED, {"u": user_id}))
            while True:
                raw = await ws.recv()
                if _ws.is_ping(raw):
                    await ws.send(_ws.PONG)
                    continue
                try:
                    data = _ws.handle(raw)
                except _ws.Closed:
                    return
                if data is not None:
                    yield BalanceChange.from_json(data["balanceChanged"])
