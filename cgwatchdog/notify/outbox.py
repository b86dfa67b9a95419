"""The durable outbox: every notification is stored before it is sent, and retried until
it is delivered or expires.

    Dispatcher.tick ──Notification──> Outbox.enqueue ──sqlite (store.outbox)──>
        Outbox.deliver_due ──one worker per receiver──> Integration.notify
            delivered      -> removed from the store
            recoverable    -> retried later: exponential backoff with full jitter,
                              never sooner than the service's Retry-After
            not recoverable, or older than max_age_s -> dropped, with an error log

Guarantees:

- At least once. A notification leaves the store only after its integration reported
  delivery; a crash (kill -9) between sending and recording means it is sent again by
  the next process. Nothing is lost unless it expires or is refused for good, and
  every such loss is logged with its receiver and group.
- Order per group. Within one (receiver, group key) a notification is attempted only
  when every earlier one of that group is delivered or dropped (head of line per group,
  as a reader of a group's thread expects "resolved" after "firing"). Other groups and
  other receivers are not held back.
- One slow receiver does not hold the others. Each receiver's due notifications go to
  its own worker thread, which stops starting sends after ``budget_s``;
  ``deliver_due`` waits at most ``wait_s`` and records what finished; a receiver still
  busy then is left to finish, and its results are recorded by a later call.
- A recoverable failure ends the receiver's turn for this call (the service is down or
  slow: the other groups are tried at the next call, not hammered now). A Retry-After
  pauses the whole receiver, since services rate-limit per webhook, not per group.

When the state file fails (disk full, read-only, locked), an outcome that cannot be
written is kept in memory: a delivered notification is not sent again each call (it is
skipped, and its removal retried at every later call), a failed one waits for its retry
time. ``deliver_due`` finishes its work and then raises StoreError, so the caller can say
so. Only a crash before the file works again loses that memory: the next process sends
those notifications again (at least once, as above).

Not recoverable (a 4xx other than 429, rejected SMTP credentials, a broken template):
the notification is dropped at once. It would be refused again identically, and kept
it would block every later notification of its group until expiry; the error log says
what to fix.

Threads: the store, counters and schedule are touched only under ``_lock`` by the
thread calling ``enqueue``/``deliver_due``; workers only call integrations and hand
back outcomes through a queue. The store's sqlite connection must allow use from the
thread(s) the daemon calls these from.

Notifications its :class:`~cgwatchdog.notify.policy.SendPolicy` says are not this
process's to send are left out when queued (and count as done when sent from memory).

Log lines and stored errors pass through the receiver's redactor and are built from
receiver names, group keys and integration messages, which never hold a URL.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Final

from cgwatchdog.alerts import Notification
from cgwatchdog.errors import NotifyError, StoreError
from cgwatchdog.notify.base import Integration
from cgwatchdog.notify.policy import SendPolicy
from cgwatchdog.store import OutboxItem, Store
from cgwatchdog.units import format_duration

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "MIN_RETRY_S",
    "DeliveryProblem",
    "DeliveryReport",
    "Outbox",
    "ReceiverCounters",
]

log = logging.getLogger("cgwatchdog.notify")

DEFAULT_MAX_AGE_S: Final = 24 * 3600.0
# Full jitter may draw ~0; a floor keeps a failing receiver from being retried in a loop.
MIN_RETRY_S: Final = 1.0
_MAX_EXPONENT: Final = 40


@dataclass(slots=True)
class ReceiverCounters:
    """Per-receiver totals since start, for metrics: delivered, failed attempts, given up."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What one ``deliver_due`` call recorded, and what still waits."""

    sent: int
    failed: int
    dropped: int
    pending: int  # notifications left in the outbox
    busy: tuple[str, ...]  # receivers whose worker was still running when the call returned


@dataclass(frozen=True, slots=True)
class DeliveryProblem:
    """A receiver whose notifications are not getting through."""

    receiver: str
    error: str  # the last attempt's, redacted
    oldest_queued_at: float | None  # its oldest undelivered notification (None: unknown)

    def describe(self, now: float) -> str:
        """One line for an operator: who, why, and how long it has been waiting."""
        text = f"receiver {self.receiver!r} failing: {self.error}"
        if self.oldest_queued_at is not None:
            age = format_duration(max(0.0, now - self.oldest_queued_at))
            text += f" (oldest undelivered notification queued {age} ago)"
        return text


@dataclass(frozen=True, slots=True)
class _Outcome:
    item: OutboxItem
    at: float
    error: NotifyError | None  # None: delivered


@dataclass(frozen=True, slots=True)
class _Unrecorded:
    """An outcome the state file could not take yet: settled (delivered or dropped, to be
    removed) or a failure (attempts, when to try again, the error)."""

    settled: bool
    attempts: int = 0
    next_attempt_at: float = 0.0
    error: str = ""


def _identity(text: str) -> str:
    return text


class Outbox:
    """Stores notifications and delivers them with retry; see the module docstring.

    ``integrations`` maps receiver names to their integrations (the caller owns and
    closes them). ``clock`` gives the time outcomes are recorded at (epoch seconds, the
    same clock as ``now``); worker budgets and waits use the monotonic clock.
    """

    def __init__(
        self,
        store: Store,
        integrations: Mapping[str, Integration],
        *,
        clock: Callable[[], float],
        max_age_s: float = DEFAULT_MAX_AGE_S,
        base_backoff_s: float = 5.0,
        max_backoff_s: float = 600.0,
        rng: random.Random | None = None,
        budget_s: float = 20.0,
        max_workers: int = 8,
        policy: SendPolicy | None = None,
        round_s: float = 0.0,
    ) -> None:
        self._store = store
        self.round_s = round_s
        """How often :meth:`deliver_due` is called (0: unknown), for honest log lines."""
        self._failing: dict[str, str] = {}
        self.policy = policy if policy is not None else SendPolicy()
        self._integrations: dict[str, Integration] = dict(integrations)
        self._clock = clock
        self.max_age_s = max_age_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._rng = rng if rng is not None else random.Random()
        self._budget_s = budget_s
        self._max_workers = max_workers
        self._lock = threading.RLock()
        self._deliver_lock = threading.Lock()
        self._outcomes: queue.SimpleQueue[tuple[str, _Outcome | None]] = queue.SimpleQueue()
        self._busy: set[str] = set()
        self._paused_until: dict[str, float] = {}
        self._counters: dict[str, ReceiverCounters] = {}
        self._warned_unknown: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._memory_failures: dict[str, int] = {}  # send_unsaved's failures in a row
        self._unrecorded: dict[int, _Unrecorded] = {}  # by outbox id; see the module docstring
        self._store_failure: StoreError | None = None  # of the current call

    # -- configuration -----------------------------------------------------------------

    def set_integrations(self, integrations: Mapping[str, Integration]) -> None:
        """Swap in the integrations of a reloaded configuration.

        Notifications for a receiver no longer configured stay stored (a reload may bring
        it back) and expire as usual.
        """
        with self._lock:
            self._integrations = dict(integrations)
            self._warned_unknown.clear()

    # -- queueing ----------------------------------------------------------------------

    def enqueue(self, notifications: Iterable[Notification], now: float) -> list[int]:
        """Store notifications (in one transaction) before any attempt to send them; those
        the policy says are not this process's to send are left out."""
        batch = [n for n in notifications if self.policy.sends(n)]
        if not batch:
            return []
        with self._lock, self._store.transaction():
            return [self._store.enqueue(n.receiver, n.group_key, n.to_dict(), now) for n in batch]

    # -- delivering --------------------------------------------------------------------

    def deliver_due(self, now: float, *, wait_s: float | None = None) -> DeliveryReport:
        """Send what is due at ``now``; wait up to ``wait_s`` (default ``budget_s``) for
        the receivers' workers, record their outcomes, and return what happened."""
        with self._deliver_lock:
            tally = {"sent": 0, "failed": 0, "dropped": 0}
            with self._lock:
                self._store_failure = None
                self._flush()
            self._drain(tally, block_until=None)
            with self._lock:
                jobs = self._plan(now, tally)
                self._busy.update(jobs)
            if jobs:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=self._max_workers, thread_name_prefix="cgwatchdog-notify"
                    )
                for receiver, (integration, chains) in jobs.items():
                    self._pool.submit(self._work, receiver, integration, chains, now)
            if self._busy:
                wait = self._budget_s if wait_s is None else wait_s
                self._drain(tally, block_until=time.monotonic() + wait)
            with self._lock:
                self._raise_store_failure()
                return DeliveryReport(
                    sent=tally["sent"],
                    failed=tally["failed"],
                    dropped=tally["dropped"],
                    pending=self._store.outbox_depth(),
                    busy=tuple(sorted(self._busy)),
                )

    def _plan(
        self, now: float, tally: dict[str, int]
    ) -> dict[str, tuple[Integration, list[list[OutboxItem]]]]:
        """Expire what is too old; pick, per free receiver, the groups whose head is due."""
        groups: dict[str, dict[str, list[OutboxItem]]] = {}
        for item in self._store.pending():  # oldest first
            if item.receiver in self._busy:
                continue  # maybe in flight: neither expired nor planned twice
            unrecorded = self._unrecorded.get(item.id)
            if unrecorded is not None:
                if unrecorded.settled:
                    continue  # delivered or dropped; only its removal is not written yet
                item = replace(
                    item,
                    attempts=unrecorded.attempts,
                    next_attempt_at=unrecorded.next_attempt_at,
                    last_error=unrecorded.error,
                )
            if now - item.created_at >= self.max_age_s:
                self._expire(item)
                tally["dropped"] += 1
                continue
            groups.setdefault(item.receiver, {}).setdefault(item.group_key, []).append(item)
        jobs: dict[str, tuple[Integration, list[list[OutboxItem]]]] = {}
        for receiver, by_group in groups.items():
            if self._paused_until.get(receiver, 0.0) > now:
                continue
            integration = self._integrations.get(receiver)
            if integration is None:
                if receiver not in self._warned_unknown:
                    self._warned_unknown.add(receiver)
                    log.warning(
                        "receiver %r is not configured: its %d undelivered notification(s) "
                        "are kept until they expire",
                        receiver,
                        sum(len(chain) for chain in by_group.values()),
                    )
                continue
            chains = [chain for chain in by_group.values() if chain[0].next_attempt_at <= now]
            if chains:
                jobs[receiver] = (integration, chains)
        return jobs

    def _work(
        self,
        receiver: str,
        integration: Integration,
        chains: list[list[OutboxItem]],
        now: float,
    ) -> None:
        """Worker thread: send each group's notifications in order, within the budget."""
        put = self._outcomes.put
        started = time.monotonic()
        try:
            for chain in chains:
                for position, item in enumerate(chain):
                    if time.monotonic() - started >= self._budget_s:
                        return
                    if position and item.next_attempt_at > now:
                        break
                    error = self._attempt(integration, item)
                    put((receiver, _Outcome(item, self._clock(), error)))
                    if error is not None and error.recoverable:
                        return  # the service is failing: the other groups wait for next time
        finally:
            put((receiver, None))

    @staticmethod
    def _attempt(integration: Integration, item: OutboxItem) -> NotifyError | None:
        try:
            notification = Notification.from_dict(item.payload)
        except ValueError as exc:
            return NotifyError(f"stored notification is unreadable: {exc}", recoverable=False)
        try:
            integration.notify(notification)
        except NotifyError as exc:
            return exc
        except Exception as exc:
            log.error(
                "internal error in the %s integration of receiver %r: %s (please report it)",
                integration.kind,
                integration.name,
                type(exc).__name__,
            )
            return NotifyError(
                f"internal error in the {integration.kind} integration: {type(exc).__name__}",
                recoverable=True,
            )
        return None

    def _drain(self, tally: dict[str, int], *, block_until: float | None) -> None:
        """Record outcomes the workers handed back; block until all are idle or the time."""
        while True:
            try:
                if block_until is None:
                    receiver, outcome = self._outcomes.get_nowait()
                else:
                    with self._lock:
                        if not self._busy:
                            return
                    remaining = block_until - time.monotonic()
                    if remaining <= 0:
                        return
                    receiver, outcome = self._outcomes.get(timeout=remaining)
            except queue.Empty:
                return
            with self._lock:
                if outcome is None:
                    self._busy.discard(receiver)
                else:
                    self._record(receiver, outcome, tally)

    def send_unsaved(self, notifications: Sequence[Notification], now: float) -> list[Notification]:
        """Send notifications the state file could not take, straight from memory, in
        order; return those done with (delivered, or refused for good: logged). A
        receiver's recoverable failure pauses it (backoff, Retry-After) and holds back
        its later ones; a crash loses nothing, the restored state decides them again.
        Those the policy says are not this process's to send count as done."""
        done: list[Notification] = [n for n in notifications if not self.policy.sends(n)]
        held: set[str] = set()
        for notification in notifications:
            if not self.policy.sends(notification):
                continue
            receiver = notification.receiver
            integration = self._integrations.get(receiver)
            if (
                integration is None
                or receiver in held
                or self._paused_until.get(receiver, 0.0) > now
            ):
                held.add(receiver)
                continue
            item = OutboxItem(
                0, receiver, notification.group_key, notification.to_dict(), now, now, 0, None
            )
            error = self._attempt(integration, item)
            with self._lock:
                counters = self._counter(receiver)
                if error is None:
                    counters.sent += 1
                    self._memory_failures.pop(receiver, None)
                    self._failing.pop(receiver, None)
                    done.append(notification)
                    continue
                counters.failed += 1
                message = self._redactor(receiver)(str(error))
                if not error.recoverable:
                    counters.dropped += 1
                    log.error(
                        "dropped a notification to receiver %r (group %s): %s",
                        receiver,
                        notification.group_key,
                        message,
                    )
                    done.append(notification)
                    continue
                failures = self._memory_failures[receiver] = (
                    self._memory_failures.get(receiver, 0) + 1
                )
                pause = max(self.backoff_s(failures), error.retry_after_s or 0.0)
                self._paused_until[receiver] = now + pause
                held.add(receiver)
                self._failing[receiver] = message
                log.warning(
                    "notification to receiver %r (group %s) not sent from memory, next try %s: %s",
                    receiver,
                    notification.group_key,
                    self._when(pause),
                    message,
                )
        return done

    # -- recording ---------------------------------------------------------------------

    def _redactor(self, receiver: str) -> Callable[[str], str]:
        integration = self._integrations.get(receiver)
        return integration.redact if integration is not None else _identity

    def _counter(self, receiver: str) -> ReceiverCounters:
        counters = self._counters.get(receiver)
        if counters is None:
            counters = self._counters[receiver] = ReceiverCounters()
        return counters

    def backoff_s(self, attempts: int) -> float:
        """The delay after the ``attempts``-th failure: full jitter over an exponential
        cap (``base * 2**(attempts-1)``, at most ``max_backoff_s``), at least 1 s."""
        exponent = min(max(attempts - 1, 0), _MAX_EXPONENT)
        cap = min(self.max_backoff_s, self.base_backoff_s * 2.0**exponent)
        return max(MIN_RETRY_S, self._rng.uniform(0.0, cap))

    def _record(self, receiver: str, outcome: _Outcome, tally: dict[str, int]) -> None:
        item, error = outcome.item, outcome.error
        counters = self._counter(receiver)
        if error is None:
            self._settle(item.id)
            counters.sent += 1
            tally["sent"] += 1
            self._failing.pop(receiver, None)
            return
        message = self._redactor(receiver)(str(error))
        attempts = item.attempts + 1
        counters.failed += 1
        tally["failed"] += 1
        if not error.recoverable:
            self._settle(item.id)
            counters.dropped += 1
            tally["dropped"] += 1
            log.error(
                "dropped a notification to receiver %r (group %s) at attempt %d: %s; "
                "it would be refused again as it is",
                receiver,
                item.group_key,
                attempts,
                message,
            )
            return
        delay = self.backoff_s(attempts)
        if error.retry_after_s is not None:
            delay = max(delay, error.retry_after_s)
            until = outcome.at + error.retry_after_s
            self._paused_until[receiver] = max(self._paused_until.get(receiver, 0.0), until)
        try:
            self._store.retry_later(item.id, outcome.at + delay, message, attempts=attempts)
        except StoreError as exc:
            self._unrecorded[item.id] = _Unrecorded(False, attempts, outcome.at + delay, message)
            self._note_failure(exc)
        else:
            self._unrecorded.pop(item.id, None)
        self._failing[receiver] = message
        log.warning(
            "notification to receiver %r (group %s) failed at attempt %d, next try %s: %s",
            receiver,
            item.group_key,
            attempts,
            self._when(delay),
            message,
        )

    def _when(self, delay_s: float) -> str:
        """When the next try really happens: at the first delivery round after the
        backoff (rounds come every ``round_s``, the daemon's poll interval)."""
        if self.round_s <= 0 or delay_s <= 0:
            return f"in {format_duration(delay_s)}"
        rounds = max(1, math.ceil(delay_s / self.round_s))
        real = rounds * self.round_s
        if rounds == 1:
            return f"at the next delivery round, in about {format_duration(real)}"
        return f"in about {format_duration(real)} (backoff {format_duration(delay_s)})"

    def failing(self) -> list[DeliveryProblem]:
        """The receivers whose last attempt failed, with that error (redacted) and when
        their oldest undelivered notification was queued; a receiver leaves the list at
        its next delivery, or when it leaves the configuration. Blocking (reads the
        state file; a failing state file leaves the ages out)."""
        with self._lock:
            failing = {r: e for r, e in self._failing.items() if r in self._integrations}
            if not failing:
                return []
            try:
                oldest = self._store.oldest_pending()
            except StoreError:
                oldest = {}
        return [DeliveryProblem(r, failing[r], oldest.get(r)) for r in sorted(failing)]

    def _expire(self, item: OutboxItem) -> None:
        self._settle(item.id)
        self._counter(item.receiver).dropped += 1
        last = self._redactor(item.receiver)(item.last_error or "never attempted")
        log.error(
            "lost a notification to receiver %r (group %s): undelivered after %d attempt(s) "
            "over %.0f s, the limit; last error: %s",
            item.receiver,
            item.group_key,
            item.attempts,
            self.max_age_s,
            last,
        )

    def _settle(self, item_id: int) -> None:
        """Remove a delivered or dropped notification; remembered if the file fails."""
        try:
            self._store.delivered(item_id)
        except StoreError as exc:
            self._unrecorded[item_id] = _Unrecorded(settled=True)
            self._note_failure(exc)
        else:
            self._unrecorded.pop(item_id, None)

    def _note_failure(self, exc: StoreError) -> None:
        if self._store_failure is None:
            self._store_failure = exc

    def _flush(self) -> None:
        """Write the outcomes an earlier call could not; stop at the first failure."""
        for item_id, unrecorded in list(self._unrecorded.items()):
            try:
                if unrecorded.settled:
                    self._store.delivered(item_id)
                else:
                    self._store.retry_later(
                        item_id,
                        unrecorded.next_attempt_at,
                        unrecorded.error,
                        attempts=unrecorded.attempts,
                    )
            except StoreError as exc:
                self._note_failure(exc)
                return
            del self._unrecorded[item_id]

    def _raise_store_failure(self) -> None:
        failure, self._store_failure = self._store_failure, None
        if failure is not None and self._unrecorded:
            raise StoreError(
                f"{failure}; {len(self._unrecorded)} delivery outcome(s) kept in memory "
                "until the state file can be written"
            )
        if failure is not None:
            raise failure

    # -- reading -----------------------------------------------------------------------

    def counters(self) -> dict[str, ReceiverCounters]:
        """Per-receiver counters (copies), for /metrics."""
        with self._lock:
            return {name: replace(c) for name, c in self._counters.items()}

    def depth(self) -> int:
        """How many notifications wait in the outbox."""
        with self._lock:
            return self._store.outbox_depth()

    def close(self, *, wait: bool = True) -> None:
        """Stop the worker threads. With ``wait``, let the sends in flight finish and
        record their outcomes, so a clean stop does not send them again at the next start.
        StoreError when some outcome still cannot be written to the state file."""
        with self._deliver_lock:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=wait, cancel_futures=True)
            if wait:
                self._drain({"sent": 0, "failed": 0, "dropped": 0}, block_until=None)
            with self._lock:
                self._store_failure = None
                self._flush()
                failure, self._store_failure = self._store_failure, None
                if failure is not None:
                    raise StoreError(
                        f"{failure}; {len(self._unrecorded)} delivered or failed "
                        "notification(s) not recorded: they may be sent again at the next start"
                    )
