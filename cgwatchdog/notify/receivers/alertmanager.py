"""Push alert *state* to Alertmanager: POST /api/v2/alerts to every peer, each cycle.

This receiver is state-based, not notification-based. Each cycle the daemon calls
:meth:`AlertmanagerIntegration.push` with every alert the engine holds: firing ones go
out with ``endsAt`` a few poll intervals ahead (``ENDS_AT_INTERVALS``), resolved ones
with ``endsAt`` at their resolution; pending ones are left out. That is the contract
Alertmanager documents for clients (Prometheus does the same, every
``resend_delay``): an alert not refreshed before its ``endsAt`` resolves by itself, so a
dead watchdog cannot leave stale alerts firing, and a re-sent alert is deduplicated.

Why not the outbox: the push is idempotent and self-correcting. A failed push is
repaired by the next cycle's push of the *current* state, whereas queued old pushes
would replay stale state after an outage (an alert resolved meanwhile shown firing
again) and grow without bound while a peer is down. Alertmanager does not gossip alerts
between cluster peers, so each push goes to every peer; it counts as done when at least
one peer accepted it (the cluster deduplicates and notifies once), and fails (a
recoverable NotifyError naming every peer's error) only when none did.

It also keeps the silences of :mod:`cgwatchdog.silences` in the cluster
(``/api/v2/silences``): peers *do* gossip silences, so one made on any peer holds on all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any, Final
from urllib.parse import quote

from pydantic import AfterValidator, Field, model_validator

from cgwatchdog.alerts import Alert, AlertState, AlertView, Notification
from cgwatchdog.config.fields import Model, PositiveDuration, UrlText, check_plain_url
from cgwatchdog.config.models import AuthConfig
from cgwatchdog.errors import NotifyError
from cgwatchdog.notify.base import IntegrationContext, PushResult, StateReceiver, receiver_kind
from cgwatchdog.notify.http import check_response, new_session, request_failure, target_of
from cgwatchdog.units import rfc3339

if TYPE_CHECKING:
    import requests

__all__ = [
    "BATCH_SIZE",
    "ENDS_AT_INTERVALS",
    "MIN_RESEND_S",
    "AlertmanagerConfig",
    "AlertmanagerIntegration",
    "silence_remote",
]

# endsAt of a firing alert is this many intervals ahead (Prometheus: 4 x resend delay),
# so one or two late or failed cycles do not resolve it.
ENDS_AT_INTERVALS: Final = 4
# Never less than this per interval: a 5 s poll interval must not make alerts flap when
# a push is a few seconds late.
MIN_RESEND_S: Final = 60.0
# Alerts per POST: 10,000 miners may fire thousands at once; keep each request small.
BATCH_SIZE: Final = 500


def _one_url(data: Any) -> Any:
    if isinstance(data, dict) and "url" in data:
        if "urls" in data:
            raise ValueError("give url or urls, not both")
        rest = {key: value for key, value in data.items() if key != "url"}
        return {**rest, "urls": [data["url"]]}
    return data


class AlertmanagerConfig(Model):
    """Push to Alertmanager's /api/v2/alerts; ``url:`` or every peer under ``urls:``."""

    urls: Annotated[
        tuple[Annotated[UrlText, AfterValidator(check_plain_url)], ...], Field(min_length=1)
    ]
    """Every peer of the Alertmanager cluster (alerts are not gossiped between peers);
    ``url:`` for one."""
    auth: AuthConfig | None = None
    """HTTP authentication, if the peers ask for it."""
    verify_tls: bool = True
    """Check the peers' certificates."""
    timeout_s: PositiveDuration = Field(default=10.0, validation_alias="timeout")
    """How long one request may take."""

    @model_validator(mode="before")
    @classmethod
    def _url(cls, data: Any) -> Any:
        return _one_url(data)


def _labels(labels: Mapping[str, str]) -> dict[str, str]:
    # An empty label value means "no such label" to Alertmanager, as in Prometheus.
    return {name: value for name, value in labels.items() if value != ""}


@receiver_kind("alertmanager", AlertmanagerConfig)
class AlertmanagerIntegration(StateReceiver):
    """Pushes alerts to every configured Alertmanager peer."""

    def __init__(
        self,
        name: str,
        config: AlertmanagerConfig,
        context: IntegrationContext,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name, redactor=context.redactor)
        session, interval_s, external_url = (
            context.session,
            context.interval_s,
            context.external_url,
        )
        self._config = config
        self._peers = tuple(url.rstrip("/") for url in config.urls)
        self._own_session = session is None
        self._session = session if session is not None else new_session()
        self.ttl_s = ENDS_AT_INTERVALS * max(interval_s, MIN_RESEND_S)
        self._external_url = external_url
        self._clock = clock
        self._headers: dict[str, str] = {}
        self._auth: tuple[str, str] | None = None
        if config.auth is not None and config.auth.basic is not None:
            self._auth = (config.auth.basic.user, config.auth.basic.password.get_secret_value())
        elif config.auth is not None and config.auth.bearer is not None:
            self._headers["Authorization"] = f"Bearer {config.auth.bearer.token.get_secret_value()}"
        self._pool: ThreadPoolExecutor | None = None

    # -- what is sent ------------------------------------------------------------------

    def _document(
        self, labels: Mapping[str, str], annotations: Mapping[str, str], starts: float, ends: float
    ) -> dict[str, Any]:
        document: dict[str, Any] = {
            "labels": _labels(labels),
            "annotations": dict(annotations),
            "startsAt": rfc3339(starts),
            "endsAt": rfc3339(ends),
        }
        if self._external_url:
            document["generatorURL"] = self._external_url
        return document

    def postable(self, alerts: Iterable[Alert], now: float) -> list[dict[str, Any]]:
        """The /api/v2/alerts documents for the engine's alerts (pending ones left out)."""
        documents = []
        ends_firing = now + self.ttl_s
        for alert in alerts:
            if alert.state is AlertState.FIRING:
                starts = alert.active_since if alert.fired_at is None else alert.fired_at
                documents.append(
                    self._document(alert.labels, alert.annotations, starts, ends_firing)
                )
            elif alert.state is AlertState.RESOLVED:
                starts = alert.active_since if alert.fired_at is None else alert.fired_at
                ends = alert.last_seen if alert.resolved_at is None else alert.resolved_at
                documents.append(self._document(alert.labels, alert.annotations, starts, ends))
        return documents

    # -- pushing -----------------------------------------------------------------------

    def push(self, alerts: Sequence[Alert], now: float) -> PushResult:
        """Send the current state of ``alerts`` to every peer; NotifyError if none took it."""
        return self.push_documents(self.postable(alerts, now))

    def push_documents(self, documents: Sequence[Mapping[str, Any]]) -> PushResult:
        """POST ready-made alert documents to every peer (in parallel), in batches.

        With no documents nothing is sent, and the result lists no peer either way.
        """
        if not documents:
            return PushResult(0, (), ())
        batches = [
            json.dumps(list(documents[i : i + BATCH_SIZE]), separators=(",", ":")).encode()
            for i in range(0, len(documents), BATCH_SIZE)
        ]
        if len(self._peers) == 1:
            outcomes = [self._push_peer(self._peers[0], batches)]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=len(self._peers), thread_name_prefix="cgwatchdog-am"
                )
            outcomes = list(
                self._pool.map(lambda peer: self._push_peer(peer, batches), self._peers)
            )
        accepted = tuple(peer for peer, error in outcomes if error is None)
        failed = tuple((peer, str(error)) for peer, error in outcomes if error is not None)
        if not accepted:
            raise NotifyError(
                "no Alertmanager peer accepted the alerts: "
                + "; ".join(f"{peer}: {error}" for peer, error in failed),
                # Retrying helps unless every peer refused the alerts themselves (400).
                recoverable=any(e is not None and e.recoverable for _, e in outcomes),
            )
        return PushResult(len(documents), accepted, failed)

    def _push_peer(self, peer: str, batches: Sequence[bytes]) -> tuple[str, NotifyError | None]:
        import requests  # only to send (see cgwatchdog.notify.http)

        target = target_of(peer)
        for batch in batches:
            try:
                response = self._session.post(
                    peer + "/api/v2/alerts",
                    data=batch,
                    headers={"Content-Type": "application/json", **self._headers},
                    auth=self._auth,
                    timeout=self._config.timeout_s,
                    verify=self._config.verify_tls,
                    allow_redirects=False,
                    stream=True,
                )
                check_response(response, target)
            except requests.RequestException as exc:
                return target, request_failure(exc, target, self._config.timeout_s)
            except NotifyError as exc:
                return target, exc
        return target, None

    def notify(self, notification: Notification) -> str:
        """Push a notification's alerts once (``test-notify``); firing ones end in ``ttl_s``.

        The daemon pushes state with :meth:`push` each cycle instead: a firing alert
        pushed only once expires on Alertmanager after ``ttl_s``.
        """
        now = self._clock()
        documents = [self._view_document(view, now) for view in notification.alerts]
        return self.push_documents(documents).receipt()

    def _view_document(self, view: AlertView, now: float) -> dict[str, Any]:
        ends = now + self.ttl_s if view.ends_at is None else view.ends_at
        return self._document(view.labels, view.annotations, view.starts_at, ends)

    # -- reading back ------------------------------------------------------------------

    def alerts(
        self,
        matchers: Mapping[str, str] | None = None,
        *,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
        every_peer: bool = False,
    ) -> list[dict[str, Any]]:
        """GET /api/v2/alerts from the first peer that answers; ``matchers`` are label
        equalities. With ``every_peer``, the alerts of every peer that answers, together:
        Alertmanager peers do not gossip alerts, so a replica that reaches only one peer
        shows its heartbeat only there (leadership reads every peer).
        NotifyError when no peer answers."""
        params: list[tuple[str, str]] = [
            ("active", str(active).lower()),
            ("silenced", str(silenced).lower()),
            ("inhibited", str(inhibited).lower()),
        ]
        params += [("filter", f"{k}={json.dumps(v)}") for k, v in (matchers or {}).items()]
        errors: list[str] = []
        gathered: list[dict[str, Any]] = []
        answered = False
        for alerts in self._lists("/api/v2/alerts", "alerts", errors, params=params):
            if not every_peer:
                return alerts
            gathered += alerts
            answered = True
        if answered:
            return gathered
        raise NotifyError("no Alertmanager peer answered: " + "; ".join(errors), recoverable=True)

    # -- silences (cgwatchdog.silences.SilenceRemote) -----------------------------------

    def _call(self, method: str, peer: str, path: str, **kwargs: Any) -> requests.Response:
        return self._session.request(
            method,
            peer + path,
            headers={**kwargs.pop("headers", {}), **self._headers},
            auth=self._auth,
            timeout=self._config.timeout_s,
            verify=self._config.verify_tls,
            allow_redirects=False,
            **kwargs,
        )

    def _lists(
        self, path: str, what: str, errors: list[str], **kwargs: Any
    ) -> Iterator[list[dict[str, Any]]]:
        """GET ``path`` from each peer in turn; yield the objects of each JSON list that
        a peer answers, and add to ``errors`` why the others gave none."""
        import requests  # only to send (see cgwatchdog.notify.http)

        for peer in self._peers:
            target = target_of(peer)
            try:
                response = self._call("GET", peer, path, **kwargs)
            except requests.RequestException as exc:
                errors.append(str(request_failure(exc, target, self._config.timeout_s)))
                continue
            if response.status_code != 200:
                try:
                    check_response(response, target)
                except NotifyError as exc:
                    errors.append(str(exc))
                continue
            try:
                found = response.json()
            except ValueError:
                errors.append(f"{target} answered something other than JSON")
                continue
            if not isinstance(found, list):
                errors.append(f"{target} answered JSON that is not a list of {what}")
                continue
            yield [item for item in found if isinstance(item, dict)]

    def get_silences(self) -> list[dict[str, Any]]:
        """GET /api/v2/silences from every peer that answers, merged by id (the latest
        ``updatedAt`` wins): peers gossip silences, but one just back may lag. NotifyError
        when no peer answers."""
        errors: list[str] = []
        merged: dict[str, dict[str, Any]] = {}
        answered = False
        for found in self._lists("/api/v2/silences", "silences", errors):
            answered = True
            for item in found:
                if not isinstance(item.get("id"), str):
                    continue
                known = merged.get(item["id"])
                if known is None or str(item.get("updatedAt", "")) > str(
                    known.get("updatedAt", "")
                ):
                    merged[item["id"]] = item
        if not answered:
            raise NotifyError(
                "no Alertmanager peer answered for its silences: " + "; ".join(errors),
                recoverable=True,
            )
        return list(merged.values())

    def post_silence(self, document: Mapping[str, Any]) -> str:
        """POST a silence to the first peer that takes it (peers gossip it to one
        another); its id. ValueError when Alertmanager refuses the silence itself (400),
        NotifyError when no peer could be reached."""
        import requests  # only to send (see cgwatchdog.notify.http)

        body = json.dumps(document, separators=(",", ":")).encode()
        errors: list[str] = []
        for peer in self._peers:
            target = target_of(peer)
            try:
                response = self._call(
                    "POST",
                    peer,
                    "/api/v2/silences",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
            except requests.RequestException as exc:
                errors.append(str(request_failure(exc, target, self._config.timeout_s)))
                continue
            if response.status_code == 400:
                raise ValueError(f"Alertmanager refused the silence: {response.text.strip()[:200]}")
            if response.status_code != 200:
                try:
                    check_response(response, target)
                except NotifyError as exc:
                    errors.append(str(exc))
                continue
            try:
                silence_id = response.json()["silenceID"]
            except (ValueError, KeyError, TypeError):
                errors.append(f"{target} did not answer with a silenceID")
                continue
            if isinstance(silence_id, str) and silence_id:
                return silence_id
            errors.append(f"{target} answered an empty silenceID")
        raise NotifyError(
            "no Alertmanager peer took the silence (it was not made): " + "; ".join(errors),
            recoverable=True,
        )

    def delete_silence(self, silence_id: str) -> None:
        """DELETE /api/v2/silence/{id} on the first peer that knows it (one expired
        already is no error); a silence no answering peer knows is gone already.
        NotifyError when no peer could be reached."""
        import requests  # only to send (see cgwatchdog.notify.http)

        errors: list[str] = []
        answered = False
        for peer in self._peers:
            target = target_of(peer)
            try:
                response = self._call("DELETE", peer, f"/api/v2/silence/{quote(silence_id)}")
            except requests.RequestException as exc:
                errors.append(str(request_failure(exc, target, self._config.timeout_s)))
                continue
            if response.status_code == 200:
                return
            text = response.text.strip()[:200]
            # Alertmanager answers 500 "silence not found" for an id it does not hold
            # (yet: gossip may not have brought it), 422 for one that is not a UUID.
            if response.status_code in (404, 422) or "not found" in text:
                answered = True
                continue
            errors.append(f"{target} answered HTTP {response.status_code}: {text}")
        if not answered:
            raise NotifyError(
                "no Alertmanager peer expired the silence: " + "; ".join(errors),
                recoverable=True,
            )

    def close(self) -> None:
        """Stop the peer threads and close the Session if it is this integration's own."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        if self._own_session:
            self._session.close()


def silence_remote(receiver: object) -> AlertmanagerIntegration | None:
    """The cluster's receiver as the silence book's remote, if it is an Alertmanager one
    (``SilenceBook.set_remote(silence_remote(push.cluster_receiver))``)."""
    return receiver if isinstance(receiver, AlertmanagerIntegration) else None
