"""The daemon: ``cgwatchdog run -c CONFIG``, the one place where things are wired together.

Only this module schedules cycles, creates tasks, binds the HTTP port, installs signal
handlers and talks to systemd; everything it drives is an object it calls::

    load_config ─> Store ─> integrations ─> SendPolicy, Outbox ─> Watchdog
        ─> StatePush, Leadership ─> bind HTTP ─> loop:

      every poll.interval (± jitter; never overlapping; a slow cycle is followed at once)
        Watchdog.cycle()                  poll, evaluate, save state + queue notifications, act
        StatePush                         push the engine's alert state (background task)
        Outbox.deliver_due(wait_s=0.5)    in a thread; slow receivers finish on their own
        metrics, STATUS=, WATCHDOG=1      READY=1 after the first cycle
      between cycles: WATCHDOG=1 every half watchdog interval, SIGHUP reloads

    SIGHUP   RELOADING=1, load the config; invalid: log every problem, keep the running
             one; valid: Watchdog.configure, new integrations; READY=1 either way
    SIGTERM  STOPPING=1, the cycle in flight finishes, a last delivery (bounded), state
    SIGINT   saved, store closed, exit 0

WATCHDOG=1 is sent by the loop itself, never by a timer thread: when the loop stalls,
the pings stop and systemd restarts the service. A failing state file (disk full) never
stops the loop: it is logged loudly, shown by /healthz (still 200) and /metrics, and the
watchdog goes on alerting from memory until the file works again.

State receivers (Alertmanager, notify/push.py) get every alert the engine holds pushed
each cycle; the notifications routed to them are dropped by the outbox's
:class:`~cgwatchdog.notify.policy.SendPolicy` before they are queued.

Shards and replicas: the configuration arrives with only this shard's miners
(overrides.py). With ``cluster.alertmanager`` set, each push also carries the
``CgwatchdogHeartbeat`` and ``Watchdog`` alerts, living HEARTBEAT_LIFETIME_INTERVALS
intervals; with a replica name, the push is followed by a read of the shard's
heartbeats from every peer, and :class:`~cgwatchdog.cluster.Leadership` (a state
machine) takes the outcome. Each cycle runs as the role it gives:

    leader     acts, sends direct notifications; on taking over, re-sends the firing
               groups once (Dispatcher.renotify: at-least-once)
    follower   evaluates and pushes to Alertmanager like the leader (state kept warm),
               drops direct notifications, never acts
    isolated   no peer took or showed its heartbeat: never acts; sends direct
               notifications (nobody can be known to; a duplicate beats silence)

``heartbeat: {url, interval}`` pings a push monitor after a good cycle, at most once an
interval, in a thread: when the loop stalls, the pings stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry

from cgwatchdog import __version__
from cgwatchdog.alerts import AlertState, Notification, Transition
from cgwatchdog.cluster import Leadership, Role
from cgwatchdog.config import Config
from cgwatchdog.config.loader import load_config
from cgwatchdog.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    ConfigProblem,
    NotifyError,
    StoreError,
)
from cgwatchdog.gcpause import CycleCollector
from cgwatchdog.heartbeat import HeartbeatPinger
from cgwatchdog.history import MinerHistory
from cgwatchdog.logs import FIELD_ALERTNAME, FIELD_MINER, RedactingFilter, setup_logging
from cgwatchdog.malloc import give_back_free_heap
from cgwatchdog.notify.base import Integration, StateReceiver, build_integration
from cgwatchdog.notify.outbox import Outbox
from cgwatchdog.notify.policy import SendPolicy
from cgwatchdog.notify.push import PushJob, StatePush
from cgwatchdog.notify.receivers.alertmanager import silence_remote
from cgwatchdog.notify.receivers.telegram import TelegramConfig
from cgwatchdog.notify.telegram_listener import TelegramListener, status_text
from cgwatchdog.overrides import Overrides
from cgwatchdog.sdnotify import Notifier
from cgwatchdog.silences import SilenceBook
from cgwatchdog.snapshot import PollResult, Snapshot
from cgwatchdog.store import Store
from cgwatchdog.trend import HashrateTrend
from cgwatchdog.watchdog import Watchdog
from cgwatchdog.web import silence_api
from cgwatchdog.web.fleetview import replies_worth_keeping
from cgwatchdog.web.metrics import Metrics
from cgwatchdog.web.server import HttpServer
from cgwatchdog.web.sources import PageSources, Sources
from cgwatchdog.web.status import DaemonStatus

__all__ = [
    "DELIVERY_WAIT_S",
    "FINAL_DELIVERY_WAIT_S",
    "STATE_FILE",
    "Daemon",
    "log_transitions",
    "run_daemon",
    "status_line",
]

log = logging.getLogger("cgwatchdog.daemon")


STATE_FILE: Final = "cgwatchdog.sqlite"
# After each cycle deliver_due waits this long for the receivers' workers; a slower
# receiver finishes in its own thread and is recorded at the next call, so polling
# never waits for a webhook.
DELIVERY_WAIT_S: Final = 0.5
# On SIGTERM, the last delivery may take this long: enough for a healthy webhook and
# SMTP server, short enough for systemd's stop timeout.
FINAL_DELIVERY_WAIT_S: Final = 10.0
# Then the outbox's workers get this long to finish sends in flight (so they are not
# sent again at the next start), and the last Alertmanager push this long.
CLOSE_WAIT_S: Final = 15.0
PUSH_WAIT_S: Final = 5.0
# How long a write waits for another process's lock on the state file (a backup, the
# sqlite3 shell). The store is written on the event loop's thread, so waiting stalls
# polling and the endpoint; a save that fails is simply retried at the next cycle.
STORE_BUSY_TIMEOUT_S: Final = 1.0
# A replica's heartbeat lives this many poll intervals after its push. Heartbeats are
# read again right before every cycle, so a dead leader's shard is taken over within
# lifetime + 1 interval: three intervals at most. A leader that could
# not refresh its own heartbeat for as long steps down by itself, and a replica that has
# just become visible waits as long before it leads, so two replicas never both act.
HEARTBEAT_LIFETIME_INTERVALS: Final = 2.0
# The heartbeat read before a cycle waits at most this many intervals (then the role
# elected after the last push holds): a hung peer must not hold up polling.
REELECT_WAIT_INTERVALS: Final = 0.25


def _on_grid(seconds: float) -> float:
    """``seconds`` to the nearest 1/1024 s. Due times are sums of such values and of the
    interval, so their differences are exact: ``for: 4s`` at a 2 s interval is met at
    the second cycle after, not missed by a rounding error and met one interval later."""
    return round(seconds * 1024) / 1024


def status_line(status: DaemonStatus, firing: int) -> str:
    """The one-line STATUS= summary ``systemctl status`` shows."""
    duration = status.last_cycle_duration_s
    text = (
        f"{status.miners:,} miners, {status.up:,} up, {firing:,} firing, "
        f"outbox {status.outbox_depth:,}, "
        + ("no cycle yet" if duration is None else f"last cycle {duration:.1f}s")
    )
    if status.store_error is not None:
        text += ", STATE FILE FAILING"
    return text


def _split_integrations(
    config: Config,
) -> tuple[dict[str, StateReceiver], dict[str, Integration]]:
    """The configured receivers' integrations: those that take the alert state
    (Alertmanager), and those sent notifications one by one."""
    pushed: dict[str, StateReceiver] = {}
    direct: dict[str, Integration] = {}
    for receiver in config.receivers:
        integration = build_integration(receiver, interval_s=config.poll.interval_s)
        state = integration.state_receiver()
        if state is not None:
            pushed[receiver.name] = state
        else:
            direct[receiver.name] = integration
    return pushed, direct


def _state_push(config: Config, receivers: dict[str, StateReceiver]) -> StatePush:
    return StatePush(
        receivers,
        config.cluster,
        config.poll.interval_s,
        lifetime_intervals=HEARTBEAT_LIFETIME_INTERVALS,
    )


def log_transitions(transitions: Sequence[Transition]) -> None:
    """One log line per alert that fired or resolved (with journald fields)."""
    for t in transitions:
        alert = t.alert
        if t.new is AlertState.FIRING:
            log.warning(
                "FIRING %s on %s%s: %s",
                alert.alertname,
                alert.miner or "the fleet",
                _where(alert.labels),
                alert.value,
                extra=_fields(t),
            )
        elif t.new is AlertState.RESOLVED:
            log.info(
                "resolved %s on %s%s",
                alert.alertname,
                alert.miner or "the fleet",
                _where(alert.labels),
                extra=_fields(t),
            )


def _warn_watchdog_budget(config: Config, budget_s: float | None) -> None:
    """Warn when a cycle over a fleet that does not answer could outlast systemd's
    watchdog (WATCHDOG=1 is sent between cycles, not during one)."""
    if budget_s is None or not config.miners:
        return
    waves = math.ceil(len(config.miners) / config.poll.concurrency)
    worst = waves * config.poll.timeout_s
    if worst >= budget_s:
        log.warning(
            "a cycle over a fleet that does not answer may take up to %.0f s "
            "(%d miners / concurrency %d x timeout %g s), not less than the systemd "
            "watchdog (%.0f s): raise WatchdogSec= or poll.concurrency",
            worst,
            len(config.miners),
            config.poll.concurrency,
            config.poll.timeout_s,
            budget_s,
        )


def _fields(transition: Transition) -> dict[str, str]:
    return {FIELD_MINER: transition.alert.miner, FIELD_ALERTNAME: transition.alert.alertname}


def _where(labels: Mapping[str, str]) -> str:
    parts = [f"{key} {labels[key]}" for key in ("device", "pool") if labels.get(key)]
    return f" ({', '.join(parts)})" if parts else ""


class Daemon:
    """One running daemon; build it with a loaded config and call :meth:`run` once."""

    def __init__(
        self,
        config_path: str | Path,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None,
        registry: CollectorRegistry | None = None,
        redactor: RedactingFilter | None = None,
        rng: random.Random | None = None,
        overrides: Overrides | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.overrides = overrides if overrides is not None else Overrides()
        self.config = config
        self.clock = clock
        self.notifier = notifier if notifier is not None else Notifier()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.redactor = redactor
        self._rng = rng if rng is not None else random.Random()
        self.metrics = Metrics(self.registry, per_device=config.http.per_device_metrics)
        self.trend = HashrateTrend(history=self._rule_history)
        self.extra_routes: list[web.AbstractRouteDef] = []
        """Routes other modules add to the HTTP endpoint (mounted when it starts)."""
        self._keep_replies: frozenset[str] = frozenset()
        self.status = DaemonStatus(
            interval_s=config.poll.interval_s,
            started_at=clock(),
            shard=str(config.cluster.shard),
            replica=config.cluster.replica,
            role=(Role.LEADER if config.cluster.replica is None else Role.ISOLATED).value,
        )
        self.store: Store | None = None
        self.policy = SendPolicy()
        self.outbox: Outbox | None = None
        self.watchdog: Watchdog | None = None
        self.server: HttpServer | None = None
        self.pusher = _state_push(config, {})
        self.leadership = Leadership(
            config.cluster.replica, HEARTBEAT_LIFETIME_INTERVALS * config.poll.interval_s
        )
        self._direct: dict[str, Integration] = {}
        self._retired: list[Integration] = []
        self._push_task: asyncio.Task[None] | None = None
        self._unsaved_task: asyncio.Task[None] | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._reload_wanted = False
        self.collector = CycleCollector()
        self._ready_sent = False
        self._due_at: float | None = None
        """When the cycle in flight was due, on the wall clock (the alerts' evaluation time)."""
        self._last_ping = -math.inf
        self._store_problem: str | None = None
        self._pinger: HeartbeatPinger | None = None
        self._pinging: asyncio.Task[None] | None = None
        self._silence_sync: asyncio.Task[None] | None = None
        self._listeners: dict[str, tuple[TelegramConfig, asyncio.Task[None]]] = {}

    # -- the whole life -------------------------------------------------------------------

    async def run(self) -> int:
        """Start, loop until SIGTERM/SIGINT, stop cleanly; the process exit code."""
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        try:
            code = self._open()
            if code != EXIT_OK:
                return code
            watchdog = self.watchdog
            assert watchdog is not None
            store = self.store
            assert store is not None
            token = self.config.http.token
            self.extra_routes += silence_api.routes(
                watchdog.silence_book,
                watchdog.acknowledge,
                self.clock,
                None if token is None else token.get_secret_value(),
            )
            server = HttpServer(
                Sources(
                    self.status,
                    self.metrics,
                    alerts=lambda: watchdog.alerts.alerts(),
                    clock=self.clock,
                    http=self.config.http,
                    pages=PageSources(
                        trend=self.trend,
                        replies=watchdog.poller.last_replies,
                        action_log=lambda name, limit: store.actions(miner=name, limit=limit),
                        redact=lambda text: self.config.redact(text),
                        write_forms=True,  # the silence API below takes the page's forms
                    ),
                ),
                extra_routes=self.extra_routes,
            )
            watchdog.poller.keep_replies = self._keeps_replies
            try:
                await server.start()
                self.server = server
            except OSError as exc:
                log.error(
                    "cannot listen on %s: %s (another cgwatchdog running? change http.listen)",
                    self.config.http.listen,
                    exc.strerror or exc,
                )
                return EXIT_FAILURE
            self._log_start()
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                self._start_listeners(self.config)
                if self.config.cluster.replica is not None:
                    # Know the role before the first cycle decides anything.
                    self._start_push(self.clock())
                    await self._finish_push()
                await self._loop()
                self._stop_listeners()
                await self._finish_push()
            await self._shutdown()
            return EXIT_OK
        finally:
            self._remove_signals(loop)
            if self.server is not None:
                await self.server.stop()
            self._close()

    def _open(self) -> int:
        config = self.config
        path = config.state_dir / STATE_FILE
        try:
            self.store = Store(path, timeout_s=STORE_BUSY_TIMEOUT_S)
        except StoreError as exc:
            log.error("cannot open the state file: %s", exc)
            return EXIT_FAILURE
        try:
            pushed, self._direct = _split_integrations(config)
        except ConfigError as exc:
            self._log_problems("configuration", exc.problems)
            return EXIT_USAGE
        self.pusher = _state_push(config, pushed)
        self.policy.state_receivers = frozenset(pushed)
        self.outbox = Outbox(
            self.store,
            self._direct,
            clock=self.clock,
            policy=self.policy,
            round_s=config.poll.interval_s,
        )
        self.watchdog = Watchdog(config, store=self.store, outbox=self.outbox, clock=self.clock)
        self.watchdog.poller.on_result = self.metrics.take_result
        self.watchdog.silence_book.set_remote(silence_remote(self.pusher.cluster_receiver))
        self._set_pinger(config)
        return EXIT_OK

    def _set_pinger(self, config: Config) -> None:
        old = self._pinger
        if old is not None and config.heartbeat == old.config:
            return
        self._pinger = None if config.heartbeat is None else HeartbeatPinger(config.heartbeat)
        if old is not None:
            old.close()

    def _log_start(self) -> None:
        config = self.config
        cluster = config.cluster
        log.info(
            "cgwatchdog %s: %d miners%s, %d rules, %d receivers; state in %s; "
            "http://%s/metrics; poll every %g s; sd_notify: %s",
            __version__,
            len(config.miners),
            ""
            if cluster.shard.count == 1 and cluster.replica is None
            else f" (shard {cluster.shard}, replica {cluster.replica or '-'})",
            len(config.rules),
            len(config.receivers),
            config.state_dir / STATE_FILE,
            config.http.listen,
            config.poll.interval_s,
            self.notifier.backend,
        )
        for note in config.notes:
            log.info("%s", note)
        for warning in config.warnings:
            log.warning("%s", warning)
        log.warning("%s", config.actions_summary())
        _warn_watchdog_budget(config, self.notifier.watchdog_interval_s)

    # -- signals ------------------------------------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self._on_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)

    @staticmethod
    def _remove_signals(loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)

    def _on_stop(self, name: str) -> None:
        if self._stop.is_set():
            log.info("%s again: already stopping", name)
            return
        log.info("%s received: stopping after the cycle in flight", name)
        self.status.stopping = True
        self.notifier.stopping("stopping")
        self._stop.set()
        self._wake.set()

    def _on_reload(self) -> None:
        log.info("SIGHUP received: reloading %s", self.config_path)
        self._reload_wanted = True
        self._wake.set()

    # -- the loop -----------------------------------------------------------------------

    async def _loop(self) -> None:
        """Run cycles on a fixed grid: each one due ``interval`` after the one before, as
        Prometheus evaluates a rule group, so that alerts counting ``for`` see exactly
        one interval between evaluations (a failure is notified within ``for`` + one
        interval + the cycle's own time). ``poll.jitter`` offsets this instance's grid
        once, by a random share of the interval drawn at start, so that instances started
        together do not poll at the same moments. A cycle slower than the interval is
        followed at once, and the grid starts again from there."""
        loop = asyncio.get_running_loop()
        due = loop.time()  # the loop's clock, to wait on
        due_at = _on_grid(self.clock())  # the same instant on the wall clock, for alerts
        phase: float | None = None
        while not self._stop.is_set():
            await self._idle_until(due)
            if self._stop.is_set():
                break
            started = loop.time()
            self._due_at = due_at
            with self.collector.cycle(started):
                await self._cycle()
            give_back_free_heap()
            elapsed = loop.time() - started
            log.debug("cycle due at %.3f began %.3f s late and took %.3f s", due_at,
                      started - due, elapsed)  # fmt: skip
            if not self._ready_sent:
                self._ready_sent = True
                self.notifier.ready(self._status_line())
            interval = self.config.poll.interval_s
            if phase is None:
                phase = _on_grid(self._rng.uniform(0.0, self.config.poll.jitter * interval))
                due, due_at = due + phase, due_at + phase
            if elapsed > interval:
                log.warning(
                    "slow cycle: %.1f s, longer than the %g s poll interval; the next starts now",
                    elapsed,
                    interval,
                )
                due, due_at = loop.time(), _on_grid(self.clock())
            else:
                due, due_at = due + interval, due_at + interval
                if due < loop.time():  # reloaded to a shorter interval, or a stalled loop
                    due, due_at = loop.time(), _on_grid(self.clock())

    async def _idle_until(self, deadline: float) -> None:
        """Wait for ``deadline``: reload on SIGHUP, ping the watchdog, return on stop."""
        loop = asyncio.get_running_loop()
        ping_every = self.notifier.watchdog_interval_s
        while not self._stop.is_set():
            if self._reload_wanted:
                await self._reload()
                continue
            now = loop.time()
            wait = deadline - now
            if wait <= 0:
                return
            if ping_every is not None:
                half = ping_every / 2
                if now - self._last_ping >= half:
                    self._ping()
                wait = min(wait, self._last_ping + half - now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):
                    await self._wake.wait()

    def _ping(self) -> None:
        self._last_ping = asyncio.get_running_loop().time()
        self.notifier.watchdog()

    async def _cycle(self) -> None:
        """One cycle and everything after it; never raises for a cycle's failure."""
        watchdog = self.watchdog
        assert watchdog is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._reelect()
        self._take_role(self.clock())
        self._start_silence_sync(self.clock())
        if self._unsaved_task is not None and not self._unsaved_task.done():
            # This cycle's save would queue what is still being sent from memory (twice):
            # give the send the delivery budget first.
            await asyncio.wait({self._unsaved_task}, timeout=DELIVERY_WAIT_S)
        try:
            report = await watchdog.cycle(scheduled_at=self._due_at)
        except Exception as exc:  # a bug in one rule or reply must not end the monitoring
            log.exception("cycle failed with an internal error (please report it): %s", exc)
            self.status.cycle_error = self.config.redact(f"{type(exc).__name__}: {exc}")
            self.metrics.record_cycle_failure()
            self._ping()
            return
        duration = loop.time() - started
        self.status.cycle_error = None
        log_transitions(report.transitions)
        status = self.status
        status.cycles += 1
        # When it completed, saving and actions included (a slow save is part of it).
        status.last_cycle_at = completed = self.clock()
        status.last_cycle_duration_s = duration
        status.miners = len(report.results)
        status.miner_names = tuple(result.name for result in report.results)
        status.up = report.up
        self.metrics.observe_cycle(
            report.results,
            watchdog.alerts.alerts(),
            duration_s=duration,
            finished_at=completed,
            interval_s=self.config.poll.interval_s,
            miners=self.config.miners,
        )
        self._observe_fleet(report.results, completed)
        for event in report.action_events:
            self.metrics.record_action(event.do or "-", event.kind.value)
        status.record_actions(report.action_events)
        self._start_push(report.finished_at)
        await self._deliver(self.clock(), DELIVERY_WAIT_S, saved=watchdog.saved)
        self._start_unsaved()
        self._start_heartbeat(self.clock())
        self.notifier.status(self._status_line())
        self._ping()

    def _rule_history(self, name: str) -> MinerHistory | None:
        """A miner's rule history, if it has one: the status page's hour of hashrate is
        read from it where it keeps the hour."""
        watchdog = self.watchdog
        return None if watchdog is None else watchdog.rules.history.get(name)

    def _observe_fleet(self, results: Sequence[PollResult], now: float) -> None:
        """Feed the status page: the hour of hashrate, and which miners' raw replies the
        poller keeps next cycle (alerting or down ones)."""
        self.trend.record(
            ((r.name, r.hashrate_hs if isinstance(r, Snapshot) else None) for r in results), now
        )
        watchdog = self.watchdog
        assert watchdog is not None
        self._keep_replies = replies_worth_keeping(results, watchdog.alerts.alerts())

    def _keeps_replies(self, name: str) -> bool:
        return name in self._keep_replies

    # -- leadership and the dead man's switch --------------------------------------------

    def _take_role(self, now: float) -> None:
        """Run this cycle as the role the replica's standing gives (ISOLATED, never
        acting, once its own heartbeat has expired unrefreshed)."""
        change = self.leadership.role_at(now)
        role = change.role
        watchdog = self.watchdog
        assert watchdog is not None
        watchdog.acting = role.acts
        # A follower drops direct notifications (the leader sends them). An isolated
        # replica sends them: nobody can be known to, and a duplicate beats silence.
        self.policy.sending = role is not Role.FOLLOWER
        self.status.role = role.value
        self.metrics.record_role(role.value)
        cluster = self.config.cluster
        if not change.changed or cluster.replica is None:
            return
        if role is Role.LEADER:
            groups = watchdog.dispatcher.renotify(now) if watchdog.dispatcher is not None else 0
            log.warning(
                "leading shard %s as replica %s: running actions and direct notifications%s",
                cluster.shard,
                cluster.replica,
                f"; the {groups} notified group(s) are sent again once" if groups else "",
            )
        elif role is Role.FOLLOWER:
            log.info(
                "following in shard %s as replica %s: a lower-named replica leads "
                "(or this one has just become visible)",
                cluster.shard,
                cluster.replica,
            )
        else:
            log.warning(
                "replica %s of shard %s cannot see itself on any Alertmanager peer: "
                "no actions until it can (alerts still go out)",
                cluster.replica,
                cluster.shard,
            )

    def _start_silence_sync(self, now: float) -> None:
        """Read the Alertmanager cluster's silences in the background (each cycle)."""
        watchdog = self.watchdog
        if watchdog is None or self._tasks is None:
            return
        if self._silence_sync is not None and not self._silence_sync.done():
            return
        book = watchdog.silence_book
        self._silence_sync = self._tasks.create_task(self._sync_silences(book, now))

    async def _sync_silences(self, book: SilenceBook, now: float) -> None:
        failing = book.remote_error is not None
        if await asyncio.to_thread(book.sync, now):
            if failing:
                log.warning("the Alertmanager cluster's silences are read again")
        elif not failing:
            log.warning(
                "the Alertmanager cluster's silences could not be read; the last known "
                "ones stay in force: %s",
                book.remote_error,
            )

    def _start_listeners(self, config: Config) -> None:
        """One Telegram listener per telegram receiver with listen: true (restarted when
        its settings change); each polls only while this process leads."""
        watchdog = self.watchdog
        if watchdog is None or self._tasks is None:
            return
        wanted = {
            r.name: r.settings
            for r in config.receivers
            if isinstance(r.settings, TelegramConfig) and r.settings.listen
        }
        for name, (settings, task) in list(self._listeners.items()):
            if wanted.get(name) != settings:
                task.cancel()
                del self._listeners[name]
        for name, settings in wanted.items():
            if name in self._listeners:
                continue
            listener = TelegramListener(
                name,
                settings,
                book=watchdog.silence_book,
                acknowledge=watchdog.acknowledge,
                status=self._chat_status,
                store=self.store,
                should_listen=lambda: self.status.role == Role.LEADER.value,
                clock=self.clock,
            )
            self._listeners[name] = (settings, self._tasks.create_task(listener.run()))

    def _stop_listeners(self) -> None:
        for _, task in self._listeners.values():
            task.cancel()
        self._listeners.clear()

    def _chat_status(self) -> str:
        watchdog = self.watchdog
        assert watchdog is not None
        now = self.clock()
        return status_text(
            watchdog.alerts.alerts(),
            watchdog.silence_book.active(now),
            now,
            header=self._status_line(),
        )

    def _start_heartbeat(self, now: float) -> None:
        """Ping the dead man's switch after a good cycle, in the background, when due."""
        pinger = self._pinger
        early = self.config.poll.interval_s / 2
        if pinger is None or self._tasks is None or not pinger.due(now, early_s=early):
            return
        if self._pinging is not None and not self._pinging.done():
            return
        self._pinging = self._tasks.create_task(self._heartbeat(pinger, now))

    async def _heartbeat(self, pinger: HeartbeatPinger, now: float) -> None:
        was_failing = pinger.last_error is not None
        try:
            await asyncio.to_thread(pinger.ping, now)
        except NotifyError as exc:
            if not was_failing:
                log.warning("heartbeat ping to %s failed: %s", pinger.target, exc)
            self.metrics.record_heartbeat(False)
        else:
            if was_failing:
                log.info("heartbeat pings to %s work again", pinger.target)
            self.metrics.record_heartbeat(True)

    def _status_line(self) -> str:
        firing = len(self.watchdog.firing()) if self.watchdog is not None else 0
        return status_line(self.status, firing)

    # -- delivery -----------------------------------------------------------------------

    async def _deliver(self, now: float, wait_s: float, *, saved: bool) -> None:
        """Run the outbox in a thread; record the state file's health either way."""
        outbox = self.outbox
        assert outbox is not None
        problem: str | None = None
        if not saved:
            problem = "the last cycle's state was not saved; notifications wait in memory"
        try:
            delivery = await asyncio.to_thread(outbox.deliver_due, now, wait_s=wait_s)
        except StoreError as exc:
            log.error("STATE FILE FAILING in the outbox: %s", exc)
            problem = str(exc)
        else:
            failing = await asyncio.to_thread(outbox.failing)
            at = self.clock()
            self.status.delivery_problems = (
                *(p.describe(at) for p in failing),
                *(
                    f"Alertmanager receiver {n!r} failing: {e}"
                    for n, e in self.pusher.failing().items()
                ),
            )
            self.status.outbox_depth = delivery.pending
            self.metrics.observe_outbox(
                delivery.pending,
                outbox.counters(),
                failing=[*(p.receiver for p in failing), *self.pusher.failing()],
            )
            pushing = self._push_task is not None and not self._push_task.done()
            if not delivery.busy and not pushing:
                self._close_retired()  # no thread uses them any more
        self._store_health(problem)

    def _store_health(self, problem: str | None) -> None:
        if problem is None and self._store_problem is not None:
            log.warning("the state file works again")
        self._store_problem = problem
        self.status.store_error = problem
        self.metrics.record_store(problem is None)

    def _start_unsaved(self) -> None:
        """While the state file fails, send the notifications waiting in memory, in the
        background (a slow receiver does not hold polling): alerting must not wait for
        a full disk. One still in flight after DELIVERY_WAIT_S when the file recovers is
        also queued, and sent twice (at least once)."""
        watchdog, outbox = self.watchdog, self.outbox
        if watchdog is None or outbox is None or self._tasks is None or watchdog.saved:
            return
        if self._unsaved_task is not None and not self._unsaved_task.done():
            return
        waiting = watchdog.unsaved()
        if waiting:
            self._unsaved_task = self._tasks.create_task(self._send_unsaved(waiting))

    async def _send_unsaved(self, waiting: list[Notification]) -> None:
        watchdog, outbox = self.watchdog, self.outbox
        assert watchdog is not None and outbox is not None
        done = await asyncio.to_thread(outbox.send_unsaved, waiting, self.clock())
        watchdog.sent_unsaved(done)

    def _start_push(self, now: float) -> None:
        """Push the engine's alert state to every state receiver, in the background;
        skipped while the previous push still runs (the next one carries the newer state)."""
        if not self.pusher.receivers or self._tasks is None or self.watchdog is None:
            return
        if self._push_task is not None and not self._push_task.done():
            log.debug("the previous Alertmanager push is still running: this cycle's skipped")
            return
        jobs = self.pusher.prepare(self.watchdog.alerts.alerts(), now)
        self._push_task = self._tasks.create_task(self._push(self.pusher, jobs, now))

    async def _push(self, pusher: StatePush, jobs: Sequence[PushJob], now: float) -> None:
        outcome = await asyncio.to_thread(pusher.send, jobs)
        for name, ok in outcome.accepted.items():
            self.metrics.record_push(name, ok)
        if outcome.heartbeat is not None and pusher.elects:
            await self._elect(pusher, pushed=outcome.heartbeat, at=now)

    async def _elect(self, pusher: StatePush, *, pushed: bool, at: float) -> None:
        """Read the shard's live heartbeats back from every peer (when the push made at
        ``at`` was taken) and hand the outcome to the replica's Leadership."""
        read = await asyncio.to_thread(pusher.read_role, self.clock()) if pushed else Role.ISOLATED
        self.leadership.heard(read, pushed=pushed, at=at)

    async def _reelect(self) -> None:
        """Read the shard's heartbeats again just before the cycle decides anything.

        Elected only after the push, a dead leader's expiry would be acted on a whole
        interval late. The last accepted push's time still bounds the role."""
        pusher, last = self.pusher, self.leadership.last_push_at
        if not pusher.elects or last is None:
            return
        if self._push_task is not None and not self._push_task.done():
            return  # that push elects when it is done
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REELECT_WAIT_INTERVALS * self.config.poll.interval_s):
                await self._elect(pusher, pushed=True, at=last)

    async def _finish_push(self) -> None:
        task = self._push_task
        if task is None or task.done():
            return
        try:
            async with asyncio.timeout(PUSH_WAIT_S):
                await asyncio.shield(task)
        except TimeoutError:
            log.warning("the last Alertmanager push did not finish within %g s", PUSH_WAIT_S)
            task.cancel()

    # -- reload -------------------------------------------------------------------------

    async def _reload(self) -> None:
        self._reload_wanted = False
        self.notifier.reloading()
        try:
            try:
                config = await asyncio.to_thread(load_config, self.config_path)
                config = self.overrides.apply(config)
                pushed, direct = _split_integrations(config)
            except ConfigError as exc:
                self._refuse(exc.problems)
                return
            except Exception:  # a loader bug must not end a running daemon
                log.exception("reading %s failed with an internal error", self.config_path)
                self._refuse(
                    [
                        ConfigProblem(
                            str(self.config_path), None, "internal error reading it (see the log)"
                        )
                    ]
                )
                return
            self._apply(config, pushed, direct)
        finally:
            self.notifier.ready(self._status_line())

    def _refuse(self, problems: Sequence[ConfigProblem]) -> None:
        count = len(problems)
        self._log_problems("the new configuration", problems)
        log.error(
            "config reload refused: %s is invalid (%d problem%s); the running configuration stays",
            self.config_path,
            count,
            "" if count == 1 else "s",
        )
        self.status.config_error = (
            f"{self.config_path} is invalid ({count} problem{'' if count == 1 else 's'}); "
            "running the previous configuration"
        )
        self.metrics.record_reload(False)

    def _apply(
        self,
        config: Config,
        pushed: dict[str, StateReceiver],
        direct: dict[str, Integration],
    ) -> None:
        old = self.config
        if self.redactor is not None:
            self.redactor.set_config(config)
        for what, before, after in (
            ("state_dir", old.state_dir, config.state_dir),
            ("http.listen", old.http.listen, config.http.listen),
        ):
            if before != after:
                log.warning(
                    "%s changed (%s -> %s): it takes effect at the next restart",
                    what,
                    before,
                    after,
                )
        watchdog, outbox = self.watchdog, self.outbox
        assert watchdog is not None and outbox is not None
        self.policy.state_receivers = frozenset(pushed)
        outbox.set_integrations(direct)
        outbox.round_s = config.poll.interval_s
        watchdog.configure(config, reload=True)
        self.collector.settle_next()
        self._set_pinger(config)
        self._retired += [*self.pusher.receivers.values(), *self._direct.values()]
        old_pusher, self.pusher = self.pusher, _state_push(config, pushed)
        self.pusher.keep_health(old_pusher)
        watchdog.silence_book.set_remote(silence_remote(self.pusher.cluster_receiver))
        self._start_listeners(config)
        self._direct = direct
        self.config = config
        status = self.status
        status.interval_s = config.poll.interval_s
        who = (config.cluster.name, config.cluster.shard, config.cluster.replica)
        lifetime = HEARTBEAT_LIFETIME_INTERVALS * config.poll.interval_s
        if who != (old.cluster.name, old.cluster.shard, old.cluster.replica):
            log.warning("the shard or replica changed: the role is decided again")
            self.leadership.reset(config.cluster.replica, lifetime)
        else:
            self.leadership.lifetime_s = lifetime
        status.shard = str(config.cluster.shard)
        status.replica = config.cluster.replica
        if self.server is not None:
            self.server.configure(config.http)
        status.config_error = None
        self.metrics.record_reload(True)
        log.info(
            "configuration reloaded: %d miners, %d rules, %d receivers",
            len(config.miners),
            len(config.rules),
            len(config.receivers),
        )
        for warning in config.warnings:
            log.warning("%s", warning)
        if config.actions_summary() != old.actions_summary():
            log.warning("%s", config.actions_summary())
        _warn_watchdog_budget(config, self.notifier.watchdog_interval_s)

    @staticmethod
    def _log_problems(what: str, problems: Sequence[ConfigProblem]) -> None:
        for problem in problems:
            log.error("%s: %s", what, problem)

    # -- stopping -----------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """A last delivery, state saved; the caller closes the rest."""
        if self.server is not None:
            await self.server.stop()
        watchdog = self.watchdog
        assert watchdog is not None
        saved = watchdog.save(self.clock())
        try:
            async with asyncio.timeout(FINAL_DELIVERY_WAIT_S + 2.0):
                await self._deliver(self.clock(), FINAL_DELIVERY_WAIT_S, saved=saved)
        except TimeoutError:
            log.warning("the last delivery did not finish in time; the outbox keeps the rest")
        if self.status.outbox_depth:
            log.info(
                "%d notification(s) stay in the outbox for the next start", self.status.outbox_depth
            )
        outbox = self.outbox
        assert outbox is not None
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await asyncio.to_thread(outbox.close, wait=True)
        except TimeoutError:
            log.warning(
                "sends still in flight after %g s; they may be sent again at the next start",
                CLOSE_WAIT_S,
            )
        except StoreError as exc:
            log.error("STATE FILE FAILING while stopping: %s", exc)
        log.info("stopped")

    def _close_retired(self) -> None:
        retired, self._retired = self._retired, []
        for integration in retired:
            integration.close()

    def _close(self) -> None:
        """Release everything that was opened (also after a failed start)."""
        for integration in [
            *self._retired,
            *self.pusher.receivers.values(),
            *self._direct.values(),
        ]:
            with contextlib.suppress(Exception):
                integration.close()
        self._retired = []
        if self._pinger is not None:
            self._pinger.close()
        if self.store is not None:
            self.store.close()
        self.notifier.close()


async def run_daemon(
    config_path: str | Path,
    *,
    clock: Callable[[], float] = time.time,
    notifier: Notifier | None = None,
    registry: CollectorRegistry | None = None,
    log_level: int = logging.INFO,
    configure_logging: bool = True,
    overrides: Overrides | None = None,
) -> int:
    """``cgwatchdog run``: the daemon in the foreground; returns the exit code.

    2 when the configuration is invalid (nothing has started then), 1 when the state
    file or the HTTP port cannot be opened, 0 after a clean stop on SIGTERM/SIGINT.
    """
    redactor = setup_logging(level=log_level) if configure_logging else None
    overrides = overrides if overrides is not None else Overrides()
    try:
        config = await asyncio.to_thread(load_config, config_path)
        config = overrides.apply(config)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        count = len(exc.problems)
        log.error(
            "not starting: %d problem%s in the configuration", count, "" if count == 1 else "s"
        )
        return EXIT_USAGE
    if redactor is not None:
        redactor.set_config(config)
    daemon = Daemon(
        config_path,
        config,
        clock=clock,
        notifier=notifier,
        registry=registry,
        redactor=redactor,
        overrides=overrides,
    )
    return await daemon.run()
