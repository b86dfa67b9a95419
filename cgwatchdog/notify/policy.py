"""Which notifications this process sends itself, decided before they are queued.

Two things keep a notification from being sent one by one from here:

- its receiver gets the alert *state* pushed each cycle instead (Alertmanager, a
  :class:`~cgwatchdog.notify.base.StateReceiver`): a queued copy would replay stale
  state after an outage, and the push already carries it;
- this replica follows: another replica of the shard leads and sends them (replicas
  push to Alertmanager alike, which deduplicates; direct notifications only the leader
  sends).

The outbox asks :meth:`SendPolicy.sends` for every notification it is given, whichever
path queues it (a cycle's notifications, action announcements, sends from memory while
the state file fails); those it refuses count as done.
"""

from __future__ import annotations

from collections.abc import Collection

from cgwatchdog.alerts import Notification

__all__ = ["SendPolicy"]


class SendPolicy:
    """Whether a notification is this process's to send."""

    __slots__ = ("sending", "state_receivers")

    def __init__(self, state_receivers: Collection[str] = (), *, sending: bool = True) -> None:
        self.state_receivers = frozenset(state_receivers)
        """Receivers that get the alert state pushed: never sent notifications."""
        self.sending = sending
        """False while another replica of the shard leads: it sends them, this one drops."""

    def sends(self, notification: Notification) -> bool:
        """Whether this process sends ``notification``."""
        return self.sending and notification.receiver not in self.state_receivers
