"""Typed client of the points gateway.

>>> from points_gateway import Client
>>> gw = Client("http://127.0.0.1:8000", token)
>>> row = gw.consume(7, 30, "tts", "job-123", duration=12.5)

See the package README for the retry table and :mod:`points_gateway.compat`
for drop-in replacements of the platforms' old functions.
"""
from ._transport import RetryPolicy
from ._version import __version__
from .aio import AsyncClient
from .client import Client
from .errors import (
    Forbidden,
    GatewayError,
    HoldSettled,
    IdempotencyConflict,
    InsufficientBalance,
    InternalError,
    InvalidInput,
    LimitExceeded,
    NotFound,
    RefundExceedsConsumed,
    TransportError,
    Unauthenticated,
    Unavailable,
    UpstreamError,
    UserNotFound,
)
from .models import (
    AccountCost,
    BalanceChange,
    EndpointUsage,
    Hold,
    Page,
    PointsDetail,
    SourceTypeInfo,
    UsageDetail,
    User,
)

__all__ = [
    "AccountCost",
    "AsyncClient",
    "BalanceChange",
    "Client",
    "EndpointUsage",
    "Forbidden",
    "GatewayError",
    "Hold",
    "HoldSettled",
    "IdempotencyConflict",
    "InsufficientBalance",
    "InternalError",
    "InvalidInput",
    "LimitExceeded",
    "NotFound",
    "Page",
    "PointsDetail",
    "RefundExceedsConsumed",
    "RetryPolicy",
    "SourceTypeInfo",
    "TransportError",
    "Unauthenticated",
    "Unavailable",
    "UpstreamError",
    "UsageDetail",
    "User",
    "UserNotFound",
    "__version__",
]
