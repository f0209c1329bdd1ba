"""The graphql-transport-ws protocol (the one the gateway speaks), for
``balance_changes``: connection_init with the token, one subscribe, then
``next`` messages until the server completes or the caller stops."""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

from .errors import GatewayError, from_graphql

SUBPROTOCOL = "graphql-transport-ws"


def ws_url(http_url: str) -> str:
    if http_url.startswith("https://"):
        return "wss://" + http_url[len("https://") :]
    if http_url.startswith("http://"):
        return "ws://" + http_url[len("http://") :]
    return http_url


def init(token: Optional[str]) -> str:
    payload: Dict[str, Any] = {}
    if token:
        payload["authorization"] = f"Bearer {token}"
    return json.dumps({"type": "connection_init", "payload": payload})


def subscribe(query: str, variables: Dict[str, Any]) -> str:
    return json.dumps(
        {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}
    )


class Closed(Exception):
    """The server completed the subscription."""


def handle(raw: Any) -> Optional[Dict[str, Any]]:
    """The payload data of a ``next``; ``None`` for protocol chatter (the
    caller answers pings itself). Raises the error an ``error`` carries,
    :class:`Closed` on ``complete``."""
    msg = json.loads(raw)
    kind = msg.get("type")
    if kind == "next":
        payload = msg.get("payload") or {}
        if payload.get("errors"):
            raise from_graphql(payload["errors"][0])
        return payload.get("data")
    if kind == "error":
        errors = msg.get("payload") or [{"message": "subscription refused"}]
        raise from_graphql(errors[0])
    if kind == "complete":
        raise Closed()
    if kind == "connection_ack" or kind in ("ping", "pong"):
        return None
    raise GatewayError(f"unexpected message {kind!r}", code="TRANSPORT")


PONG = json.dumps({"type": "pong"})


def is_ping(raw: Any) -> bool:
    try:
        return json.loads(raw).get("type") == "ping"
    except (ValueError, AttributeError):
        return False
