"""The synchronous client."""
from __future__ import annotations

import time
from typing import Any, Dict, Iterator, Optional

import httpx

from . import _ops, _transport, _ws
from ._methods import Methods
from ._version import __version__
from .errors import GatewayError
from .models import BalanceChange, UsageDetail

USER_AGENT = f"points-gateway-client/{__version__}"


class Client(Methods):
    """A connection pool to one gateway with one bearer token.

    ``url`` is the gateway's base (``http://host:8000``) or its
    ``/graphql`` endpoint. Safe to share between threads.
    """

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        *,
        timeout: float = 15.0,
        retry: Optional[_transport.RetryPolicy] = None,
        http: Optional[httpx.Client] = None,
    ) -> None:
        self.endpoint = _transport.endpoint(url)
        self.token = token
        self.retry = retry or _transport.RetryPolicy()
        self._http = http or httpx.Client(timeout=timeout)
        self._timeout = timeout

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def execute(self, query: str, variables: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Any operation; the ``data`` object. Retried like the typed methods."""
        return self._run(_ops.Op(query, variables or {}, lambda d: d, ""))

    def _run(self, op: _ops.Op) -> Any:
        body = {"query": op.query, "variables": op.variables}
        hdrs = _transport.headers(self.token, USER_AGENT)
        attempts = _transport.Attempts(self.retry)
        while True:
            err: GatewayError
            try:
                resp = self._http.post(self.endpoint, json=body, headers=hdrs)
            except httpx.TransportError as e:
                err = _transport.transport_error(e)
            else:
                value, failed = _transport.read(resp, op.field)
                if failed is None:
                    return op.parse(value)
                err = failed
            time.sleep(attempts.pause_after(err))

    def iter_usage_details(self, user_id: Optional[int] = None, **kw: Any) -> Iterator[UsageDetail]:
        """Every row of the filter, page after page."""
        after = None
        while True:
            page = self.usage_details(user_id, after=after, **kw)
            yield from page.items
            if not page.has_next:
                return
            after = page.end_cursor

    def balance_changes(self, user_id: Optional[int] = None) -> Iterator[BalanceChange]:
        """Balance events over WebSocket (graphql-transport-ws), until the
        iterator is closed or the server ends the subscription."""
        from websockets.sync.client import connect

        with connect(
            _ws.ws_url(self.endpoint),
            subprotocols=[_ws.SUBPROTOCOL],  # type: ignore[list-item]
            open_timeout=self._timeout,
        ) as ws:
            ws.send(_ws.init(self.token))
            ws.send(_ws.subscribe(_ops.BALANCE_CHANGED, {"u": user_id}))
            while True:
                raw = ws.recv()
                if _ws.is_ping(raw):
                    ws.send(_ws.PONG)
                    continue
                try:
                    data = _ws.handle(raw)
                except _ws.Closed:
                    return
                if data is not None:
                    yield BalanceChange.from_json(data["balanceChanged"])

