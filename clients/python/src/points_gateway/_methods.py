"""The API's methods, written once: each builds an operation and hands it
to ``self._run``, which the sync client runs and the async client returns
as an awaitable. Keys: every write takes the key the gateway makes it
idempotent on (``source_id`` of a job, ``order_id`` of a recharge), so a
retry of the same call writes nothing twice; ``refund_key`` may be left
out (one keyless refund per job) and ``create_user`` makes its uuid
itself."""
from __future__ import annotations

import datetime as _dt
from typing import Any, List, Optional, Sequence

from . import _ops


class Methods:
    def _run(self, op: _ops.Op) -> Any:  # pragma: no cover - provided by the clients
        raise NotImplementedError

    # -- writes (service and admin tokens) ---------------------------------

    def consume(
        self,
        user_id: int,
        amount: int,
        source_type: str,
        source_id: str,
        *,
        duration: Optional[float] = None,
        note: Optional[str] = None,
        title: Optional[str] = None,
    ) -> Any:
        """Spends ``amount`` points for the job ``(source_type, source_id)``.

        Idempotent on that key: the same call again returns the original row.
        ``duration`` (seconds) is required for types billed by the second
        (``tts``, ``video``). ``title`` is the ts statement's title.
        Raises :class:`InsufficientBalance` when the available points are short.
        """
        return self._run(
            _ops.consume(user_id, amount, source_type, source_id, duration, note, title)
        )

    def refund(
        self,
        source_type: str,
        source_id: str,
        *,
        amount: Optional[int] = None,
        refund_key: Optional[str] = None,
        reason: Optional[str] = None,
    ) -> Any:
        """Gives back points of the job's consume: ``amount`` or everything not refunded yet.

        Without ``refund_key`` this is the job's one keyless refund: sent
        again it returns the same row. Give a key per part to refund a job
        in several parts.
        """
        return self._run(_ops.refund(source_type, source_id, refund_key, amount, reason))

    def recharge(
        self,
        user_id: int,
        amount: int,
        order_id: str,
        *,
        kind: str = "PAID",
        money_cents: Optional[int] = None,
        pay_type: Optional[int] = None,
        expires_at: Optional[_dt.datetime] = None,
        title: Optional[str] = None,
    ) -> Any:
        """Adds a batch of points; idempotent on ``order_id``. ``PAID`` needs ``money_cents``."""
        return self._run(
            _ops.recharge(user_id, amount, order_id, kind, money_cents, pay_type, expires_at, title)
        )

    def hold(
        self,
        user_id: int,
        amount: int,
        source_type: str,
        source_id: str,
        *,
        duration: Optional[float] = None,
        note: Optional[str] = None,
        expires_in_secs: Optional[int] = None,
    ) -> Any:
        """Reserves ``amount`` points for a job before it runs; idempotent on the job's key."""
        return self._run(
            _ops.hold(user_id, amount, source_type, source_id, duration, note, expires_in_secs)
        )

    def capture_hold(
        self,
        source_type: str,
        source_id: str,
        amount: int,
        *,
        duration: Optional[float] = None,
        note: Optional[str] = None,
    ) -> Any:
        """Settles the job's hold for its real cost (at most the points held)."""
        return self._run(_ops.capture_hold(source_type, source_id, amount, duration, note))

    def release_hold(self, source_type: str, source_id: str, *, reason: Optional[str] = None) -> Any:
        """Gives every held point back (the job failed or was cancelled)."""
        return self._run(_ops.release_hold(source_type, source_id, reason))

    def create_user(self, name: str, *, uuid: Optional[str] = None, id: Optional[int] = None) -> Any:
        """Creates a user (or returns the one with this uuid and name)."""
        return self._run(_ops.create_user(name, uuid, id))

    # -- reads -------------------------------------------------------------

    def user(self, id: int) -> Any:
        """The user with ts id ``id``, or ``None``."""
        return self._run(_ops.user(id))

    def user_by_uuid(self, uuid: Any) -> Any:
        """The user with mjk ledger uuid ``uuid``, or ``None``."""
        return self._run(_ops.user_by_uuid(str(uuid)))

    def me(self) -> Any:
        return self._run(_ops.me())

    def usage_details(
        self,
        user_id: Optional[int] = None,
        *,
        first: int = 20,
        after: Optional[str] = None,
        types: Optional[Sequence[str]] = None,
        source_types: Optional[Sequence[str]] = None,
        since: Optional[_dt.datetime] = None,
        until: Optional[_dt.datetime] = None,
        with_writer: bool = False,
    ) -> Any:
        """One page of the UsageDetail ledger, newest first (``with_writer``: admins)."""
        return self._run(
            _ops.usage_details(
                user_id, first, after, types, source_types, since, until, with_writer
            )
        )

    def points_statement(
        self, user_id: Optional[int] = None, *, first: int = 20, after: Optional[str] = None
    ) -> Any:
        return self._run(_ops.points_statement(user_id, first, after))

    def holds(
        self,
        user_id: Optional[int] = None,
        *,
        status: Optional[str] = None,
        first: int = 20,
        after: Optional[str] = None,
    ) -> Any:
        return self._run(_ops.holds(user_id, status, first, after))

    def source_types(self) -> Any:
        return self._run(_ops.source_types())

    def account_costs(
        self,
        start: _dt.datetime,
        end: _dt.datetime,
        *,
        account_ids: Optional[List[int]] = None,
        fal_usage: bool = False,
    ) -> Any:
        """The per-fal-account cost report over ``[start, end)`` (admins)."""
        return self._run(_ops.account_costs(start, end, account_ids, fal_usage))

    def fal_accounts(self) -> Any:
        return self._run(_ops.fal_accounts())
