"""Reading an HTTP answer into data or an exception, and the retry rule;
shared by the sync and the async client."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import httpx

from .errors import GatewayError, InsufficientBalance, TransportError, from_graphql


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to send a request again.

    Only errors whose ``retry_safe`` is true are retried (the same document
    and variables, so the same idempotency key), and never
    ``INSUFFICIENT_BALANCE`` (it stays short until someone recharges).
    """

    #: Tries in all, the first included.
    max_attempts: int = 4
    #: First pause in seconds; doubled each time, with jitter.
    backoff: float = 0.2
    max_backoff: float = 5.0
    #: A ``Retry-After`` longer than this is not waited for: the error is raised.
    max_retry_after: float = 30.0

    def should_retry(self, err: GatewayError, attempt: int) -> bool:
        if attempt + 1 >= self.max_attempts:
            return False
        if isinstance(err, InsufficientBalance) or not err.retry_safe:
            return False
        return err.retry_after is None or err.retry_after <= self.max_retry_after

    def delay(self, err: GatewayError, attempt: int) -> float:
        if err.retry_after is not None:
            return err.retry_after
        pause = min(self.max_backoff, self.backoff * (2**attempt))
        return pause * (0.5 + random.random() / 2)


class Attempts:
    """The tries of one request: after each failure, how long to wait
    before the next, or the failure raised when there is to be none."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.attempt = 0

    def pause_after(self, err: GatewayError) -> float:
        if not self.policy.should_retry(err, self.attempt):
            raise err
        pause = self.policy.delay(err, self.attempt)
        self.attempt += 1
        return pause


def endpoint(url: str) -> str:
    """The ``/graphql`` URL, given the gateway's base or the endpoint itself."""
    return url if url.rstrip("/").endswith("/graphql") else url.rstrip("/") + "/graphql"


def _retry_after(resp: httpx.Response) -> Optional[float]:
    v = resp.headers.get("retry-after")
    if v is None:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        return None


def read(resp: httpx.Response, field: str) -> Tuple[Optional[Any], Optional[GatewayError]]:
    """The value of ``data[field]`` (all of ``data`` for ``field=""``), or
    the error the answer carries."""
    status = resp.status_code
    try:
        body: Dict[str, Any] = resp.json()
    except (json.JSONDecodeError, ValueError):
        # Not a GraphQL answer (a proxy's 502, a gateway shutting down).
        return None, TransportError(
            f"HTTP {status} without a GraphQL body", status=status, retry_after=_retry_after(resp)
        )
    if not isinstance(body, dict):
        return None, TransportError(f"HTTP {status}: unexpected body", status=status)
    errors = body.get("errors") or []
    if errors:
        return None, from_graphql(errors[0], status=status, retry_after=_retry_after(resp))
    if status >= 500 or "data" not in body or not isinstance(body["data"], dict):
        return None, TransportError(f"HTTP {status} without data", status=status)
    return (body["data"].get(field) if field else body["data"]), None


def transport_error(e: Exception) -> TransportError:
    return TransportError(f"{type(e).__name__}: {e}")


def headers(token: Optional[str], user_agent: str) -> Dict[str, str]:
    h = {"Accept": "application/json", "User-Agent": user_agent}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h
