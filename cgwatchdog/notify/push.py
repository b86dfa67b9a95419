"""Pushing the alert state to the state receivers (Alertmanager), and reading it back.

Each cycle the daemon hands :meth:`StatePush.prepare` the engine's alerts: every state
receiver gets all of them as postable documents, and the cluster's receiver
(``cluster.alertmanager``) also the shard's ``CgwatchdogHeartbeat`` and ``Watchdog``
(:func:`cgwatchdog.cluster.heartbeat_alerts`). :meth:`StatePush.send` (blocking: the
daemon runs it in a thread) posts them and says, per receiver, whether a peer took
them; :meth:`StatePush.read_role` reads the shard's heartbeats back from every peer for
the election. A receiver's failure is logged when it starts and when it ends, not each
cycle.

Why not the outbox: the push is idempotent and self-correcting; a failed push is
repaired by the next push of the current state, whereas queued old pushes would replay
stale state after an outage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cgwatchdog.alerts import Alert
from cgwatchdog.cluster import Role, heartbeat_alerts, heartbeat_matchers, leadership
from cgwatchdog.config.models import ClusterConfig
from cgwatchdog.errors import NotifyError
from cgwatchdog.notify.base import StateReceiver

__all__ = ["PushJob", "PushOutcome", "StatePush"]

log = logging.getLogger("cgwatchdog.notify")


@dataclass(frozen=True, slots=True)
class PushJob:
    """What one state receiver is sent this cycle."""

    name: str
    receiver: StateReceiver
    documents: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """How one cycle's push went."""

    accepted: Mapping[str, bool]
    """Per receiver pushed to: whether a peer took its documents."""
    heartbeat: bool | None
    """Whether this replica's heartbeat was taken (None: it pushes none)."""


class StatePush:
    """The state receivers of one configuration and what they are pushed."""

    def __init__(
        self,
        receivers: Mapping[str, StateReceiver],
        cluster: ClusterConfig,
        interval_s: float,
        *,
        lifetime_intervals: float,
    ) -> None:
        self.receivers = dict(receivers)
        self.cluster = cluster
        self.interval_s = interval_s
        self.lifetime_intervals = lifetime_intervals
        self._ok: dict[str, bool] = {}
        self._errors: dict[str, str] = {}  # the failing receivers' last error

    @property
    def elects(self) -> bool:
        """Whether pushes carry this replica's heartbeat and are read back for an election."""
        return self.cluster.replica is not None and self.cluster_receiver is not None

    @property
    def cluster_receiver(self) -> StateReceiver | None:
        """The receiver the heartbeats go to (``cluster.alertmanager``), if configured."""
        return self.receivers.get(self.cluster.alertmanager or "")

    def prepare(self, alerts: Sequence[Alert], now: float) -> list[PushJob]:
        """This cycle's documents for every state receiver (on the loop's thread: it
        reads the engine's alerts)."""
        cluster = self.cluster
        jobs = []
        for name, receiver in self.receivers.items():
            documents: list[dict[str, Any]] = receiver.postable(alerts, now)
            if name == cluster.alertmanager:
                documents += heartbeat_alerts(
                    cluster.shard,
                    cluster.replica,
                    now,
                    self.interval_s,
                    lifetime_intervals=self.lifetime_intervals,
                    fleet=cluster.name,
                )
            jobs.append(PushJob(name, receiver, documents))
        return jobs

    def send(self, jobs: Sequence[PushJob]) -> PushOutcome:
        """Post each job (blocking); a receiver's failure is logged once, and its return."""
        accepted: dict[str, bool] = {}
        heartbeat: bool | None = None
        for job in jobs:
            if not job.documents:
                continue
            error: str | None = None
            try:
                result = job.receiver.push_documents(job.documents)
            except NotifyError as exc:
                error = job.receiver.redact(str(exc))
            except Exception as exc:  # a bug here must not end the push task
                log.exception("internal error pushing to Alertmanager receiver %r", job.name)
                error = f"internal error: {type(exc).__name__}"
            else:
                if result.failed:
                    log.debug("receiver %r: %s", job.name, job.receiver.redact(result.receipt()))
            was_ok = self._ok.get(job.name, True)
            if error is not None and was_ok:
                log.warning("Alertmanager receiver %r: push failed: %s", job.name, error)
            elif error is None and not was_ok:
                log.info("Alertmanager receiver %r: pushes work again", job.name)
            self._ok[job.name] = accepted[job.name] = error is None
            if error is None:
                self._errors.pop(job.name, None)
            else:
                self._errors[job.name] = error
            if job.name == self.cluster.alertmanager and self.cluster.replica is not None:
                heartbeat = error is None
        return PushOutcome(accepted, heartbeat)

    def read_role(self, now: float) -> Role:
        """The role the shard's live heartbeats give this replica (blocking); ISOLATED
        when no peer can be read."""
        receiver = self.cluster_receiver
        cluster = self.cluster
        if receiver is None:
            return Role.ISOLATED

        def read() -> list[dict[str, Any]]:
            return receiver.alerts(heartbeat_matchers(cluster.shard, cluster.name), every_peer=True)

        return leadership(read, cluster.shard, cluster.replica, now, fleet=cluster.name)

    def keep_health(self, previous: StatePush) -> None:
        """Carry over which receivers were failing (after a reload), so a push failing
        before and after is not reported again."""
        self._ok = {name: ok for name, ok in previous._ok.items() if name in self.receivers}
        self._errors = {n: e for n, e in previous._errors.items() if n in self.receivers}

    def failing(self) -> dict[str, str]:
        """The receivers whose last push failed, with its error (redacted)."""
        errors, ok = dict(self._errors), dict(self._ok)  # the push thread may be writing
        return {n: e for n, e in sorted(errors.items()) if not ok.get(n, True)}
