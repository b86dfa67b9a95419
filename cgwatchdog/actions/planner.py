"""The remediation planner: decides what to do about firing alerts, with safeguards; pure.

::

    FIRING alerts ──ActionPlanner.plan──> [PlannedAction] ──ActionExecutor.execute──> ActionOutcome
    + poll results    ladders, safeguards      (pure)       family channel / exec (I/O)     │
          │                                                                               │
          └──ActionPlanner.verify (following cycles) <── started() / finished() <─────────┘

Ladders
    Every FIRING alert whose rule has ``actions`` gets a ladder: its steps are tried in
    order until one is verified. The ladder's states and moves are data (``LadderState``,
    ``LadderEvent``, ``TRANSITIONS``), as the alert lifecycle's are in alerts.py. A step
    becomes due ``after`` from the alert's ``fired_at``; a sent step is verified on the
    following cycles; a step that failed, or was not verified within ``verify_within``,
    escalates to the next step; when the last one fails the ladder is EXHAUSTED: one
    ``RemediationFailed`` signal (critical) and no more actions on that miner until the
    alert resolves or :meth:`ActionPlanner.clear` is called. Nothing loops.

Steps name what they do, not how (the miner's firmware family maps them to its control
channel, ``cgwatchdog/firmware/``). A step the family cannot do is a clear "not
supported by <family>: <why>" decision in the plan, and the ladder moves on; so is a
``switchpool`` that would move a miner off an Alive pool that is accepting shares: a
dead higher-priority pool while a healthy backup mines is a notice, not a repair.

Verification, per step (never trusting a reply: many firmwares drop the connection)
    ``restart`` and ``reboot``: the miner's ``Elapsed`` went down (or it came back with an
    Elapsed no longer than the time since the step) *and* the condition cleared (the
    alert resolved, or its rule was judged this cycle without the condition being true;
    alerts of a restarted miner hold their state during ``restart_grace``, so "cleared"
    cannot wait for the resolve), within the larger of ``verify_within`` and the family's
    restart or reboot window. ``sleep``: the hashrate fell to almost nothing. ``wake``:
    the miner hashes again. ``exec``: the condition cleared. ``switchpool``: the active
    pool changed and is Alive. ``disable``: the device reports disabled. ``enable``: the
    device reports enabled (and, right after a ``disable`` step, the condition cleared:
    the pair re-initialises the board). A verified ``disable`` followed by an ``enable``
    step goes on to it at once. After a verified restart or exec, the condition coming
    back while the alert still fires counts as that step failing (escalate).

Safeguards (stages, each a small function in ``SAFEGUARDS``, tried in order; the first
that objects holds the step back, logged once per change of reason)
    a maintenance silence matching the alert (``plan(maintenance=...)``); exhausted
    miner; read-only API; fleet incident for the alertname; the condition not
    seen this cycle (an escalation goes on when the miner did not answer: a hung miner is
    what a power-cycle is for); another action on the miner in progress; restart grace
    (first steps); ``cooldown`` per miner (first steps only: an escalation after a failed
    verification does not wait a cooldown, the one before it already did); the sliding
    hour's ``max_per_miner_per_hour`` (every step, escalations too); ``max_in_flight``
    fleet-wide (actions planned or sent and not yet finished/verified).

Dry run
    ``actions.dry_run`` (global, which a rule cannot override to act for real) or an
    action's ``dry_run: true``: the step goes through the same stages, is planned and
    logged, and the executor sends nothing. The ladder moves as it would if the step had
    no effect, so the log shows what would happen; dry-run steps count against the
    cooldown and hourly cap of other dry-run steps only, never in flight, and a ladder
    exhausted without one real attempt raises no ``RemediationFailed``.

Refused control
    A miner that refuses its control channel (Code 45 on the cgminer API, wrong
    credentials, a write API switched off) is marked: one ``RemediationDenied`` signal
    saying what to fix, no action on it until a config reload
    (:meth:`ActionPlanner.configure`) or until the channel takes a command again, which
    is checked with a harmless probe at most every ``READ_ONLY_PROBE_INTERVAL_S`` while a
    step waits for it: never a retry storm. A control session another tool holds
    (LuxOS, Whatsminer's token quota, VNish's rate limit) makes the step wait and try
    again, ``MAX_BUSY_RETRIES`` times, ``BUSY_RETRY_S`` doubling up to
    ``BUSY_RETRY_MAX_S`` apart; nothing was done, so the attempt counts toward neither
    the cooldown nor the hourly cap.

Each cycle, in this order (``Watchdog.evaluate`` and ``Watchdog.act`` do it; ``now`` is
the same value throughout)::

    held = planner.held_miners(now)
    evaluation = rules.observe(results, now, held=held)
    evaluation = planner.with_signals(evaluation, miner_names, now)
    alert_engine.update(evaluation, now)
    alerts = alert_engine.alerts()
    incidents = fleet_incidents(alerts, len(miners), settings.fleet_incident_share)
    by_name = {r.name: r for r in results}
    planner.verify(by_name, alerts, now, evaluated=evaluation.evaluated)
    for action in planner.plan(alerts, by_name, fleet_incidents=incidents,
                               miners=miners_by_name, now=now):
        planner.started(action, clock())
        planner.finished(await executor.execute(action, miners_by_name[action.miner]), clock())
    for event in planner.events(): log it, store.record_action(...), metrics, announce
    store.save_state("actions", planner.to_dict(), now)
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import logging
import re
import shlex
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeAlias

from jinja2 import StrictUndefined

from cgwatchdog.alerts import Alert, AlertState, Evaluation, Judged, Signal
from cgwatchdog.config import ActionsConfig, MinerConfig, RuleAction, RuleBase
from cgwatchdog.jsonstate import opt_float, opt_str
from cgwatchdog.sandbox import BoundedSandbox
from cgwatchdog.snapshot import PollResult, Pool, Snapshot
from cgwatchdog.statemachine import Transitions
from cgwatchdog.units import format_duration, format_hashrate

__all__ = [
    "ACCEPTING_WITHIN_S",
    "ANY_CAPABILITIES",
    "BUSY_RETRY_MAX_S",
    "BUSY_RETRY_S",
    "DEFAULT_VERIFY_WITHIN_S",
    "MAX_BUSY_RETRIES",
    "ORIGINAL_ALERTNAME_LABEL",
    "PROBE",
    "READ_ONLY_PROBE_INTERVAL_S",
    "REMEDIATION_DENIED",
    "REMEDIATION_FAILED",
    "SAFEGUARDS",
    "SIGNAL_ALERTNAMES",
    "TRANSITIONS",
    "ActionEvent",
    "ActionEventKind",
    "ActionOutcome",
    "ActionPlanner",
    "Busy",
    "Candidate",
    "Capabilities",
    "Exhausted",
    "Hold",
    "LadderEvent",
    "LadderState",
    "LadderView",
    "PlanContext",
    "PlannedAction",
    "VerificationEvent",
    "exec_env",
    "hold_busy",
    "hold_condition_gone",
    "hold_cooldown",
    "hold_exhausted",
    "hold_fleet_incident",
    "hold_hourly_cap",
    "hold_in_flight",
    "hold_maintenance",
    "hold_read_only",
    "hold_restart_grace",
]

log = logging.getLogger("cgwatchdog.actions")

HOUR_S: Final = 3600.0
# Without verify_within: long enough for a restarted miner to be judged again (the
# hashrate_drop rule waits out a 10 min startup_grace), short for commands that act at once.
DEFAULT_VERIFY_WITHIN_S: Final[Mapping[str, float]] = {
    "restart": 900.0,
    "reboot": 1200.0,
    "exec": 900.0,
    "switchpool": 120.0,
    "disable": 120.0,
    "enable": 120.0,
    "sleep": 300.0,
    "wake": 900.0,
}
# A sleeping miner hashes at most this share of what it did before the sleep step.
SLEEP_HASHRATE_SHARE: Final = 0.1
# A control session held by another tool (LuxOS): the step waits and is tried again at
# most this many times before it counts as failed.
MAX_BUSY_RETRIES: Final = 5
BUSY_RETRY_S: Final = 60.0
BUSY_RETRY_MAX_S: Final = 600.0
# A switchpool never moves a miner off an Alive pool whose last accepted share is this
# recent: it is accepting shares.
ACCEPTING_WITHIN_S: Final = 600.0
# A miner that came back with an Elapsed up to this much longer than the time since our
# restart still counts as restarted by it (poll timestamps and whole-second Elapsed).
RESTART_ELAPSED_SLACK_S: Final = 10.0
# An action planned but never reported finished (the daemon died mid-action) is judged by
# verification once this long past its timeout: the miner shows whether it happened.
NO_OUTCOME_GRACE_S: Final = 60.0
# How often a read-only miner is asked (with the harmless "privileged" command) whether
# its API accepts privileged commands again, while a step waits for it.
READ_ONLY_PROBE_INTERVAL_S: Final = 900.0
# The alert engine stamps last_seen with the cycle's now; plan/verify get the same now.
_SAME_CYCLE_S: Final = 0.1
# What a ladder remembers of its failed steps, for the RemediationFailed notice.
_MAX_FAILURES: Final = 8

REMEDIATION_FAILED: Final = "RemediationFailed"
REMEDIATION_DENIED: Final = "RemediationDenied"
SIGNAL_ALERTNAMES: Final = (REMEDIATION_FAILED, REMEDIATION_DENIED)
ORIGINAL_ALERTNAME_LABEL: Final = "original_alertname"

PROBE: Final = "probe"
_CONDITION_STEPS: Final = frozenset({"restart", "reboot", "exec"})
# Steps that restart the miner: its alerts hold their state after them.
_REBOOT_STEPS: Final = frozenset({"restart", "reboot", "exec"})
_RESTART_STEPS: Final = frozenset({"restart", "reboot"})
_DEVICE_LABEL = re.compile(r"([A-Za-z]+)(\d+)")
_STATE_VERSION: Final = 1

_DETAIL_CHARS: Final = 400


# --- the ladder's state machine, as data ---------------------------------------------


class LadderState(enum.Enum):
    """Where one alert's remediation is. IDLE ladders are not kept, only reported."""

    IDLE = "idle"  # the alert is not firing (or its rule has no actions)
    WAITING = "waiting"  # firing; the step is not due yet, or a safeguard holds it back
    RUNNING = "running"  # planned; the executor has it
    VERIFYING = "verifying"  # sent; watching the miner for its effect
    VERIFIED = "verified"  # it worked; waiting for the alert to resolve
    ESCALATING = "escalating"  # the previous step failed (or was skipped): the next is due
    EXHAUSTED = "exhausted"  # every step failed: notified once, no more actions


class LadderEvent(enum.Enum):
    """What can happen to a ladder."""

    FIRED = "fired"  # an alert with actions is firing and has no ladder
    PLANNED = "planned"  # the due step passed every safeguard
    SENT = "sent"  # the executor reports success (or "sent, reply lost")
    NO_OUTCOME = "no_outcome"  # no outcome came back in time: let verification judge
    DENIED = "denied"  # the miner refused control: read-only API, credentials (waits)
    BUSY = "busy"  # another tool holds the control session: the step waits, tries again
    STEP_FAILED = "step_failed"  # failed, skipped, not verified in time, or came back
    NO_MORE_STEPS = "no_more_steps"  # escalating past the last step
    CONFIRMED = "confirmed"  # verification saw the effect
    NEXT_STEP = "next_step"  # a verified disable goes on to its enable
    RULE_CHANGED = "rule_changed"  # a reload changed the rule's steps
    RESOLVED = "resolved"  # the alert stopped firing (or the rule lost its actions)
    CLEARED = "cleared"  # a person cleared the exhausted miner


_S, _E = LadderState, LadderEvent
TRANSITIONS: Final = Transitions[LadderState, LadderEvent](
    "ladder",
    {
        _S.IDLE: {_E.FIRED: _S.WAITING},
        _S.WAITING: {
            _E.PLANNED: _S.RUNNING,
            _E.STEP_FAILED: _S.ESCALATING,  # the step cannot apply (e.g. BOARD disable)
            _E.RULE_CHANGED: _S.WAITING,
            _E.RESOLVED: _S.IDLE,
        },
        _S.RUNNING: {
            _E.SENT: _S.VERIFYING,
            _E.NO_OUTCOME: _S.VERIFYING,
            _E.DENIED: _S.WAITING,
            _E.BUSY: _S.WAITING,
            _E.STEP_FAILED: _S.ESCALATING,
            _E.RESOLVED: _S.IDLE,
        },
        _S.VERIFYING: {
            _E.CONFIRMED: _S.VERIFIED,
            _E.STEP_FAILED: _S.ESCALATING,
            _E.RESOLVED: _S.IDLE,
        },
        _S.VERIFIED: {
            _E.NEXT_STEP: _S.ESCALATING,
            _E.STEP_FAILED: _S.ESCALATING,
            _E.RESOLVED: _S.IDLE,
        },
        _S.ESCALATING: {
            _E.PLANNED: _S.RUNNING,
            _E.STEP_FAILED: _S.ESCALATING,
            _E.NO_MORE_STEPS: _S.EXHAUSTED,
            _E.RULE_CHANGED: _S.WAITING,
            _E.RESOLVED: _S.IDLE,
        },
        _S.EXHAUSTED: {
            _E.RULE_CHANGED: _S.WAITING,
            _E.RESOLVED: _S.IDLE,
            _E.CLEARED: _S.IDLE,
        },
    },
)
del _S, _E


# --- what flows between planner and executor -----------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """One step the planner decided to take; the executor carries it out as given.

    ``do`` says what (``restart``, ``reboot``, ``switchpool`` to ``pool``, ``disable``
    or ``enable`` ``device``, ``sleep``, ``wake``, ``probe`` for a write-access check):
    the miner's family channel says how. ``argv`` (rendered) and ``env``
    (``CGWATCHDOG_*``) for ``exec``. ``pools`` is the miner's pool list as polled, for
    channels that rewrite the whole list. ``window_s`` is the family's restart or
    reboot window (verification waits at least that long). ``reason`` says why.
    """

    miner: str
    alert_fingerprint: str
    alertname: str
    step: int
    do: str
    pool: int | None
    device: str | None
    argv: tuple[str, ...] | None
    env: Mapping[str, str] = field(hash=False)
    timeout_s: float
    dry_run: bool
    reason: str
    window_s: float = 0.0
    pools: tuple[Pool, ...] = field(default=(), compare=False, hash=False)

    def describe(self) -> str:
        """What is done, in one line: ``restart``, ``disable ASC1``, ``exec /bin/x 'a b'``."""
        if self.argv is not None:
            return "exec " + shlex.join(self.argv)
        if self.pool is not None:
            return f"{self.do} {self.pool}"
        if self.device is not None:
            return f"{self.do} {self.device}"
        return self.do

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (for the planner's saved state)."""
        return {
            "miner": self.miner,
            "alert_fingerprint": self.alert_fingerprint,
            "alertname": self.alertname,
            "step": self.step,
            "do": self.do,
            "pool": self.pool,
            "device": self.device,
            "argv": None if self.argv is None else list(self.argv),
            "env": dict(self.env),
            "timeout_s": self.timeout_s,
            "dry_run": self.dry_run,
            "reason": self.reason,
            "window_s": self.window_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlannedAction:
        """Inverse of :meth:`to_dict`; KeyError/TypeError/ValueError when malformed."""
        argv = data.get("argv")
        do = str(data["do"])
        pool = data.get("pool")
        device = opt_str(data.get("device"))
        # State saved before families: the cgminer command and its parameter.
        command, parameter = opt_str(data.get("command")), opt_str(data.get("parameter"))
        if parameter is not None and do == "switchpool" and pool is None:
            pool = int(parameter)
        if parameter is not None and do in ("disable", "enable") and device is None and command:
            device = f"{command[: -len(do)].upper()}{int(parameter)}"
        return cls(
            miner=str(data["miner"]),
            alert_fingerprint=str(data["alert_fingerprint"]),
            alertname=str(data["alertname"]),
            step=int(data["step"]),
            do=do,
            pool=None if pool is None else int(pool),
            device=device,
            argv=None if argv is None else tuple(str(a) for a in argv),
            env={str(k): str(v) for k, v in dict(data.get("env") or {}).items()},
            timeout_s=float(data["timeout_s"]),
            dry_run=bool(data["dry_run"]),
            reason=str(data.get("reason", "")),
            window_s=float(data.get("window_s", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """What happened when the executor carried out one action.

    ``access_denied``: the miner refused its control channel (Code 45, credentials, a
    write API switched off). ``unconfirmed``: the request reached the miner but no reply
    came (a reboot whose connection dropped): it may have been carried out, so the
    planner lets verification judge it. ``retry``: nothing was done and trying again
    later may work (another tool holds the control session).
    """

    action: PlannedAction
    ok: bool
    detail: str
    started_at: float
    finished_at: float
    access_denied: bool = False
    unconfirmed: bool = False
    retry: bool = False


class ActionEventKind(enum.Enum):
    """Kinds of :class:`ActionEvent`, as logged and stored in the action log."""

    PLANNED = "planned"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DRY_RUN = "dry-run"
    DENIED = "denied"  # Code 45: the miner's API is read-only for this host
    ACCESS_RESTORED = "access-restored"
    VERIFIED = "verified"
    ESCALATED = "escalated"
    EXHAUSTED = "exhausted"
    SKIPPED = "skipped"  # the step cannot apply here (e.g. a BOARD cannot be disabled)
    HELD_BACK = "held-back"
    ENDED = "ended"  # the alert resolved or its rule lost its actions: ladder dropped
    CLEARED = "cleared"


@dataclass(frozen=True, slots=True)
class ActionEvent:
    """Something the planner did or saw, for the log, the store's action log, metrics
    and announcements. ``miner`` is "" for fleet-wide events (a fleet incident)."""

    kind: ActionEventKind
    at: float
    miner: str
    alertname: str
    alert_fingerprint: str
    step: int
    do: str
    action: str
    detail: str
    dry_run: bool = False

    @property
    def message(self) -> str:
        """One line for the log and announcements."""
        who = self.miner or "fleet"
        dry = " (dry run)" if self.dry_run else ""
        what = f" {self.action}" if self.action else ""
        about = f" for {self.alertname}" if self.alertname else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{who}: {self.kind.value}{what}{about}{dry}{detail}"


VerificationEvent: TypeAlias = ActionEvent
"""What :meth:`ActionPlanner.verify` returns: its VERIFIED/ESCALATED/EXHAUSTED events."""


@dataclass(frozen=True, slots=True)
class LadderView:
    """A read-only view of one ladder, for status pages and tests."""

    alert_fingerprint: str
    miner: str
    alertname: str
    state: LadderState
    step: int
    since: float
    failures: tuple[str, ...]


# --- the safeguards: stages of the planning pipeline ----------------------------------


@dataclass(frozen=True, slots=True)
class Hold:
    """A safeguard's objection: ``kind`` is stable (logged once per change), ``reason`` says it."""

    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """A step that is due, before the safeguards.

    ``escalation``: a later step of a ladder whose previous step failed (or was verified
    and leads on): exempt from cooldown and restart grace, not from the hourly cap or
    max_in_flight. ``condition_seen``: the alert's condition was true this cycle;
    ``miner_answered``: the miner answered this cycle's poll; ``labels``: the alert's.
    """

    miner: str
    alertname: str
    fingerprint: str
    step: int
    do: str
    escalation: bool
    dry_run: bool
    condition_seen: bool
    miner_answered: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)


class Busy(NamedTuple):
    """What is in progress on a miner."""

    what: str
    dry_run: bool


class Exhausted(NamedTuple):
    """A miner whose remediation of some alert failed entirely."""

    alertname: str
    real: bool  # whether a real (not dry-run) step was tried


def _can_anything(do: str, device: str | None) -> str | None:
    return None


def _any_pool(pool: Pool) -> str | None:
    return None


def _no_maintenance(labels: Mapping[str, str]) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a miner's control channel can do, as its firmware family says (the wiring
    looks the family up; the planner only reads this)."""

    family: str = "cgminer"
    why_not: Callable[[str, str | None], str | None] = _can_anything
    """``(do, device) -> why not`` (None: it can)."""
    restart_window_s: float = 0.0
    reboot_window_s: float = 0.0
    why_not_pool: Callable[[Pool], str | None] = _any_pool
    """Why a switchpool may not pick this pool (a firmware's dev-fee pool), or None."""

    def window_s(self, do: str) -> float:
        """How long a restart or reboot of this family takes to show (0 for the rest)."""
        if do == "restart":
            return self.restart_window_s
        if do == "reboot":
            return self.reboot_window_s
        return 0.0


ANY_CAPABILITIES: Final = Capabilities()


@dataclass(slots=True)
class PlanContext:
    """What the safeguards look at in one ``plan`` call; planning updates it as it goes.

    ``history``: per miner, (time, dry_run) of the actions of the last hour (or cooldown).
    ``busy``: what is in progress per miner. ``exhausted``: per miner, the alert whose
    ladder failed. ``incidents``: alertname -> share of the fleet it fires on.
    ``maintenance``: an alert's labels -> why they are in maintenance (None: they are not).
    """

    now: float
    settings: ActionsConfig
    results: Mapping[str, PollResult] = field(default_factory=dict)
    incidents: Mapping[str, float] = field(default_factory=dict)
    exhausted: dict[str, Exhausted] = field(default_factory=dict)
    read_only: Collection[str] = frozenset()
    busy: dict[str, Busy] = field(default_factory=dict)
    history: Mapping[str, Sequence[tuple[float, bool]]] = field(default_factory=dict)
    restarted_at: Mapping[str, float] = field(default_factory=dict)
    in_flight: int = 0
    capabilities: Callable[[str], Capabilities] = lambda miner: ANY_CAPABILITIES
    maintenance: Callable[[Mapping[str, str]], str | None] = _no_maintenance


def hold_maintenance(c: Candidate, ctx: PlanContext) -> Hold | None:
    """Hands off what an operator put in maintenance (a maintenance silence matches)."""
    why = ctx.maintenance(c.labels or {"miner": c.miner, "alertname": c.alertname})
    if why is None:
        return None
    return Hold("maintenance", f"in maintenance: {why}")


def hold_exhausted(c: Candidate, ctx: PlanContext) -> Hold | None:
    """No action on a miner whose remediation of some alert failed entirely."""
    exhausted = ctx.exhausted.get(c.miner)
    if exhausted is None or not (c.dry_run or exhausted.real):
        return None
    return Hold(
        "exhausted",
        f"every remediation step for {exhausted.alertname} on this miner failed; no more actions "
        "on it until that alert resolves or an operator clears it",
    )


def hold_read_only(c: Candidate, ctx: PlanContext) -> Hold | None:
    """No action on a miner whose API refused a privileged command (Code 45)."""
    if c.dry_run or c.miner not in ctx.read_only:
        return None
    return Hold(
        "read_only",
        "the miner's API refused a privileged command (Code 45): its --api-allow lacks W: "
        "for this host",
    )


def hold_fleet_incident(c: Candidate, ctx: PlanContext) -> Hold | None:
    """Nothing is repaired one miner at a time while the fleet shares the problem."""
    share = ctx.incidents.get(c.alertname)
    if share is None:
        return None
    return Hold("fleet_incident", f"fleet incident: {c.alertname} on {share:.0%} of the fleet")


def hold_condition_gone(c: Candidate, ctx: PlanContext) -> Hold | None:
    """A step only while the condition is true now (not merely held firing).

    An escalation also goes on when the miner did not answer (its condition could not be
    judged): a miner hung by the failed step is what the next step (power-cycle) is for.
    """
    if c.condition_seen or (c.escalation and not c.miner_answered):
        return None
    return Hold(
        "condition_gone",
        "the condition was not seen this cycle (held by keep_firing_for or restart grace, "
        "or the miner did not answer)",
    )


def hold_busy(c: Candidate, ctx: PlanContext) -> Hold | None:
    """One action at a time per miner."""
    busy = ctx.busy.get(c.miner)
    if busy is None or not (c.dry_run or not busy.dry_run):
        return None
    return Hold("busy", f"another action on this miner is in progress ({busy.what})")


def hold_restart_grace(c: Candidate, ctx: PlanContext) -> Hold | None:
    """A first step waits until a restarted miner has settled (``restart_grace``)."""
    if c.escalation:
        return None
    grace = ctx.settings.restart_grace_s
    ours = ctx.restarted_at.get(c.miner)
    if ours is not None and ctx.now - ours < grace:
        return Hold(
            "restart_grace",
            f"restarted {format_duration(ctx.now - ours)} ago; waiting out restart_grace {format_duration(grace)}",
        )
    result = ctx.results.get(c.miner)
    if isinstance(result, Snapshot) and result.elapsed_s is not None and result.elapsed_s < grace:
        return Hold(
            "restart_grace",
            f"the miner started {format_duration(result.elapsed_s)} ago (Elapsed); waiting out "
            f"restart_grace {format_duration(grace)}",
        )
    return None


def _counted(entries: Sequence[tuple[float, bool]], dry_run: bool) -> list[float]:
    """The history a step is judged against: real steps by real actions only."""
    return [at for at, dry in entries if dry_run or not dry]


def hold_cooldown(c: Candidate, ctx: PlanContext) -> Hold | None:
    """No two actions on one miner within ``cooldown`` (escalations excepted)."""
    cooldown = ctx.settings.cooldown_s
    if c.escalation or cooldown <= 0:
        return None
    times = _counted(ctx.history.get(c.miner, ()), c.dry_run)
    if not times:
        return None
    ago = ctx.now - max(times)
    if ago >= cooldown:
        return None
    return Hold(
        "cooldown",
        f"cooldown: last action on this miner {format_duration(ago)} ago (cooldown {format_duration(cooldown)})",
    )


def hold_hourly_cap(c: Candidate, ctx: PlanContext) -> Hold | None:
    """At most ``max_per_miner_per_hour`` actions in any sliding hour, escalations too."""
    cap = ctx.settings.max_per_miner_per_hour
    since = ctx.now - HOUR_S
    count = sum(1 for at in _counted(ctx.history.get(c.miner, ()), c.dry_run) if at > since)
    if count < cap:
        return None
    return Hold(
        "hourly_cap",
        f"{count} actions on this miner in the last hour (max_per_miner_per_hour {cap})",
    )


def hold_in_flight(c: Candidate, ctx: PlanContext) -> Hold | None:
    """At most ``max_in_flight`` real actions sent and not yet finished or verified."""
    limit = ctx.settings.max_in_flight
    if c.dry_run or ctx.in_flight < limit:
        return None
    return Hold(
        "in_flight", f"{ctx.in_flight} actions in flight fleet-wide (max_in_flight {limit})"
    )


SAFEGUARDS: Final[tuple[Callable[[Candidate, PlanContext], Hold | None], ...]] = (
    hold_maintenance,
    hold_exhausted,
    hold_read_only,
    hold_fleet_incident,
    hold_condition_gone,
    hold_busy,
    hold_restart_grace,
    hold_cooldown,
    hold_hourly_cap,
    hold_in_flight,
)
"""The stages a due step passes, in order; the first objection holds it back."""


def _first_hold(c: Candidate, ctx: PlanContext) -> Hold | None:
    for stage in SAFEGUARDS:
        hold = stage(c, ctx)
        if hold is not None:
            return hold
    return None


# --- building the action of a step (pure) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _Skip:
    """The step cannot apply to this alert or miner: it counts as failed (escalate)."""

    reason: str


@functools.cache
def _jinja() -> BoundedSandbox:
    # Strict: a misspelt label must fail loudly, not run the program with "" for it.
    return BoundedSandbox(undefined=StrictUndefined, keep_trailing_newline=True)


@functools.lru_cache(maxsize=256)
def _template(text: str) -> Any:
    return _jinja().from_string(text)


def _render(text: str, context: Mapping[str, Any]) -> str:
    if "{{" not in text and "{%" not in text and "{#" not in text:
        return text  # byte for byte: no template, nothing to render
    return str(_template(text).render(context))


def _env_name(label: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", label.upper())


def exec_env(
    alert_labels: Mapping[str, str], miner: MinerConfig, fingerprint: str
) -> dict[str, str]:
    """The ``CGWATCHDOG_*`` variables an exec step gets besides ``PATH``."""
    env = {f"CGWATCHDOG_LABEL_{_env_name(k)}": v for k, v in sorted(alert_labels.items())}
    env["CGWATCHDOG_MINER"] = miner.name
    env["CGWATCHDOG_HOST"] = miner.host
    env["CGWATCHDOG_PORT"] = str(miner.port)
    env["CGWATCHDOG_ALERTNAME"] = alert_labels.get("alertname", "")
    env["CGWATCHDOG_FINGERPRINT"] = fingerprint
    return env


def _device_of(do: str, device: str | None) -> str | _Skip:
    if not device:
        return _Skip(f"{do} needs an alert about one device (label device), this one has none")
    if _DEVICE_LABEL.fullmatch(device) is None:
        return _Skip(f"device {device!r} is not KIND<number> (ASC0, PGA1, BOARD6, ...)")
    return device


def _accepting(pool: Pool) -> bool:
    age = pool.last_share_age_s
    return pool.status == "Alive" and age is not None and age <= ACCEPTING_WITHIN_S


def _target_pool(
    step: RuleAction, snapshot: Snapshot | None, alert: Alert, capabilities: Capabilities
) -> int | Hold | _Skip:
    active = snapshot.active_pool if snapshot is not None else None
    about = alert.labels.get("pool")
    if (
        active is not None
        and active.status == "Alive"
        and about not in (None, "none", str(active.id))
    ):
        # The miner already failed over from the alert's pool to a working one.
        return Hold(
            "pool_healthy",
            f"the miner already mines on pool {active.id} (Alive); pool {about} being down "
            "is a notice, not a repair",
        )
    if active is not None and _accepting(active):
        # Never move a miner off a pool that works.
        return Hold("pool_healthy", f"the active pool {active.id} is Alive and accepting shares")
    if step.pool is not None:
        if active is not None and active.id == step.pool and active.status == "Alive":
            return _Skip(f"pool {step.pool} is already the active pool and Alive")
        return step.pool
    if snapshot is None:
        return Hold("no_data", "the miner did not answer this cycle: its pools are unknown")
    choices = [
        p
        for p in snapshot.pools
        if p.status == "Alive"
        and (active is None or p.id != active.id)
        and capabilities.why_not_pool(p) is None
    ]
    if not choices:
        return _Skip("no other Alive pool to switch to")
    return min(choices, key=lambda p: (p.priority, p.id)).id


# --- the planner ----------------------------------------------------------------------


class _Ladder:
    """One alert's remediation; the planner's private record."""

    __slots__ = (
        "action",
        "alertname",
        "busy_retries",
        "busy_until",
        "deadline",
        "elapsed_before",
        "failures",
        "fingerprint",
        "finished_at",
        "fired_at",
        "hashrate_before",
        "hold_kind",
        "labels",
        "miner",
        "planned_at",
        "pool_before",
        "pool_url_before",
        "real_attempts",
        "restart_seen",
        "since",
        "started_at",
        "state",
        "step",
        "steps_sig",
        "verified_at",
        "why",
    )

    def __init__(
        self,
        fingerprint: str,
        miner: str,
        alertname: str,
        labels: dict[str, str],
        fired_at: float,
        steps_sig: str,
        now: float,
    ) -> None:
        self.fingerprint = fingerprint
        self.miner = miner
        self.alertname = alertname
        self.labels = labels
        self.fired_at = fired_at
        self.steps_sig = steps_sig
        self.state = TRANSITIONS.next(LadderState.IDLE, LadderEvent.FIRED)
        self.since = now
        self.step = 0
        self.action: PlannedAction | None = None
        self.planned_at: float | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.deadline: float | None = None
        self.elapsed_before: float | None = None
        self.hashrate_before: float | None = None
        self.pool_before: int | None = None
        # The active pool's "url user": a firmware that rewrites its pool list (Braiins
        # OS, LuxOS) renumbers the pools, so the id alone may not show the switch.
        self.pool_url_before: str | None = None
        self.busy_retries = 0
        self.busy_until: float | None = None  # a busy session: not tried again before
        self.restart_seen = False
        self.verified_at: float | None = None
        self.real_attempts = 0
        self.failures: list[str] = []
        self.hold_kind: str | None = None
        self.why = ""  # why the ladder is escalating (the last step's failure, or success)

    def move(self, event: LadderEvent, now: float) -> None:
        self.state = TRANSITIONS.next(self.state, event)
        self.since = now

    @property
    def exhausted(self) -> bool:
        return self.state is LadderState.EXHAUSTED

    def sort_key(self) -> tuple[float, str, str]:
        return (self.fired_at, self.miner, self.fingerprint)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "miner": self.miner,
            "alertname": self.alertname,
            "labels": dict(self.labels),
            "fired_at": self.fired_at,
            "steps_sig": self.steps_sig,
            "state": self.state.value,
            "since": self.since,
            "step": self.step,
            "action": None if self.action is None else self.action.to_dict(),
            "planned_at": self.planned_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "deadline": self.deadline,
            "elapsed_before": self.elapsed_before,
            "hashrate_before": self.hashrate_before,
            "busy_retries": self.busy_retries,
            "busy_until": self.busy_until,
            "pool_before": self.pool_before,
            "pool_url_before": self.pool_url_before,
            "restart_seen": self.restart_seen,
            "verified_at": self.verified_at,
            "real_attempts": self.real_attempts,
            "failures": list(self.failures),
            "hold_kind": self.hold_kind,
            "why": self.why,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _Ladder:
        ladder = cls(
            str(data["fingerprint"]),
            str(data["miner"]),
            str(data["alertname"]),
            {str(k): str(v) for k, v in dict(data["labels"]).items()},
            float(data["fired_at"]),
            str(data["steps_sig"]),
            float(data["since"]),
        )
        ladder.state = LadderState(data["state"])
        if ladder.state is LadderState.IDLE:
            raise ValueError("an idle ladder is never stored")
        ladder.step = int(data["step"])
        action = data.get("action")
        ladder.action = None if action is None else PlannedAction.from_dict(action)
        ladder.planned_at = opt_float(data.get("planned_at"))
        ladder.started_at = opt_float(data.get("started_at"))
        ladder.finished_at = opt_float(data.get("finished_at"))
        ladder.deadline = opt_float(data.get("deadline"))
        ladder.elapsed_before = opt_float(data.get("elapsed_before"))
        ladder.hashrate_before = opt_float(data.get("hashrate_before"))
        ladder.busy_retries = int(data.get("busy_retries", 0))
        ladder.busy_until = opt_float(data.get("busy_until"))
        pool_before = data.get("pool_before")
        ladder.pool_before = None if pool_before is None else int(pool_before)
        pool_url_before = data.get("pool_url_before")
        ladder.pool_url_before = None if pool_url_before is None else str(pool_url_before)
        ladder.restart_seen = bool(data.get("restart_seen", False))
        ladder.verified_at = opt_float(data.get("verified_at"))
        ladder.real_attempts = int(data.get("real_attempts", 0))
        ladder.failures = [str(f) for f in data.get("failures", [])]
        hold_kind = data.get("hold_kind")
        ladder.hold_kind = None if hold_kind is None else str(hold_kind)
        ladder.why = str(data.get("why", ""))
        if ladder.state in (LadderState.RUNNING, LadderState.VERIFYING) and ladder.action is None:
            raise ValueError(f"a {ladder.state.value} ladder without its action")
        return ladder


@dataclass(slots=True)
class _ReadOnly:
    """A miner whose API refused a privileged command (Code 45)."""

    since: float
    detail: str
    labels: dict[str, str]
    probed_at: float


def _steps_sig(steps: Sequence[RuleAction]) -> str:
    text = json.dumps([s.model_dump(mode="json") for s in steps], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _steps_by_rule(rules: Sequence[RuleBase]) -> dict[str, tuple[RuleAction, ...]]:
    return {rule.name: tuple(rule.actions) for rule in rules if rule.actions}


class ActionPlanner:
    """Decides remediations: ladders per alert, safeguards, verification. Pure.

    No I/O and no clock: every method takes ``now``. The state (ladders, per-miner action
    history, restarts, read-only marks) is JSON-safe through :meth:`to_dict` /
    :meth:`from_dict`, so counters survive daemon restarts; :meth:`configure` applies a
    reload and keeps them. See the module docstring for the cycle.
    """

    __slots__ = (
        "_events",
        "_history",
        "_incidents_logged",
        "_ladders",
        "_orphans",
        "_read_only",
        "_restarted_at",
        "_settings",
        "_sigs",
        "_steps",
    )

    def __init__(self, settings: ActionsConfig, rules: Sequence[RuleBase]) -> None:
        self._settings = settings
        self._steps = _steps_by_rule(rules)
        self._sigs = {name: _steps_sig(steps) for name, steps in self._steps.items()}
        self._ladders: dict[str, _Ladder] = {}
        self._history: dict[str, list[tuple[float, bool]]] = {}
        self._restarted_at: dict[str, float] = {}
        self._read_only: dict[str, _ReadOnly] = {}
        # Real actions whose ladder ended while they ran: still in flight (and their miner
        # busy) until their outcome or timeout; "fingerprint:step" -> (miner, expiry).
        self._orphans: dict[str, tuple[str, float]] = {}
        self._events: list[ActionEvent] = []
        self._incidents_logged: set[str] = set()

    # -- configuration -------------------------------------------------------------------

    @property
    def settings(self) -> ActionsConfig:
        """The safeguards in force."""
        return self._settings

    def configure(self, settings: ActionsConfig, rules: Sequence[RuleBase]) -> None:
        """Apply a reloaded configuration; ladders, history and restarts are kept.

        Read-only marks are forgotten (the operator may have fixed ``--api-allow``; the
        next refusal marks the miner again). A ladder whose rule lost its actions ends; one
        whose rule's steps changed starts again from its first step unless a step is in
        flight (it finishes under the old steps).
        """
        self._settings = settings
        self._steps = _steps_by_rule(rules)
        self._sigs = {name: _steps_sig(steps) for name, steps in self._steps.items()}
        self._read_only.clear()
        for ladder in list(self._ladders.values()):
            sig = self._sigs.get(ladder.alertname)
            if sig is None:
                self._end(ladder, ladder.since, "its rule has no actions any more")
                continue
            if sig == ladder.steps_sig:
                continue
            ladder.steps_sig = sig
            if TRANSITIONS.allows(ladder.state, LadderEvent.RULE_CHANGED):
                ladder.move(LadderEvent.RULE_CHANGED, ladder.since)
                ladder.step = 0
                ladder.failures.clear()
                ladder.real_attempts = 0
                ladder.hold_kind = None

    # -- planning ------------------------------------------------------------------------

    def plan(
        self,
        alerts: Sequence[Alert],
        results: Mapping[str, PollResult],
        *,
        fleet_incidents: Collection[str],
        miners: Mapping[str, MinerConfig],
        now: float,
        capabilities: Callable[[str], Capabilities] | None = None,
        maintenance: Callable[[Mapping[str, str]], str | None] | None = None,
    ) -> list[PlannedAction]:
        """The actions to take now, oldest alert first (deterministic).

        ``alerts``: every alert the engine holds (only FIRING ones whose rule has actions
        matter); ``results``: this cycle's poll results by miner name; ``fleet_incidents``:
        alertnames firing on a large share of the fleet (``alerts.fleet_incidents``);
        ``miners``: the configured miners by name; ``capabilities``: what each miner's
        control channel can do (by name; default: anything); ``maintenance``: an
        alert's labels -> why they are in maintenance, or None (default: nothing is;
        ``SilenceBook.maintenance_check`` makes one).
        """
        self._prune(now)
        self._expire_running(now)
        firing = self._firing(alerts)
        self._sync(firing, miners, now)
        ctx = self._context(alerts, results, fleet_incidents, miners, now)
        if capabilities is not None:
            ctx.capabilities = capabilities
        if maintenance is not None:
            ctx.maintenance = maintenance
        planned: list[PlannedAction] = []
        for ladder in sorted(self._ladders.values(), key=_Ladder.sort_key):
            if ladder.state is LadderState.WAITING or ladder.state is LadderState.ESCALATING:
                alert = firing.get(ladder.fingerprint)
                miner = miners.get(ladder.miner)
                if alert is not None and miner is not None:
                    self._climb(ladder, alert, miner, ctx, planned)
        return planned

    def _firing(self, alerts: Sequence[Alert]) -> dict[str, Alert]:
        steps = self._steps
        return {
            a.fingerprint: a
            for a in alerts
            if a.state is AlertState.FIRING and a.miner and a.alertname in steps
        }

    def _sync(
        self, firing: Mapping[str, Alert], miners: Mapping[str, MinerConfig], now: float
    ) -> None:
        """Ladders follow the alerts: new ones for new firings, ended for resolved ones."""
        for fp, ladder in list(self._ladders.items()):
            alert = firing.get(fp)
            if alert is None or _fired_at(alert) != ladder.fired_at:
                self._end(ladder, now, "the alert resolved")
        for fp, alert in firing.items():
            if fp in self._ladders or alert.miner not in miners:
                continue
            self._ladders[fp] = _Ladder(
                fp,
                alert.miner,
                alert.alertname,
                dict(alert.labels),
                _fired_at(alert),
                self._sigs[alert.alertname],
                now,
            )

    def _end(self, ladder: _Ladder, now: float, why: str) -> None:
        action = ladder.action
        if ladder.state is LadderState.RUNNING and action is not None and not action.dry_run:
            expiry = (ladder.planned_at or now) + action.timeout_s + NO_OUTCOME_GRACE_S
            self._orphans[f"{ladder.fingerprint}:{ladder.step}"] = (ladder.miner, expiry)
        ladder.move(LadderEvent.RESOLVED, now)
        del self._ladders[ladder.fingerprint]
        self._emit(ActionEventKind.ENDED, now, ladder, why)

    def _context(
        self,
        alerts: Sequence[Alert],
        results: Mapping[str, PollResult],
        incidents: Collection[str],
        miners: Mapping[str, MinerConfig],
        now: float,
    ) -> PlanContext:
        shares: dict[str, float] = {}
        if incidents:
            wanted = set(incidents)
            affected: dict[str, set[str]] = {}
            for a in alerts:
                if a.alertname in wanted and a.state in (AlertState.FIRING, AlertState.PENDING):
                    affected.setdefault(a.alertname, set()).add(a.miner)
            size = max(1, len(miners))
            shares = {name: len(affected.get(name, ())) / size for name in sorted(wanted)}
        self._incidents_logged &= shares.keys()
        exhausted: dict[str, Exhausted] = {}
        busy: dict[str, Busy] = {}
        in_flight = 0
        for miner, expiry in self._orphans.values():
            if expiry > now:
                in_flight += 1
                busy[miner] = Busy("an action whose alert ended meanwhile", False)
        for ladder in sorted(self._ladders.values(), key=_Ladder.sort_key):
            state = ladder.state
            if state is LadderState.EXHAUSTED:
                real = ladder.real_attempts > 0
                previous = exhausted.get(ladder.miner)
                if previous is None or (real and not previous.real):
                    exhausted[ladder.miner] = Exhausted(ladder.alertname, real)
            elif (state is LadderState.RUNNING or state is LadderState.VERIFYING) and (
                ladder.action is not None
            ):
                dry = ladder.action.dry_run
                if not dry:
                    in_flight += 1
                what = f"{ladder.action.describe()} for {ladder.alertname}, {state.value}"
                if ladder.miner not in busy or not dry:
                    busy[ladder.miner] = Busy(what, dry)
        return PlanContext(
            now=now,
            settings=self._settings,
            results=results,
            incidents=shares,
            exhausted=exhausted,
            read_only=self._read_only.keys(),
            busy=busy,
            history=self._history,
            restarted_at=self._restarted_at,
            in_flight=in_flight,
        )

    def _climb(
        self,
        ladder: _Ladder,
        alert: Alert,
        miner: MinerConfig,
        ctx: PlanContext,
        planned: list[PlannedAction],
    ) -> None:
        """Try the ladder's due step; a step that cannot apply escalates to the next now."""
        now = ctx.now
        while ladder.state is LadderState.WAITING or ladder.state is LadderState.ESCALATING:
            steps = self._steps[ladder.alertname]
            if ladder.step >= len(steps):
                self._fail_step(ladder, now, "the rule's ladder is shorter than this step")
                return
            step = steps[ladder.step]
            if now < ladder.fired_at + step.after_s:
                return  # not due yet: waiting is not being held back
            if ladder.busy_until is not None and now < ladder.busy_until:
                wait = format_duration(ladder.busy_until - now)
                busy = Hold("session_busy", f"the control session is busy; next try in {wait}")
                self._held(ladder, step, busy, now)
                return
            candidate = Candidate(
                miner=ladder.miner,
                alertname=ladder.alertname,
                fingerprint=ladder.fingerprint,
                step=ladder.step,
                do=step.do,
                escalation=ladder.state is LadderState.ESCALATING,
                dry_run=self._settings.dry_run or bool(step.dry_run),
                condition_seen=alert.last_seen >= now - _SAME_CYCLE_S,
                miner_answered=isinstance(ctx.results.get(ladder.miner), Snapshot),
                labels=ladder.labels,
            )
            hold = _first_hold(candidate, ctx)
            if hold is not None:
                if hold.kind == "read_only":
                    self._maybe_probe(ladder, step, miner, ctx, planned)
                self._held(ladder, step, hold, now)
                return
            built = self._build(ladder, step, alert, miner, ctx, candidate)
            if isinstance(built, Hold):
                self._held(ladder, step, built, now)
                return
            if isinstance(built, _Skip):
                self._emit(ActionEventKind.SKIPPED, now, ladder, built.reason, do=step.do)
                self._fail_step(ladder, now, f"{step.do}: {built.reason}")
                if ladder.exhausted:
                    ctx.exhausted.setdefault(
                        ladder.miner, Exhausted(ladder.alertname, ladder.real_attempts > 0)
                    )
                continue
            self._commit(ladder, built, ctx)
            planned.append(built)
            return

    def _held(self, ladder: _Ladder, step: RuleAction, hold: Hold, now: float) -> None:
        if ladder.hold_kind == hold.kind:
            return
        ladder.hold_kind = hold.kind
        if hold.kind == "fleet_incident":
            # One line per incident, not one per miner of it (it may be the whole fleet).
            if ladder.alertname in self._incidents_logged:
                return
            self._incidents_logged.add(ladder.alertname)
            self._events.append(
                ActionEvent(
                    ActionEventKind.HELD_BACK, now, "", ladder.alertname, "", ladder.step,
                    step.do, step.do, f"{hold.reason}: every {ladder.alertname} action is held back",
                )
            )  # fmt: skip
            return
        self._emit(ActionEventKind.HELD_BACK, now, ladder, hold.reason, do=step.do)

    def _build(
        self,
        ladder: _Ladder,
        step: RuleAction,
        alert: Alert,
        miner: MinerConfig,
        ctx: PlanContext,
        c: Candidate,
    ) -> PlannedAction | Hold | _Skip:
        result = ctx.results.get(ladder.miner)
        snapshot = result if isinstance(result, Snapshot) else None
        pool: int | None = None
        device: str | None = None
        argv: tuple[str, ...] | None = None
        env: dict[str, str] = {}
        capabilities = ctx.capabilities(ladder.miner)
        if step.do == "switchpool":
            target = _target_pool(step, snapshot, alert, capabilities)
            if not isinstance(target, int):
                return target
            pool = target
        elif step.do in ("disable", "enable"):
            found = _device_of(step.do, alert.labels.get("device"))
            if isinstance(found, _Skip):
                return found
            device = found
        if step.do != "exec":
            why = capabilities.why_not(step.do, device)
            if why is not None:
                return _Skip(f"not supported by {capabilities.family}: {why}")
        else:
            assert step.argv is not None  # config.py: exec always has argv
            context = {
                "labels": dict(alert.labels),
                "miner": miner.name,
                "host": miner.host,
                "port": miner.port,
                "alertname": alert.alertname,
                "value": alert.value,
            }
            try:
                argv = tuple(_render(text, context) for text in step.argv)
            except Exception as exc:  # the operator's template: say so, never fail the cycle
                return _Skip(f"argv template failed: {type(exc).__name__}: {exc}")
            if not argv[0]:
                return _Skip("argv[0] (the program) renders empty")
            if any("\0" in arg for arg in argv):
                return _Skip("an argv item renders with a NUL byte")
            env = exec_env(alert.labels, miner, ladder.fingerprint)
        total = len(self._steps[ladder.alertname])
        if c.escalation:
            reason = f"step {ladder.step}/{total}: {ladder.why}; step {ladder.step + 1}/{total}"
        else:
            on = f" on {alert.labels['device']}" if "device" in alert.labels else ""
            reason = (
                f"{ladder.alertname}{on} firing for {format_duration(ctx.now - ladder.fired_at)}; "
                f"step {ladder.step + 1}/{total}"
            )
        ladder.elapsed_before = snapshot.elapsed_s if snapshot is not None else None
        active = snapshot.active_pool if snapshot is not None else None
        ladder.pool_before = active.id if active is not None else None
        ladder.pool_url_before = _pool_key(active) if active is not None else None
        ladder.hashrate_before = snapshot.hashrate_hs if snapshot is not None else None
        return PlannedAction(
            miner=ladder.miner,
            alert_fingerprint=ladder.fingerprint,
            alertname=ladder.alertname,
            step=ladder.step,
            do=step.do,
            pool=pool,
            device=device,
            argv=argv,
            env=env,
            timeout_s=step.timeout_s,
            dry_run=c.dry_run,
            reason=f"{reason} {step.do}",
            window_s=capabilities.window_s(step.do),
            pools=snapshot.pools if snapshot is not None else (),
        )

    def _commit(self, ladder: _Ladder, action: PlannedAction, ctx: PlanContext) -> None:
        now = ctx.now
        ladder.move(LadderEvent.PLANNED, now)
        ladder.action = action
        ladder.planned_at = now
        ladder.started_at = ladder.finished_at = ladder.deadline = ladder.verified_at = None
        ladder.restart_seen = False
        ladder.hold_kind = None
        self._history.setdefault(ladder.miner, []).append((now, action.dry_run))
        if not action.dry_run:
            ctx.in_flight += 1
        ctx.busy[ladder.miner] = Busy(f"{action.describe()} for {ladder.alertname}", action.dry_run)
        self._emit(ActionEventKind.PLANNED, now, ladder, action.reason, action=action)

    def _maybe_probe(
        self,
        ladder: _Ladder,
        step: RuleAction,
        miner: MinerConfig,
        ctx: PlanContext,
        planned: list[PlannedAction],
    ) -> None:
        mark = self._read_only.get(ladder.miner)
        if (
            mark is None
            or ctx.now - mark.probed_at < READ_ONLY_PROBE_INTERVAL_S
            or ladder.miner in ctx.busy
        ):
            return
        mark.probed_at = ctx.now
        probe = PlannedAction(
            miner=ladder.miner,
            alert_fingerprint=ladder.fingerprint,
            alertname=ladder.alertname,
            step=ladder.step,
            do=PROBE,
            pool=None,
            device=None,
            argv=None,
            env={},
            timeout_s=step.timeout_s,
            dry_run=False,
            reason="does the miner's control channel take commands again?",
        )
        ctx.busy[ladder.miner] = Busy("a write-access check", False)
        self._emit(ActionEventKind.PLANNED, ctx.now, ladder, probe.reason, action=probe)
        planned.append(probe)

    # -- outcomes ------------------------------------------------------------------------

    def started(self, action: PlannedAction, now: float) -> None:
        """The executor began ``action`` (restart grace and verification count from here)."""
        ladder = self._ladder_of(action)
        if ladder is not None:
            ladder.started_at = now
        if not action.dry_run and action.do in _REBOOT_STEPS:
            self._restarted_at[action.miner] = now
        self._events.append(_event(ActionEventKind.STARTED, now, action, ""))

    def finished(self, outcome: ActionOutcome, now: float) -> None:
        """The executor's result: moves the ladder to verification, escalation or waiting."""
        action = outcome.action
        self._orphans.pop(f"{action.alert_fingerprint}:{action.step}", None)
        if action.do == PROBE:
            self._probed(outcome, now)
            return
        ladder = self._ladder_of(action)
        # When this action surely did not restart the miner, it gives no restart grace.
        since = ladder.planned_at if ladder is not None else None
        if outcome.access_denied:
            self._unhold(action, since if since is not None else outcome.started_at - 1.0)
            self._events.append(_event(ActionEventKind.DENIED, now, action, outcome.detail))
            if action.miner not in self._read_only:
                labels = _miner_labels(ladder.labels if ladder is not None else {})
                labels["miner"] = action.miner
                self._read_only[action.miner] = _ReadOnly(now, outcome.detail, labels, now)
            if ladder is not None:
                ladder.move(LadderEvent.DENIED, now)
                ladder.hold_kind = None
            return
        if action.dry_run:
            kind = ActionEventKind.DRY_RUN
        elif outcome.ok:
            kind = ActionEventKind.SUCCEEDED
        else:
            kind = ActionEventKind.FAILED
        self._events.append(_event(kind, now, action, outcome.detail))
        if outcome.ok and not action.dry_run and action.argv is None:
            self._read_only.pop(action.miner, None)  # the channel took a command
        if action.do in _RESTART_STEPS and not outcome.ok and not outcome.unconfirmed:
            self._unhold(action, since if since is not None else outcome.started_at - 1.0)
        elif action.do in _REBOOT_STEPS and not action.dry_run:
            self._restarted_at.setdefault(action.miner, outcome.started_at)
        if ladder is None:
            return
        if outcome.retry:
            ladder.busy_retries += 1
            self._forget_attempt(ladder, action)  # nothing was done: no cooldown or cap
            if ladder.busy_retries <= MAX_BUSY_RETRIES:
                ladder.move(LadderEvent.BUSY, now)
                ladder.hold_kind = None
                pause = BUSY_RETRY_S * 2.0 ** (ladder.busy_retries - 1)
                ladder.busy_until = now + min(BUSY_RETRY_MAX_S, pause)
                return
        if not action.dry_run:
            ladder.real_attempts += 1
        if outcome.ok or outcome.unconfirmed:
            self._to_verification(ladder, LadderEvent.SENT, now)
        else:
            self._fail_step(ladder, now, f"{action.describe()} failed: {outcome.detail}")

    def _forget_attempt(self, ladder: _Ladder, action: PlannedAction) -> None:
        entries = self._history.get(action.miner)
        if entries is None or ladder.planned_at is None:
            return
        entry = (ladder.planned_at, action.dry_run)
        if entry in entries:
            entries.remove(entry)

    def _probed(self, outcome: ActionOutcome, now: float) -> None:
        action = outcome.action
        mark = self._read_only.get(action.miner)
        if outcome.ok:
            if mark is not None:
                del self._read_only[action.miner]
            self._events.append(
                _event(ActionEventKind.ACCESS_RESTORED, now, action, "privileged commands accepted")
            )
        elif outcome.access_denied:
            if mark is not None:
                mark.detail = outcome.detail
            self._events.append(_event(ActionEventKind.DENIED, now, action, outcome.detail))
        else:
            self._events.append(_event(ActionEventKind.FAILED, now, action, outcome.detail))

    def _unhold(self, action: PlannedAction, since: float) -> None:
        """Forget the restart grace this action's start gave (not an earlier restart's)."""
        at = self._restarted_at.get(action.miner)
        if action.do in _REBOOT_STEPS and at is not None and at >= since:
            del self._restarted_at[action.miner]

    def _ladder_of(self, action: PlannedAction) -> _Ladder | None:
        ladder = self._ladders.get(action.alert_fingerprint)
        if ladder is None or ladder.state is not LadderState.RUNNING or ladder.action != action:
            return None
        return ladder

    def _to_verification(self, ladder: _Ladder, event: LadderEvent, now: float) -> None:
        assert ladder.action is not None
        steps = self._steps.get(ladder.alertname, ())
        within: float | None = None
        if ladder.step < len(steps) and steps[ladder.step].do == ladder.action.do:
            within = steps[ladder.step].verify_within_s
        if within is None:
            within = DEFAULT_VERIFY_WITHIN_S.get(ladder.action.do, 300.0)
        within = max(within, ladder.action.window_s)  # the family's restart/reboot window
        ladder.move(event, now)
        ladder.finished_at = now
        ladder.deadline = now + within

    def _fail_step(self, ladder: _Ladder, now: float, detail: str) -> None:
        """The current step failed: escalate to the next, or exhaust the ladder."""
        ladder.failures.append(detail[:_DETAIL_CHARS])
        ladder.why = detail
        del ladder.failures[:-_MAX_FAILURES]
        ladder.move(LadderEvent.STEP_FAILED, now)
        ladder.hold_kind = None
        steps = self._steps.get(ladder.alertname, ())
        if ladder.step + 1 < len(steps):
            ladder.step += 1
            nxt = steps[ladder.step]
            self._emit(
                ActionEventKind.ESCALATED, now, ladder,
                f"{detail}; next: step {ladder.step + 1}/{len(steps)} {nxt.do}", do=nxt.do,
            )  # fmt: skip
            return
        ladder.move(LadderEvent.NO_MORE_STEPS, now)
        tried = "" if ladder.real_attempts else " (no step was really sent: dry run or skipped)"
        self._emit(
            ActionEventKind.EXHAUSTED, now, ladder,
            f"every step failed{tried}: " + "; ".join(ladder.failures),
        )  # fmt: skip

    def _expire_running(self, now: float) -> None:
        """Actions with no outcome long past their timeout are left to verification."""
        for ladder in sorted(self._ladders.values(), key=_Ladder.sort_key):
            if ladder.state is not LadderState.RUNNING or ladder.action is None:
                continue
            began = ladder.started_at if ladder.started_at is not None else ladder.planned_at
            if began is None or now - began < ladder.action.timeout_s + NO_OUTCOME_GRACE_S:
                continue
            self._emit(
                ActionEventKind.FAILED, now, ladder,
                "no outcome reported (daemon restarted mid-action?); verifying its effect",
                action=ladder.action,
            )  # fmt: skip
            if not ladder.action.dry_run:
                ladder.real_attempts += 1
            self._to_verification(ladder, LadderEvent.NO_OUTCOME, now)

    # -- verification --------------------------------------------------------------------

    def verify(
        self,
        results: Mapping[str, PollResult],
        alerts: Sequence[Alert],
        now: float,
        *,
        evaluated: Collection[tuple[str, str]] | None = None,
    ) -> list[VerificationEvent]:
        """Judge sent steps against this cycle's results and alerts.

        ``now`` is the cycle's (the one the alert engine stamped ``last_seen`` with);
        ``evaluated`` (``Evaluation.evaluated``) tells which conditions were judged this
        cycle; without it a condition counts as judged when its miner answered. Returns
        the VERIFIED/ESCALATED/EXHAUSTED events (also in :meth:`events`).
        """
        self._expire_running(now)
        by_fp = {a.fingerprint: a for a in alerts}
        mark = len(self._events)
        for ladder in sorted(self._ladders.values(), key=_Ladder.sort_key):
            if ladder.state is LadderState.VERIFYING:
                self._verify_one(ladder, by_fp.get(ladder.fingerprint), results, evaluated, now)
            elif ladder.state is LadderState.VERIFIED:
                self._watch_recurrence(
                    ladder, by_fp.get(ladder.fingerprint), results, evaluated, now
                )
        return [
            e
            for e in self._events[mark:]
            if e.kind
            in (ActionEventKind.VERIFIED, ActionEventKind.ESCALATED, ActionEventKind.EXHAUSTED)
        ]

    def _verify_one(
        self,
        ladder: _Ladder,
        alert: Alert | None,
        results: Mapping[str, PollResult],
        evaluated: Collection[tuple[str, str]] | None,
        now: float,
    ) -> None:
        action = ladder.action
        assert action is not None and ladder.deadline is not None
        result = results.get(ladder.miner)
        snapshot = result if isinstance(result, Snapshot) else None
        do = action.do
        missing: str | None
        if do in _RESTART_STEPS:
            if snapshot is not None and self._restarted(ladder, snapshot):
                ladder.restart_seen = True
            if not ladder.restart_seen:
                missing = (
                    "the miner did not answer" if snapshot is None else "Elapsed did not go down"
                )
            elif not self._cleared(ladder, alert, result, evaluated, now):
                missing = "the condition persisted"
            else:
                missing = None
        elif do == "sleep":
            before = ladder.hashrate_before or 0.0
            rate = None if snapshot is None else snapshot.hashrate_hs
            if snapshot is None:
                missing = "the miner did not answer"
            elif rate and rate > SLEEP_HASHRATE_SHARE * before:
                missing = f"it still hashes ({format_hashrate(rate)})"
            else:
                missing = None
        elif do == "wake":
            rate = None if snapshot is None else snapshot.hashrate_hs
            missing = None if rate else "it does not hash yet"
        elif do == "exec" or self._condition_checked(ladder):
            cleared = self._cleared(ladder, alert, result, evaluated, now)
            missing = None if cleared else "the condition persisted"
            if do == "enable" and missing is None:
                missing = _device_missing(do, action, snapshot)
        elif do == "switchpool":
            active = snapshot.active_pool if snapshot is not None else None
            if active is None:
                missing = "no active pool seen"
            elif _same_pool(active, ladder) or active.status != "Alive":
                missing = f"active pool is {active.id} ({active.status})"
            else:
                missing = None
        else:
            missing = _device_missing(do, action, snapshot)
        if missing is None:
            ladder.move(LadderEvent.CONFIRMED, now)
            ladder.verified_at = now
            self._emit(ActionEventKind.VERIFIED, now, ladder, _verified_detail(do), action=action)
            steps = self._steps.get(ladder.alertname, ())
            if (
                do == "disable"
                and ladder.step + 1 < len(steps)
                and steps[ladder.step + 1].do == "enable"
            ):
                ladder.move(LadderEvent.NEXT_STEP, now)
                ladder.step += 1
                ladder.why = f"{action.describe()} verified, the enable follows"
            return
        if now >= ladder.deadline:
            window = format_duration(ladder.deadline - (ladder.finished_at or ladder.deadline))
            self._fail_step(
                ladder, now, f"{action.describe()} not verified within {window}: {missing}"
            )

    def _watch_recurrence(
        self,
        ladder: _Ladder,
        alert: Alert | None,
        results: Mapping[str, PollResult],
        evaluated: Collection[tuple[str, str]] | None,
        now: float,
    ) -> None:
        action = ladder.action
        if action is None or ladder.verified_at is None:
            return
        if action.do not in _CONDITION_STEPS and not self._condition_checked(ladder):
            return
        if (
            alert is not None
            and alert.state is AlertState.FIRING
            and _fired_at(alert) == ladder.fired_at
            and alert.last_seen > ladder.verified_at + _SAME_CYCLE_S
        ):
            self._fail_step(ladder, now, f"the condition came back after {action.describe()}")

    def _condition_checked(self, ladder: _Ladder) -> bool:
        """An enable right after a disable re-initialises the device: judged by the condition."""
        steps = self._steps.get(ladder.alertname, ())
        return (
            ladder.action is not None
            and ladder.action.do == "enable"
            and 0 < ladder.step < len(steps)
            and steps[ladder.step - 1].do == "disable"
        )

    def _restarted(self, ladder: _Ladder, snapshot: Snapshot) -> bool:
        elapsed = snapshot.elapsed_s
        began = ladder.started_at if ladder.started_at is not None else ladder.planned_at
        if elapsed is None or began is None or snapshot.at < began:
            return False
        if elapsed <= snapshot.at - began + RESTART_ELAPSED_SLACK_S:
            return True
        return ladder.elapsed_before is not None and elapsed < ladder.elapsed_before

    def _cleared(
        self,
        ladder: _Ladder,
        alert: Alert | None,
        result: PollResult | None,
        evaluated: Collection[tuple[str, str]] | None,
        now: float,
    ) -> bool:
        """Whether the alert's condition is over: resolved, or judged false this cycle."""
        if alert is None or alert.state is AlertState.RESOLVED:
            return True
        if alert.state is not AlertState.FIRING or _fired_at(alert) != ladder.fired_at:
            return False  # pending again: a new occurrence of the condition
        if alert.last_seen >= now - _SAME_CYCLE_S:
            return False
        if evaluated is not None:
            return (ladder.alertname, ladder.miner) in evaluated
        return isinstance(result, Snapshot)

    # -- what the rest of the daemon asks ------------------------------------------------

    def held_miners(self, now: float) -> set[str]:
        """Miners we restarted (or ran an exec step on) less than ``restart_grace`` ago."""
        grace = self._settings.restart_grace_s
        return {miner for miner, at in self._restarted_at.items() if now - at < grace}

    def signals(self, now: float) -> list[Signal]:
        """RemediationFailed per exhausted ladder, RemediationDenied per read-only miner.

        They go through the alert engine like any rule's signals (see
        :meth:`with_signals`), so they are deduplicated, grouped, routed and resolved.
        """
        out: list[Signal] = []
        for ladder in sorted(self._ladders.values(), key=_Ladder.sort_key):
            if ladder.state is not LadderState.EXHAUSTED or not ladder.real_attempts:
                continue
            labels = {k: v for k, v in ladder.labels.items() if k not in ("alertname", "severity")}
            labels.update(
                alertname=REMEDIATION_FAILED,
                severity="critical",
                **{ORIGINAL_ALERTNAME_LABEL: ladder.alertname},
            )
            failures = "; ".join(ladder.failures)
            out.append(
                Signal(
                    labels=labels,
                    annotations={
                        "summary": f"Remediation of {ladder.alertname} on {ladder.miner} "
                        "failed: no more automatic actions on this miner until the alert "
                        "resolves or an operator clears it",
                        "description": failures,
                    },
                    value=failures,
                )
            )
        for miner in sorted(self._read_only):
            mark = self._read_only[miner]
            labels = dict(mark.labels)
            labels.update(alertname=REMEDIATION_DENIED, miner=miner, severity="warning")
            out.append(
                Signal(
                    labels=labels,
                    annotations={
                        "summary": f"{miner} refuses privileged commands from cgwatchdog: "
                        "no automatic repair until its --api-allow grants W: to this host",
                        "description": mark.detail,
                    },
                    value=mark.detail,
                )
            )
        return out

    def with_signals(self, evaluation: Evaluation, miners: Iterable[str], now: float) -> Evaluation:
        """``evaluation`` plus :meth:`signals`, judged for every miner (so they resolve)."""
        ours = (REMEDIATION_FAILED, REMEDIATION_DENIED)
        judged = evaluation.evaluated
        pairs: Collection[tuple[str, str]]
        if isinstance(judged, Judged):
            pairs = judged.also(ours, miners if isinstance(miners, AbstractSet) else set(miners))
        else:
            pairs = {*judged, *((alertname, miner) for miner in miners for alertname in ours)}
        return Evaluation(
            signals=[*evaluation.signals, *self.signals(now)],
            evaluated=pairs,
            held_miners=evaluation.held_miners,
        )

    def clear(self, miner: str, now: float | None = None) -> None:
        """An operator clears the miner: exhausted ladders end, a read-only mark goes.

        A still-firing alert then starts its ladder from the first step (the hourly cap
        still applies). ``now`` only timestamps the CLEARED events.
        """
        for ladder in sorted(self._ladders.values(), key=_Ladder.sort_key):
            if ladder.miner == miner and ladder.state is LadderState.EXHAUSTED:
                now = ladder.since if now is None else now
                ladder.move(LadderEvent.CLEARED, now)
                del self._ladders[ladder.fingerprint]
                self._emit(ActionEventKind.CLEARED, now, ladder, "cleared by an operator")
        self._read_only.pop(miner, None)

    def events(self) -> list[ActionEvent]:
        """Events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def ladders(self) -> list[LadderView]:
        """Every ladder that is not idle, oldest alert first."""
        return [
            LadderView(
                x.fingerprint, x.miner, x.alertname, x.state, x.step, x.since, tuple(x.failures)
            )
            for x in sorted(self._ladders.values(), key=_Ladder.sort_key)
        ]

    def read_only_miners(self) -> set[str]:
        """Miners marked read-only (Code 45) and not yet cleared."""
        return set(self._read_only)

    # -- bookkeeping ---------------------------------------------------------------------

    def _prune(self, now: float) -> None:
        keep = max(HOUR_S, self._settings.cooldown_s)
        for miner, entries in list(self._history.items()):
            fresh = [entry for entry in entries if now - entry[0] < keep]
            if fresh:
                self._history[miner] = fresh
            else:
                del self._history[miner]
        grace = self._settings.restart_grace_s
        for miner, at in list(self._restarted_at.items()):
            if now - at >= grace:
                del self._restarted_at[miner]
        for key, (_, expiry) in list(self._orphans.items()):
            if expiry <= now:
                del self._orphans[key]

    def _emit(
        self,
        kind: ActionEventKind,
        now: float,
        ladder: _Ladder,
        detail: str,
        *,
        action: PlannedAction | None = None,
        do: str | None = None,
    ) -> None:
        if action is not None:
            self._events.append(_event(kind, now, action, detail))
            return
        current = ladder.action
        step_do = do or (current.do if current is not None else "")
        self._events.append(
            ActionEvent(
                kind, now, ladder.miner, ladder.alertname, ladder.fingerprint, ladder.step,
                step_do, step_do, detail, dry_run=current is not None and current.dry_run,
            )
        )  # fmt: skip

    # -- persistence ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Ladders, per-miner history, restarts and read-only marks, JSON-safe."""
        return {
            "version": _STATE_VERSION,
            "ladders": [x.to_dict() for x in sorted(self._ladders.values(), key=_Ladder.sort_key)],
            "history": {m: [[at, dry] for at, dry in e] for m, e in sorted(self._history.items())},
            "restarted_at": dict(sorted(self._restarted_at.items())),
            "read_only": {
                m: {
                    "since": r.since,
                    "detail": r.detail,
                    "labels": dict(r.labels),
                    "probed_at": r.probed_at,
                }
                for m, r in sorted(self._read_only.items())
            },
            "orphans": {k: [m, t] for k, (m, t) in sorted(self._orphans.items())},
            "incidents_logged": sorted(self._incidents_logged),
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], settings: ActionsConfig, rules: Sequence[RuleBase]
    ) -> ActionPlanner:
        """Restore :meth:`to_dict`'s output under (possibly reloaded) settings and rules.

        ValueError when malformed. Ladders of rules that lost their actions are dropped;
        ladders of rules whose steps changed start again as in :meth:`configure`.
        """
        if not isinstance(data, Mapping) or data.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported action state (expected version {_STATE_VERSION})")
        planner = cls(settings, rules)
        try:
            for record in data.get("ladders", []):
                ladder = _Ladder.from_dict(record)
                planner._ladders[ladder.fingerprint] = ladder
            for miner, entries in dict(data.get("history", {})).items():
                planner._history[str(miner)] = [(float(at), bool(dry)) for at, dry in entries]
            planner._restarted_at = {
                str(m): float(at) for m, at in dict(data.get("restarted_at", {})).items()
            }
            for miner, r in dict(data.get("read_only", {})).items():
                planner._read_only[str(miner)] = _ReadOnly(
                    float(r["since"]),
                    str(r["detail"]),
                    {str(k): str(v) for k, v in dict(r.get("labels", {})).items()},
                    float(r.get("probed_at", r["since"])),
                )
            planner._orphans = {
                str(k): (str(m), float(t)) for k, (m, t) in dict(data.get("orphans", {})).items()
            }
            planner._incidents_logged = {str(n) for n in data.get("incidents_logged", [])}
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed action state: {exc!r}") from None
        # Reconcile with the rules in force, as a reload would (marks survive a restart).
        read_only = planner._read_only
        planner._read_only = {}
        planner.configure(settings, rules)
        planner._read_only = read_only
        planner._events.clear()
        return planner


# --- helpers --------------------------------------------------------------------------


def _fired_at(alert: Alert) -> float:
    return alert.fired_at if alert.fired_at is not None else alert.active_since


def _miner_labels(alert_labels: Mapping[str, str]) -> dict[str, str]:
    """The labels of an alert that describe its miner rather than the condition."""
    return {
        k: v
        for k, v in alert_labels.items()
        if k not in ("alertname", "severity", "device", "pool", ORIGINAL_ALERTNAME_LABEL)
    }


def _event(kind: ActionEventKind, now: float, action: PlannedAction, detail: str) -> ActionEvent:
    return ActionEvent(
        kind, now, action.miner, action.alertname, action.alert_fingerprint, action.step,
        action.do, action.describe(), detail, dry_run=action.dry_run,
    )  # fmt: skip


def _device_missing(do: str, action: PlannedAction, snapshot: Snapshot | None) -> str | None:
    """None when the device shows the effect of ``do``; else what is missing."""
    if snapshot is None:
        return "the miner did not answer"
    found = _DEVICE_LABEL.fullmatch(action.device or "")
    if found is None:
        return "no device"
    kind, number = found.group(1).upper(), int(found.group(2))
    for device in snapshot.devices:
        if device.kind == kind and device.id == number:
            disabled = not device.enabled or device.status == "Disabled"
            if do == "disable":
                return None if disabled else f"{kind}{number} still enabled ({device.status})"
            return f"{kind}{number} still disabled" if disabled else None
    return f"{kind}{number} not among the miner's devices"


def _pool_key(pool: Pool) -> str:
    return f"{pool.url} {pool.user}"


def _same_pool(active: Pool, ladder: _Ladder) -> bool:
    """Whether the miner still mines on the pool it mined on before the switch: by URL and
    user where known (a rewritten pool list renumbers), else by id."""
    if ladder.pool_url_before is not None:
        return _pool_key(active) == ladder.pool_url_before
    return active.id == ladder.pool_before


def _verified_detail(do: str) -> str:
    return {
        "restart": "the miner restarted (Elapsed went down) and the condition cleared",
        "reboot": "the miner rebooted (went away, came back with Elapsed reset) and the condition cleared",
        "sleep": "the miner stopped hashing",
        "wake": "the miner hashes again",
        "exec": "the condition cleared",
        "switchpool": "the active pool changed and is Alive",
        "disable": "the device reports disabled",
        "enable": "the device reports enabled",
    }.get(do, "done")
