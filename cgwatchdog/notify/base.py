"""Receivers: the integration interface, the registry of receiver kinds, the factory.

An :class:`Integration` delivers one :class:`~cgwatchdog.alerts.Notification` to one
receiver and says how that went: a one-line receipt, or a
:class:`~cgwatchdog.errors.NotifyError` whose ``recoverable`` tells the outbox whether
trying again can help (and ``retry_after_s`` when the service said when). It knows
nothing of retry, ordering or deduplication; the outbox owns those (Alertmanager's
``notify.Notifier`` has the same single duty).

A receiver kind is one module in ``cgwatchdog/notify/receivers/`` (or anywhere that
registers one) holding its config model and its integration::

    class PagerConfig(Model):
        url: SecretUrlText

    @receiver_kind("pager", PagerConfig)
    class PagerIntegration(Integration):
        def __init__(self, name: str, config: PagerConfig, context: IntegrationContext):
            super().__init__(name, redactor=context.redactor)
            ...
        def notify(self, notification: Notification) -> str: ...

From :data:`RECEIVER_KINDS` come the ``receivers:`` model (one key per kind, see
:func:`receiver_model`), ``check``'s messages, ``test-notify``, the generated docs and
:func:`build_integration`. What a kind can do beyond :meth:`Integration.notify` it
declares: a :class:`StateReceiver` (Alertmanager) takes the whole alert state each
cycle instead of notifications, and the daemon asks :meth:`Integration.state_receiver`
rather than testing classes.
"""

from __future__ import annotations

import abc
import dataclasses
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, create_model

from cgwatchdog.alerts import Alert, Notification
from cgwatchdog.config.models import ReceiverConfig
from cgwatchdog.config.secrets import Redactor, secret_values
from cgwatchdog.registry import Registry

if TYPE_CHECKING:
    import requests

__all__ = [
    "RECEIVER_KINDS",
    "Integration",
    "IntegrationContext",
    "PushResult",
    "ReceiverKind",
    "Redactor",
    "StateReceiver",
    "build_integration",
    "receiver_kind",
    "receiver_model",
    "receiver_redactor",
]

IntegrationT = TypeVar("IntegrationT", bound="Integration")


def _same(text: str) -> str:
    return text


@dataclass(frozen=True, slots=True)
class IntegrationContext:
    """What an integration may use besides its own settings.

    ``session`` is shared by the HTTP integrations when given (one pool for all),
    ``external_url`` is the daemon's own URL for links, ``interval_s`` the poll interval
    (Alertmanager ``endsAt`` is a few of them ahead), ``ssl_context`` overrides the
    system trust store for SMTP (tests use a private CA), ``redactor`` scrubs this
    receiver's secrets.
    """

    session: requests.Session | None = None
    external_url: str = ""
    interval_s: float = 60.0
    ssl_context: ssl.SSLContext | None = None
    redactor: Callable[[str], str] = _same


class Integration(abc.ABC):
    """One receiver's way out. Subclasses implement :meth:`notify`, nothing else is needed."""

    kind: ClassVar[str] = ""
    pushes_state: ClassVar[bool] = False
    """Whether this kind takes the alert state each cycle (see :class:`StateReceiver`)."""

    def __init__(self, name: str, *, redactor: Callable[[str], str] | None = None) -> None:
        self.name = name
        self._redactor = redactor or _same

    @abc.abstractmethod
    def notify(self, notification: Notification) -> str:
        """Deliver one notification; return a one-line receipt (e.g. ``HTTP 200``).

        Raises NotifyError (only that) when it was not delivered.
        """

    def redact(self, text: str) -> str:
        """``text`` with this receiver's secrets replaced by ``<redacted>``."""
        return self._redactor(text)

    def state_receiver(self) -> StateReceiver | None:
        """This integration as a StateReceiver, if it is one (None: notifications only)."""
        return None

    def close(self) -> None:  # noqa: B027 - most integrations hold nothing to release
        """Release connections; the integration is not used afterwards."""


@dataclass(frozen=True, slots=True)
class PushResult:
    """How one push went: the peers that took every batch, and each other peer's error."""

    alerts: int
    accepted: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]

    def receipt(self) -> str:
        """One line for the operator."""
        total = len(self.accepted) + len(self.failed)
        text = f"{self.alerts} alert{'s' if self.alerts != 1 else ''} accepted by "
        text += f"{len(self.accepted)} of {total} Alertmanager peer{'s' if total != 1 else ''}"
        if self.failed:
            text += "; " + "; ".join(f"{peer}: {error}" for peer, error in self.failed)
        return text


class StateReceiver(Integration):
    """A receiver that takes the whole alert state each cycle, not notifications.

    Alertmanager is one: an alert not refreshed before its ``endsAt`` resolves by
    itself, so a failed push is repaired by the next push of the current state, and the
    daemon pushes rather than queues. The documents are Alertmanager's postable alerts.
    """

    pushes_state = True

    def state_receiver(self) -> StateReceiver | None:
        """Itself."""
        return self

    @abc.abstractmethod
    def postable(self, alerts: Iterable[Alert], now: float) -> list[dict[str, Any]]:
        """The documents for the engine's alerts (pending ones left out)."""

    @abc.abstractmethod
    def push_documents(self, documents: Sequence[Mapping[str, Any]]) -> PushResult:
        """Send documents to every peer; NotifyError when no peer took them."""

    @abc.abstractmethod
    def alerts(
        self, matchers: Mapping[str, str] | None = None, *, every_peer: bool = False
    ) -> list[dict[str, Any]]:
        """The alerts the receiver holds now whose labels equal ``matchers``; with
        ``every_peer``, gathered from every peer that answers. NotifyError if none does."""


@dataclass(frozen=True, slots=True)
class ReceiverKind:
    """One kind of receiver: its key in ``receivers:``, config model and integration."""

    name: str
    config: type[BaseModel]
    factory: Callable[[str, Any, IntegrationContext], Integration]
    pushes_state: bool = False


RECEIVER_KINDS: Registry[ReceiverKind] = Registry(
    "receiver kind", builtins="cgwatchdog.notify.receivers"
)
"""Every receiver kind, by its key in a ``receivers:`` entry."""


def receiver_kind(
    name: str, config: type[BaseModel]
) -> Callable[[type[IntegrationT]], type[IntegrationT]]:
    """Register the decorated Integration class as receiver kind ``name``, configured by
    ``config`` under the key ``name`` of a receiver. Its constructor takes
    ``(receiver name, settings, context)``."""

    def register(cls: type[IntegrationT]) -> type[IntegrationT]:
        cls.kind = name
        RECEIVER_KINDS.add(name, ReceiverKind(name, config, cls, cls.pushes_state))
        return cls

    return register


@cache
def _receiver_model(version: int) -> type[ReceiverConfig]:
    kinds = RECEIVER_KINDS.values()
    fields: dict[str, Any] = {kind.name: (kind.config | None, None) for kind in kinds}
    model = create_model(
        "ReceiverConfig",
        __base__=ReceiverConfig,
        __module__=ReceiverConfig.__module__,
        __doc__=ReceiverConfig.__doc__,
        **fields,
    )
    model.state_kinds = frozenset(kind.name for kind in kinds if kind.pushes_state)
    assert issubclass(model, ReceiverConfig)
    return model


def receiver_model() -> type[ReceiverConfig]:
    """The model of one ``receivers:`` entry: ``name``, ``send_resolved`` and one
    optional key per registered kind, exactly one of which must be given."""
    return _receiver_model(RECEIVER_KINDS.version)


def receiver_redactor(receiver: ReceiverConfig) -> Redactor:
    """A Redactor for ``receiver``'s secrets (URLs, their paths, passwords, tokens,
    header values) and the token-like path segments of its URLs."""
    return Redactor(secret_values(receiver), segments=True)


def build_integration(
    receiver: ReceiverConfig,
    *,
    session: requests.Session | None = None,
    external_url: str = "",
    interval_s: float = 60.0,
    ssl_context: ssl.SSLContext | None = None,
) -> Integration:
    """The integration for a configured receiver (see :class:`IntegrationContext`)."""
    context = IntegrationContext(session, external_url, interval_s, ssl_context)
    context = dataclasses.replace(context, redactor=receiver_redactor(receiver))
    return RECEIVER_KINDS[receiver.kind].factory(receiver.name, receiver.settings, context)
