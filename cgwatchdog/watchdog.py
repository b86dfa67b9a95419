"""One watchdog cycle, end to end: poll -> snapshot -> rules -> alerts -> notifications.

:class:`Watchdog` holds the engines of one configuration and runs one cycle when asked;
it does not schedule, open ports or handle signals (``daemon.py`` does, and ``poll`` and
``demo`` drive it too). Everything a restart must not forget is saved to the store at the
end of each cycle in one transaction, together with the notifications the cycle decided
to send, so a notification is either both recorded as sent and queued, or neither.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cgwatchdog.actions import (
    ANY_CAPABILITIES,
    ORIGINAL_ALERTNAME_LABEL,
    SIGNAL_ALERTNAMES,
    ActionEvent,
    ActionExecutor,
    ActionOutcome,
    ActionPlanner,
    Capabilities,
    PlannedAction,
)
from cgwatchdog.alerts import (
    Alert,
    AlertEngine,
    AlertView,
    Dispatcher,
    Evaluation,
    Matcher,
    Notification,
    Route,
    Transition,
    fingerprint,
    fleet_incidents,
)
from cgwatchdog.config import Config, MinerConfig, RouteConfig, SilenceConfig
from cgwatchdog.errors import NotSent, StoreError
from cgwatchdog.firmware import Channel, Family
from cgwatchdog.notify.outbox import Outbox
from cgwatchdog.poller import Poller
from cgwatchdog.rules import RuleEngine
from cgwatchdog.silences import Matcher as SilenceMatcher
from cgwatchdog.silences import Silence, SilenceBook
from cgwatchdog.snapshot import PollResult
from cgwatchdog.store import Store

__all__ = ["CycleReport", "Watchdog", "build_route", "build_silences"]

log = logging.getLogger("cgwatchdog")
_T = TypeVar("_T")

STATE_ALERTS = "alerts"
STATE_DISPATCHER = "dispatcher"
STATE_RULES = "rules"
STATE_ACTIONS = "actions"
STATE_SILENCES = "silences"
ACTION_ALERTNAME = "RemediationAction"
ANNOUNCED_ACTION_EVENTS = frozenset({"succeeded", "failed", "dry-run"})
"""Action events told to receivers; exhaustion and read-only miners go out as alerts."""
RULES_SAVE_INTERVAL_S = 300.0
"""In the state file the history (baselines) is ~4 KB a miner, 40 MB at 10,000: saved every few minutes,
not every cycle; after a crash a baseline is at most this much older."""


def _matchers(match: Mapping[str, str], match_re: Mapping[str, str]) -> tuple[Matcher, ...]:
    return tuple(Matcher(name, value) for name, value in match.items()) + tuple(
        Matcher(name, value, regex=True) for name, value in match_re.items()
    )


def build_route(config: RouteConfig) -> Route:
    """The dispatcher's routing tree from the validated ``route:`` section."""
    return Route(
        receiver=config.receiver,
        group_by=tuple(config.group_by),
        group_wait_s=config.group_wait_s,
        group_interval_s=config.group_interval_s,
        repeat_interval_s=config.repeat_interval_s,
        matchers=_matchers(config.match, config.match_re),
        continue_=config.continue_,
        routes=tuple(build_route(child) for child in config.routes),
    )


def build_silences(configs: Sequence[SilenceConfig]) -> list[Silence]:
    """The silences of the ``silences:`` section (source ``config``; the id is a digest
    of the entry, so it stays the same across reloads)."""
    built = []
    for s in configs:
        matchers = tuple(SilenceMatcher(name, value) for name, value in s.match.items()) + tuple(
            SilenceMatcher(name, value, regex=True) for name, value in s.match_re.items()
        )
        starts = 0.0 if s.starts is None else s.starts.timestamp()
        ends = s.until.timestamp()
        digest = hashlib.sha256(
            json.dumps([[str(m) for m in matchers], starts, ends, s.maintenance]).encode()
        ).hexdigest()
        built.append(
            Silence(
                id=f"config-{digest[:12]}",
                matchers=matchers,
                starts_at=starts,
                ends_at=ends,
                comment=s.comment,
                created_by="the config file",
                maintenance=s.maintenance,
                source="config",
            )
        )
    return built


@dataclass(slots=True, repr=False)
class CycleReport:
    """What one cycle saw and decided."""

    started_at: float
    finished_at: float
    results: list[PollResult]
    evaluation: Evaluation
    transitions: list[Transition]
    notifications: list[Notification]
    fleet_incidents: set[str]
    problems: list[str] = field(default_factory=list)
    planned: list[PlannedAction] = field(default_factory=list)
    outcomes: list[ActionOutcome] = field(default_factory=list)
    action_events: list[ActionEvent] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        """Wall time of the cycle."""
        return self.finished_at - self.started_at

    @property
    def up(self) -> int:
        """Miners that answered."""
        return sum(1 for result in self.results if result.up)

    def __repr__(self) -> str:
        # Short: the whole fleet's results would make a repr of megabytes, and Python
        # 3.11's asyncio.run formats the repr of the task whose result this is when it
        # restores the SIGINT handler (twice; 0.7 s at 10,000 miners for a one-shot poll).
        return (
            f"<CycleReport {self.up}/{len(self.results)} up, "
            f"{len(self.transitions)} transitions, {self.duration_s:.3f} s>"
        )


def save_rules(store: Store, rules: RuleEngine, now: float) -> None:
    """Save the rule engine's history: a small document and a record a miner."""
    header, records = rules.state()
    with store.transaction():
        store.save_state(STATE_RULES, header, now)
        store.save_rows(STATE_RULES, records)

class Watchdog:
    """The engines of one configuration and the cycle that runs them."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        outbox: Outbox | None = None,
        clock: Callable[[], float] = time.time,
        poller: Poller | None = None,
        acting: bool = True,
    ) -> None:
        self.clock = clock
        self.store = store
        self.outbox = outbox
        self._backlog: list[Notification] = []
        self._rules_saved_at = float("-inf")
        self.saved = True
        self.config = config
        self.poller = poller or Poller(
            config.miners,
            timeout=config.poll.timeout_s,
            connect_timeout=config.poll.connect_timeout_s,
            concurrency=config.poll.concurrency,
            max_reply_bytes=config.poll.max_reply_bytes,
            clock=clock,
        )
        self.rules = RuleEngine(
            config.rules, config.miners, restart_grace_s=config.actions.restart_grace_s
        )
        self.alerts = AlertEngine()
        self.planner = ActionPlanner(config.actions, config.rules)
        self.executor = ActionExecutor(self._channel_for, clock=clock)
        self._capabilities: dict[str, tuple[Family, Capabilities]] = {}
        self.acting = acting
        """Whether this instance runs actions (a follower replica, or ``poll``, does not)."""
        self.dispatcher: Dispatcher | None = None
        self._silences_unsaved = False
        self.silence_book = SilenceBook(persist=self._persist_silences)
        """Every silence honoured (config, API, cluster); the daemon's HTTP API and chat
        bot change it, the daemon syncs it with the Alertmanager cluster."""
        self._restore()
        self.configure(config)

    # -- configuration -------------------------------------------------------------------

    def _send_resolved(self, config: Config) -> dict[str, bool]:
        return {receiver.name: receiver.send_resolved for receiver in config.receivers}

    def configure(self, config: Config, *, reload: bool = False) -> None:
        """Apply a (re)loaded configuration; alert state, history and the log are kept."""
        self.config = config
        self._miners = {miner.name: miner for miner in config.miners}
        self._capabilities = {}
        if reload:
            self.planner.configure(config.actions, config.rules)
        self.poller.set_targets(config.miners)
        self.rules.configure(
            config.rules, config.miners, restart_grace_s=config.actions.restart_grace_s
        )
        self.silence_book.set_config(build_silences(config.silences))
        if config.route is None:
            self.dispatcher = None
            return
        route = build_route(config.route)
        if self.dispatcher is None:
            self.dispatcher = Dispatcher(route, send_resolved=self._send_resolved(config))
        else:
            self.dispatcher.set_route(route, send_resolved=self._send_resolved(config))
        known = {miner.name for miner in config.miners}
        rule_names = {rule.name for rule in config.rules} | set(SIGNAL_ALERTNAMES)
        # Alerts of miners or rules that are gone would otherwise fire forever.
        self.alerts.retire(
            lambda alert: alert.miner not in known or alert.alertname not in rule_names,
            self.clock(),
        )

    def _restore(self) -> None:
        """Take up the state the last run saved; a damaged document starts that part afresh."""
        config = self.config
        alerts = self._load(STATE_ALERTS, AlertEngine.from_dict)
        if alerts is not None:
            self.alerts = alerts
        store = self.store
        rules = self._load(
            STATE_RULES,
            lambda data: RuleEngine.from_dict(
                data,
                config.rules,
                config.miners,
                restart_grace_s=config.actions.restart_grace_s,
                records=() if store is None else store.load_rows(STATE_RULES),
            ),
        )
        if rules is not None:
            self.rules = rules
        planner = self._load(
            STATE_ACTIONS, lambda data: ActionPlanner.from_dict(data, config.actions, config.rules)
        )
        if planner is not None:
            self.planner = planner
        silences = self._load(STATE_SILENCES, lambda data: data)
        if silences is not None:
            try:
                self.silence_book.restore(silences)
            except (ValueError, TypeError) as exc:
                log.error(
                    "state %r could not be restored, starting it afresh: %s", STATE_SILENCES, exc
                )
        if config.route is not None:
            route = build_route(config.route)
            send_resolved = self._send_resolved(config)
            self.dispatcher = self._load(
                STATE_DISPATCHER,
                lambda data: Dispatcher.from_dict(data, route, send_resolved=send_resolved),
            )

    def _load(self, key: str, build: Callable[[Mapping[str, Any]], _T]) -> _T | None:
        """The object saved under ``key``, or None (nothing saved, or unreadable: logged)."""
        if self.store is None:
            return None
        try:
            data = self.store.load_state(key)
            return None if data is None else build(data)
        except (StoreError, ValueError, KeyError, TypeError) as exc:
            log.error("state %r could not be restored, starting it afresh: %s", key, exc)
            return None

    # -- the cycle -----------------------------------------------------------------------

    async def cycle(self, *, scheduled_at: float | None = None) -> CycleReport:
        """Poll every miner once, evaluate, update alerts, decide, save, then act.

        ``scheduled_at``: when the cycle was due (the daemon's schedule); alerts count
        ``for`` from one due time to the next, as Prometheus evaluates each rule group at
        its scheduled timestamp, so a poll that ran a little longer than the one before
        does not hold a firing back by a whole interval.
        """
        started = self.clock()
        results = await self.poller.poll()
        report = self.evaluate(results, started, scheduled_at=scheduled_at)
        self.commit(report)
        self._log_actions(report.action_events)
        if report.planned:
            await self.act(report)
        return report

    def evaluate(
        self, results: list[PollResult], started: float, *, scheduled_at: float | None = None
    ) -> CycleReport:
        """The logic half of a cycle, on results already polled (no I/O). The alert
        lifecycle runs at ``scheduled_at`` when given (see :meth:`cycle`), the rest now."""
        now = self.clock()
        config = self.config
        names = [miner.name for miner in config.miners]
        evaluation = self.rules.observe(results, now, held=self.planner.held_miners(now))
        evaluation = self.planner.with_signals(evaluation, names, now)
        due = now if scheduled_at is None else min(scheduled_at, now)
        transitions = self.alerts.update(evaluation, due)
        alerts = self.alerts.alerts()
        incidents = fleet_incidents(alerts, len(names), config.actions.fleet_incident_share)
        by_name = {result.name: result for result in results}
        self.planner.verify(by_name, alerts, now, evaluated=evaluation.evaluated)
        planned: list[PlannedAction] = []
        if self.acting:
            planned = self.planner.plan(
                alerts, by_name, fleet_incidents=incidents,
                miners={miner.name: miner for miner in config.miners}, now=now,
                capabilities=self.capabilities,
                maintenance=self.silence_book.maintenance_check(now),
            )  # fmt: skip
        notifications: list[Notification] = []
        if self.dispatcher is not None:
            notifications = self.dispatcher.tick(
                alerts, self.silence_book.active(now), now, fleet_incidents=incidents
            )
        return CycleReport(
            started_at=started,
            finished_at=now,
            results=results,
            evaluation=evaluation,
            transitions=transitions,
            notifications=notifications,
            fleet_incidents=incidents,
            problems=list(self.rules.problems),
            planned=planned,
            action_events=self.planner.events(),
        )

    # -- firmware families ----------------------------------------------------------------

    def capabilities(self, name: str) -> Capabilities:
        """What a miner's control channel can do, as its recognised family says (anything,
        until it has answered: the channel then says why not)."""
        family = self.poller.family_of(name)
        if family is None:
            return ANY_CAPABILITIES
        known = self._capabilities.get(name)
        if known is not None and known[0] is family:
            return known[1]
        miner = self._miners.get(name)

        def why_not(do: str, device: str | None) -> str | None:
            return family.why_not(do, miner, device)

        capabilities = Capabilities(
            family.name,
            why_not,
            family.restart_window_s,
            family.reboot_window_s,
            family.why_not_pool,
        )
        self._capabilities[name] = (family, capabilities)
        return capabilities

    def _channel_for(self, miner: MinerConfig, timeout_s: float) -> Channel:
        """The control channel of ``miner``: its recognised family's, with its credentials.
        Refuses (NotSent) before the miner has answered, or when it answers as another
        family than configured: credentials go only to the family they are for."""
        family = self.poller.family_of(miner.name)
        recognised = self.poller.recognised_of(miner.name)
        if family is None:
            raise NotSent(
                f"{miner.name}: its firmware is not known yet (it has not answered): nothing sent"
            )
        if recognised is not None and recognised is not family:
            raise NotSent(
                f"{miner.name} answers as {recognised.name}, but the config says firmware: "
                f"{family.name}: its credentials are not sent (fix firmware: in the config)"
            )
        target = family.target(
            miner, timeout_s=timeout_s, connect_timeout_s=self.config.poll.connect_timeout_s
        )
        return family.channel(target)

    async def act(self, report: CycleReport) -> None:
        """Carry out the cycle's planned actions, concurrently (their number is bounded by
        ``max_in_flight``), and record what came of them."""
        miners = {miner.name: miner for miner in self.config.miners}

        async def one(action: PlannedAction) -> ActionOutcome:
            self.planner.started(action, self.clock())
            outcome = await self.executor.execute(action, miners[action.miner])
            self.planner.finished(outcome, self.clock())
            return outcome

        report.outcomes = list(
            await asyncio.gather(*(one(a) for a in report.planned if a.miner in miners))
        )
        events = self.planner.events()
        report.action_events.extend(events)
        self._log_actions(events)
        self._announce(events)
        if self.store is not None:
            try:
                self.store.save_state(STATE_ACTIONS, self.planner.to_dict(), self.clock())
            except StoreError as exc:
                log.error("ACTION STATE NOT SAVED: %s", exc)

    def _announce(self, events: Sequence[ActionEvent]) -> None:
        """Tell the receivers of the alert that an action was taken (or dry-run, or failed).

        Each announcement goes where the alert itself goes (same routes), as a one-off
        ``RemediationAction`` alert, through the durable outbox like any notification;
        not while a silence holds the alert or the announcement itself.
        """
        if self.dispatcher is None:
            return
        announcements: list[Notification] = []
        for event in events:
            if event.kind.value not in ANNOUNCED_ACTION_EVENTS:
                continue
            alert = self.alerts.get(event.alert_fingerprint)
            base = dict(alert.labels) if alert is not None else {"miner": event.miner}
            labels = {
                **{k: v for k, v in base.items() if k != "alertname"},
                "alertname": ACTION_ALERTNAME,
                ORIGINAL_ALERTNAME_LABEL: event.alertname,
                "action": event.do,
                "severity": "info",
            }
            if self.silence_book.silenced(base, event.at) or self.silence_book.silenced(
                labels, event.at
            ):
                continue
            view = AlertView(
                fingerprint=fingerprint(labels),
                labels=labels,
                annotations={"summary": event.message},
                value=f"{event.kind.value}: {event.detail}" if event.detail else event.kind.value,
                status="firing",
                starts_at=event.at,
                ends_at=event.at,
            )
            for route in self.dispatcher.route.match(base):
                announcements.append(
                    Notification(
                        receiver=route.receiver,
                        group_key=f"action/{event.alert_fingerprint}/{event.at:.3f}/{event.kind.value}",
                        group_labels={"alertname": ACTION_ALERTNAME, "miner": event.miner},
                        status="firing",
                        alerts=(view,),
                    )
                )
        if announcements and self.store is not None and self.outbox is not None:
            try:
                self.outbox.enqueue(announcements, self.clock())
            except StoreError as exc:
                log.error("action announcements not queued: %s", exc)

    def _log_actions(self, events: Sequence[ActionEvent]) -> None:
        for event in events:
            log.warning(event.message, extra={"MINER": event.miner, "ALERTNAME": event.alertname})
        if self.store is None or not events:
            return
        try:
            with self.store.transaction():
                for e in events:
                    self.store.record_action(
                        e.at, e.miner, e.alertname, e.action, e.kind.value, e.detail
                    )
        except StoreError as exc:
            log.error("ACTION LOG NOT SAVED (%d events): %s", len(events), exc)

    def commit(self, report: CycleReport) -> bool:
        """Queue the cycle's notifications and save every engine's state, atomically.

        With no store, notifications are only kept for the caller. When the store fails
        (disk full, read-only, locked) the error is logged loudly, the notifications wait
        in memory and the next cycle tries again; alerting goes on from memory.
        ``saved`` tells whether the last attempt reached the state file.
        """
        self._backlog.extend(report.notifications)
        return self._save(report.finished_at, history=False)

    def save(self, now: float) -> bool:
        """Save everything now, the rule history included (on the way out)."""
        return self._save(now, history=True)

    def _save(self, now: float, *, history: bool) -> bool:
        if self.store is None or self.outbox is None:
            return True
        try:
            with self.store.transaction():
                self.outbox.enqueue(self._backlog, now)
                self.store.save_state(STATE_ALERTS, self.alerts.to_dict(), now)
                if history or now - self._rules_saved_at >= RULES_SAVE_INTERVAL_S:
                    save_rules(self.store, self.rules, now)
                    self._rules_saved_at = now
                if self.dispatcher is not None:
                    self.store.save_state(STATE_DISPATCHER, self.dispatcher.to_dict(), now)
                self.store.save_state(STATE_ACTIONS, self.planner.to_dict(), now)
                if self._silences_unsaved:
                    self.store.save_state(STATE_SILENCES, self.silence_book.to_json(), now)
                    self._silences_unsaved = False
        except StoreError as exc:
            log.error(
                "STATE NOT SAVED (%d notifications waiting in memory): %s", len(self._backlog), exc
            )
            self.saved = False
            return False
        self._backlog.clear()
        self.saved = True
        return True

    def _persist_silences(self, document: dict[str, Any]) -> None:
        """Save the silence book at once (it may be called from a worker thread)."""
        if self.store is None:
            return
        try:
            self.store.save_state(STATE_SILENCES, document, self.clock())
        except StoreError as exc:
            self._silences_unsaved = True  # the next cycle's save tries again
            log.error("SILENCES NOT SAVED (in force until a restart): %s", exc)

    def acknowledge(self, alert_id: str, by: str, now: float) -> Alert:
        """Acknowledge an alert (``AlertEngine.acknowledge``: KeyError, ValueError) and
        save the alert state at once; call it on the event loop's thread."""
        alert = self.alerts.acknowledge(alert_id, by, now)
        log.info(
            "alert %s (%s on %s) acknowledged by %s",
            alert.fingerprint,
            alert.alertname,
            alert.miner or "the fleet",
            alert.acknowledged_by,
        )
        if self.store is not None:
            try:
                self.store.save_state(STATE_ALERTS, self.alerts.to_dict(), now)
            except StoreError as exc:
                log.error("acknowledgement not saved yet (the next cycle tries again): %s", exc)
        return alert

    def unsaved(self) -> list[Notification]:
        """Notifications decided but not in the outbox: the state file failed."""
        return list(self._backlog)

    def sent_unsaved(self, done: Sequence[Notification]) -> None:
        """Forget notifications delivered (or refused for good) straight from memory."""
        ids = {id(n) for n in done}
        self._backlog = [n for n in self._backlog if id(n) not in ids]

    def firing(self) -> list[Alert]:
        """Alerts firing now."""
        return self.alerts.firing()
