"""The outbox relay: takes queued deliveries from the records and hands each to its channel.

The case's activities only write the outbox (in the transaction that records the
transition), so a channel that is down never holds up a case: its clocks and escalations go
on, and so do the other channels. The relay runs beside the worker and:

- sends at once the rows its own worker's activities hand it, already leased to it; its
  turn at the records (marking, claiming) never holds them up;
- claims due rows with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one
  writer), so several workers share one outbox and a row is in one sender's hands at a time;
  it claims at start, when woken, and when a retry or a lease it knows of falls due (what it
  was handed needs no claim), else every `poll` seconds;
- sends each on its own task; a channel's failures put only its own rows back with backoff;
- marks a row `sent` once the channel accepted it (it is never offered to that channel
  again), or `failed` with the reason after a permanent refusal or too many attempts, and
  then notes the failure in the case's timeline (records and, if it runs, the case itself).

A crash between a channel's acceptance and the mark sends that row again after its lease;
its key (Message-ID, webhook-id) lets the receiver see it is the same message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Connection, bindparam, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from activities import metrics, tracing
from activities.channels import SEND_TIMEOUT, Channels, Delivery, Permanent, Transient
from activities.records import MessageRow, Records, TimelineRow, table_of

log = logging.getLogger("escalation_desk.relay")
_MESSAGES = table_of(MessageRow)

FailureHook = Callable[[Delivery, str], Awaitable[None]]


def _now() -> datetime:
    return datetime.now(UTC)


class Handoff(Protocol):
    """What the activities hand new message rows to: the worker's relay, whose lease they
    write into each row."""

    lease: timedelta

    def handoff(self, deliveries: list[Delivery]) -> None: ...


def delivery_of(row: Mapping[str, Any]) -> Delivery:
    """A message row (as the activities wrote it, or as a claim read it back)."""
    return Delivery(
        key=str(row["key"]),
        case_id=str(row["case_id"]),
        medium=str(row["medium"]),
        channel=str(row["channel"]),
        recipient=str(row["recipient"]),
        recipient_name=row.get("recipient_name"),
        address=str(row["address"]),
        subject=str(row["subject"]),
        body=str(row["body"]),
        html=row.get("html"),
        short=row.get("short"),
        target=row.get("target"),
        payload=row.get("payload"),
        attempts=int(row.get("attempts") or 1),
        queued_at=row.get("created_at"),
        traceparent=row.get("traceparent"),
        leased_until=row.get("lease_until"),
    )


class Relay:
    def __init__(
        self,
        records: Records,
        channels: Channels,
        *,
        on_failed: FailureHook | None = None,
        first_backoff: float = 1.0,
        max_backoff: float = 300.0,
        max_attempts: int = 25,
        lease: float = 2 * SEND_TIMEOUT,
        batch: int = 200,
        poll: float = 30.0,
    ) -> None:
        self.records = records
        self.channels = channels
        self.on_failed = on_failed
        self.first_backoff, self.max_backoff = first_backoff, max_backoff
        self.max_attempts = max_attempts
        self.lease = timedelta(seconds=lease)
        self.batch, self.poll = batch, poll
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        # (delivery, outcome, reason, when the channel answered)
        self._done: list[tuple[Delivery, str, str | None, datetime]] = []
        self._flushing = False
        self._stopping = False
        # when to claim from the records next (the loop's clock): at once on a wake-up, else
        # when a claim found the next retry or lease end due, or a send here was put off
        self._claim_at = 0.0
        self._handed: deque[Delivery] = deque()
        self._running = False

    def wake(self) -> None:
        """Something was queued: look now instead of at the next poll."""
        self._claim_at = 0.0
        self._wake.set()

    def _claim_by(self, delay: float) -> None:
        """Claim again within `delay` seconds (a retry put off, a lease left to run out)."""
        self._claim_at = min(self._claim_at, self._clock() + max(0.0, delay) + 0.01)

    @staticmethod
    def _clock() -> float:
        return asyncio.get_running_loop().time()

    def handoff(self, deliveries: list[Delivery]) -> None:
        """Rows an activity just wrote, already leased to this relay: sent at once, without a
        claim and without waiting for the relay's own turn at the records (which queues
        behind every activity's transaction when a herd of deadlines falls), so delivery
        keeps up with the decisions. Beyond `batch` in flight they wait for the loop. Should
        this process die first, their lease runs out and any relay claims them."""
        if self._running and not self._stopping:
            room = max(0, self.batch - len(self._inflight))
            for d in deliveries[:room]:
                self._start(d)
            deliveries = deliveries[room:]
        self._handed.extend(deliveries)
        self._wake.set()

    def _start(self, d: Delivery) -> None:
        task = asyncio.create_task(self._send(d))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _take_handed(self, room: int) -> list[Delivery]:
        """Up to `room` handed-off deliveries still well inside their lease (one near its
        end is left to the claim, which cannot then race this relay's own send)."""
        taken: list[Delivery] = []
        margin = _now() + timedelta(seconds=5)
        while self._handed and len(taken) < room:
            d = self._handed.popleft()
            if d.leased_until is None or d.leased_until > margin:
                taken.append(d)
            else:  # left to a claim once its lease has run out
                self._claim_by((d.leased_until - _now()).total_seconds())
        return taken

    def stop(self) -> None:
        """End `run` between two transactions: a cancel that lands inside one can leave its
        connection holding locks until the process exits."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        self._stopping = False
        self._running = True
        try:
            while not self._stopping:
                self._wake.clear()
                room = self.batch - len(self._inflight)
                handed = self._take_handed(room)
                for d in handed:  # before this relay's own turn at the records
                    self._start(d)
                claimed: list[Delivery] = []
                try:
                    await self._flush()
                    # handed-off rows need no claim: only a wake-up or a due retry or lease
                    if room > len(handed) and not self._handed and self._clock() >= self._claim_at:
                        claimed = await self._claim(room - len(handed))
                except (SQLAlchemyError, OSError) as err:  # the records are away: try later
                    self._claim_at = self._clock() + min(self.poll, 1.0)
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        # a cancel that landed in the driver comes back wrapped: stop anyway
                        raise asyncio.CancelledError from err
                    log.warning("outbox unreachable (%s); retrying", err)
                for d in claimed:
                    self._start(d)
                if self._stopping:
                    break
                if len(handed) + len(claimed) >= room:  # the batch is full: wait for a send
                    await self._wake.wait()
                else:  # nothing more is due now
                    with contextlib.suppress(TimeoutError):
                        wait = max(0.0, self._claim_at - self._clock())
                        await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            self._running = False
            for task in list(self._inflight):
                task.cancel()
            await asyncio.gather(*self._inflight, return_exceptions=True)
            with contextlib.suppress(SQLAlchemyError, OSError):
                await self._flush()

    async def drain(self, within: float = 30.0) -> None:
        """Until nothing is queued (waiting out backoffs and leases) or `within` has passed;
        for tests and a clean shutdown."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            self.wake()
            due = await self.records.run(_queued)
            if not due and not self._inflight and not self._done and not self._flushing:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{due} deliveries still queued after {within}s")
            await asyncio.sleep(0.05)

    def _soonest(self, c: Connection, now: datetime) -> float:
        """How long to sleep with nothing due: until the next retry or the end of a lease
        (another relay's, which died holding it), else `poll`. New rows wake the relay
        (`wake`, from the activities that queue them); `poll` only catches rows queued by
        a process whose relay is gone."""
        queued = MessageRow.status == "queued"
        retry = c.scalar(
            select(func.min(MessageRow.next_attempt_at)).where(
                queued, MessageRow.next_attempt_at > now
            )
        )
        lease = c.scalar(
            select(func.min(MessageRow.lease_until)).where(queued, MessageRow.lease_until > now)
        )
        soonest = min((t for t in (retry, lease) if t is not None), default=None)
        if soonest is None:
            return self.poll
        return max(0.01, min(self.poll, (soonest - now).total_seconds() + 0.01))

    @staticmethod
    def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
        return (
            MessageRow.status == "queued",
            or_(MessageRow.next_attempt_at.is_(None), MessageRow.next_attempt_at <= now),
            or_(MessageRow.lease_until.is_(None), MessageRow.lease_until < now),
        )

    async def _claim(self, limit: int) -> list[Delivery]:
        now = _now()

        def claim(c: Connection) -> tuple[list[Delivery], float | None]:
            due = select(MessageRow.id).where(*self._due(now)).order_by(MessageRow.id).limit(limit)
            if c.dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True)
            rows = c.execute(
                update(_MESSAGES)
                .where(_MESSAGES.c.id.in_(due.scalar_subquery()))
                .values(lease_until=now + self.lease, attempts=_MESSAGES.c.attempts + 1)
                .returning(*_MESSAGES.c)
            )
            claimed = [delivery_of(dict(r._mapping)) for r in rows]
            if len(claimed) < limit:  # all that is due: when is the next, in this transaction
                return claimed, self._soonest(c, now)
            return claimed, None  # more may be due: claim again on the next turn

        claimed, wait = await self.records.run(claim)
        self._claim_at = 0.0 if wait is None else self._clock() + wait
        return claimed

    async def _send(self, d: Delivery) -> None:
        name = f"deliver {d.medium}"
        with tracing.continued(d.traceparent, name, channel=d.medium, audience=d.channel):
            outcome, reason = await self._attempt(d)
            if outcome == "sent":
                metrics.delivered(d.medium, "sent", d.queued_at)
                log.info(
                    "%s accepted for %s: %s [%s]",
                    d.medium,
                    d.recipient,
                    d.subject,
                    d.key,
                    extra={"case_id": d.case_id},
                )
        self._done.append((d, outcome, reason, _now()))
        self._wake.set()  # to record it; no claim for that

    async def _attempt(self, d: Delivery) -> tuple[str, str | None]:
        sender = self.channels.senders.get(d.medium)
        try:
            if sender is None:
                raise Permanent(f"no {d.medium} channel is configured")
            await asyncio.wait_for(sender.send(d), timeout=self.lease.total_seconds() / 2)
        except Permanent as err:
            return "failed", str(err) or type(err).__name__
        except (Transient, TimeoutError) as err:
            return "retry", str(err) or type(err).__name__
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a sender's bug must not stop the relay: retried, logged
            log.exception("%s delivery %s raised", d.medium, d.key, extra={"case_id": d.case_id})
            return "retry", f"{type(err).__name__}: {err}"
        return "sent", None

    async def _flush(self) -> None:
        """Record what the channels said, many rows per transaction."""
        if not self._done:
            return
        done, self._done = self._done, []
        now = _now()
        failed: list[tuple[Delivery, str]] = []
        self._flushing = True
        try:
            await self._mark(done, now, failed)
        except BaseException:
            self._done[:0] = done  # marked on the next try; the channels are not asked again
            raise
        finally:
            self._flushing = False
        gave_up = {d.key for d, _ in failed}
        for d, outcome, _, _ in done:
            if outcome != "sent":
                metrics.delivered(d.medium, "failed" if d.key in gave_up else "retried")
        for d, reason in failed:
            log.error(
                "%s to %s failed: %s", d.medium, d.address, reason, extra={"case_id": d.case_id}
            )
            if self.on_failed is not None:
                try:
                    await self.on_failed(d, reason)
                except Exception:  # the records have it; the running case is told best-effort
                    log.exception(
                        "could not tell case %s about %s",
                        d.case_id,
                        d.key,
                        extra={"case_id": d.case_id},
                    )

    async def _mark(
        self,
        done: list[tuple[Delivery, str, str | None, datetime]],
        now: datetime,
        failed: list[tuple[Delivery, str]],
    ) -> None:
        sent = [
            {"k": d.key, "at": answered} for d, outcome, _, answered in done if outcome == "sent"
        ]
        backoffs: list[float] = []

        def mark(c: Connection) -> None:
            if sent:  # one statement for them all, the time each channel accepted its message
                c.execute(
                    update(_MESSAGES)
                    .where(_MESSAGES.c.key == bindparam("k"), _MESSAGES.c.status == "queued")
                    .values(status="sent", sent_at=bindparam("at"), reason=None, lease_until=None),
                    sent,
                )
            for d, outcome, reason, _ in done:
                if outcome == "sent":
                    continue
                values: dict[str, object] = {"lease_until": None, "reason": reason}
                if outcome == "retry" and d.attempts < self.max_attempts:
                    backoff = min(self.first_backoff * 2 ** (d.attempts - 1), self.max_backoff)
                    values["next_attempt_at"] = now + timedelta(seconds=backoff)
                    backoffs.append(backoff)
                    log.warning(
                        "%s to %s: %s (retry in %.1fs)", d.medium, d.address, reason, backoff
                    )
                else:
                    if outcome == "retry":
                        reason = f"gave up after {d.attempts} attempts: {reason}"
                    values.update(status="failed", reason=reason)
                    failed.append((d, reason or ""))
                c.execute(
                    update(_MESSAGES)
                    .where(_MESSAGES.c.key == d.key, _MESSAGES.c.status == "queued")
                    .values(**values)
                )
            for d, reason in failed:
                self._note_failure(c, d, reason, now)

        await self.records.run(mark)
        for backoff in backoffs:
            self._claim_by(backoff)

    @staticmethod
    def _note_failure(c: Connection, d: Delivery, reason: str, now: datetime) -> None:
        last = c.scalar(select(func.max(TimelineRow.seq)).where(TimelineRow.case_id == d.case_id))
        c.execute(
            table_of(TimelineRow).insert(),
            {
                "key": f"{d.key}:failed",
                "case_id": d.case_id,
                "seq": int(last or 0) + 1,
                "at": now,
                "what": "delivery failed",
                "by": None,
                "tier": None,
                "details": failure_text(d, reason),
            },
        )


def _queued(c: Connection) -> int:
    count = select(func.count()).select_from(MessageRow)
    return int(c.scalar(count.where(MessageRow.status == "queued")) or 0)


def failure_text(d: Delivery, reason: str) -> str:
    return f"{d.medium} to {d.recipient} <{d.address}> ({d.subject}): {reason}"
