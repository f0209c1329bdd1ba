"""Exceptions carrying the gateway's ``extensions.code``.

Every GraphQL error the gateway raises has a stable code (DESIGN.md section
4). The client raises the subclass for that code, so callers catch what
they handle (``except InsufficientBalance``) and let the rest go.
``retry_safe`` says whether sending the same request again, with the same
key, can never write twice; the client retries on its own only the errors
for which that is true *and* a retry may help (see the README's table).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Type


class GatewayError(Exception):
    """A GraphQL error of the gateway (or a transport failure, code ``TRANSPORT``)."""

    code: str = "UNKNOWN"
    #: Sending the same request again (same key) never writes twice.
    retry_safe: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        status: Optional[int] = None,
        path: Optional[List[Any]] = None,
        extensions: Optional[Dict[str, Any]] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.status = status
        self.path = path
        self.extensions = extensions or {}
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InsufficientBalance(GatewayError):
    """The user's available points (balance − held) are short. Nothing was written.

    Safe to send again with the same key (after a recharge it may succeed),
    never retried automatically.
    """

    code = "INSUFFICIENT_BALANCE"
    retry_safe = True


class UserNotFound(GatewayError):
    code = "USER_NOT_FOUND"


class NotFound(GatewayError):
    """The job, hold or consume a refund or capture names does not exist."""

    code = "NOT_FOUND"


class IdempotencyConflict(GatewayError):
    """The key already belongs to a different request. Never retry: pick the right key."""

    code = "IDEMPOTENCY_CONFLICT"


class RefundExceedsConsumed(GatewayError):
    code = "REFUND_EXCEEDS_CONSUMED"


class HoldSettled(GatewayError):
    """The hold was captured, released or expired otherwise already."""

    code = "HOLD_SETTLED"


class InvalidInput(GatewayError):
    code = "INVALID_INPUT"


class Unauthenticated(GatewayError):
    code = "UNAUTHENTICATED"


class Forbidden(GatewayError):
    code = "FORBIDDEN"


class LimitExceeded(GatewayError):
    """A limit: the rate (HTTP 429, ``retry_after`` set), the request's time
    budget (HTTP 504: the mutation committed and was answered, or never
    happened), or a document limit (HTTP 400/200: the request itself is
    too large; never retried).
    """

    code = "LIMIT_EXCEEDED"

    @property
    def retry_safe(self) -> bool:  # type: ignore[override]
        return self.status in (429, 504)


class UpstreamError(GatewayError):
    """fal's API failed (cost reports only; a read)."""

    code = "UPSTREAM_ERROR"
    retry_safe = True


class Unavailable(GatewayError):
    """The gateway's database did not answer (stopped, failing over): HTTP
    503 with ``Retry-After``. Nothing was committed, or it was and the same
    key replays it: safe to send again.
    """

    code = "UNAVAILABLE"
    retry_safe = True


class InternalError(GatewayError):
    """The gateway failed; its transaction rolled back. Safe with the same key."""

    code = "INTERNAL"
    retry_safe = True


class TransportError(GatewayError):
    """No answer: the connection failed, was cut, or timed out. The request
    may or may not have committed; sending it again with the same key
    returns the row it wrote, if it did, and writes it otherwise.
    """

    code = "TRANSPORT"
    retry_safe = True


_BY_CODE: Dict[str, Type[GatewayError]] = {
    c.code: c
    for c in (
        InsufficientBalance,
        UserNotFound,
        NotFound,
        IdempotencyConflict,
        RefundExceedsConsumed,
        HoldSettled,
        InvalidInput,
        Unauthenticated,
        Forbidden,
        LimitExceeded,
        UpstreamError,
        Unavailable,
        InternalError,
    )
}


def from_graphql(
    error: Dict[str, Any], status: Optional[int] = None, retry_after: Optional[float] = None
) -> GatewayError:
    """The exception for one entry of a response's ``errors``."""
    ext = error.get("extensions") or {}
    code = ext.get("code") or "INVALID_INPUT"
    cls = _BY_CODE.get(code, GatewayError)
    return cls(
        error.get("message", code),
        code=code,
        status=status,
        path=error.get("path"),
        extensions=ext,
        retry_after=retry_after,
    )
