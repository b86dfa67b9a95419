"""The Telegram bot's ears: long polling ``getUpdates`` for commands, answered in the chat.

The daemon runs one :class:`TelegramListener` per ``telegram`` receiver with
``listen: true``, as a task (:meth:`TelegramListener.run`). Its connections are outbound
only (long polling, never a webhook), so nothing on the farm is exposed. Commands::

    /status                              firing alerts and silences, in short
    /ack <alert id> ...                  acknowledge (or /ack in reply to a notification)
    /silence <miner> <duration> [why]    silence a miner's alerts (name=value also works)
    /maintenance <miner> <duration> [why]  the same, and hold back actions on it
    /unsilence <silence id>              expire a silence (its first 8 characters do)
    /help

A command is taken only from a chat in ``chat_ids`` *and* a user in
``allowed_user_ids``; anything else is refused and logged (a stranger's chat gets no
answer; an unlisted user in a listed chat is told their id is not allowed). A command
older than ``STALE_COMMAND_S`` (sent while nobody listened) is not carried out.

Only one process may long-poll a bot (Telegram answers 409 to a second one): with
replicas, only the leader listens (``should_listen``, which the daemon ties to its
role), and a replica that stops leading mid-poll drops that poll unconfirmed, so the new
leader gets those commands. The offset of the next update is saved in the state file
after each command, so a restart neither loses nor repeats one; a command is confirmed
to Telegram by the very next poll. Between replicas (each has its own state file),
Telegram's own queue carries the unconfirmed commands over; a /silence carries its
update id in ``createdBy``, so one already made (the cluster shares silences) is not
made twice. A Bot API outage (refused, 5xx, 409, a wrong token) backs off up to
``BACKOFF_MAX_S`` and is logged when it starts and ends; it never touches polling the
miners or sending notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from cgwatchdog.alerts import Alert, AlertState
from cgwatchdog.errors import NotifyError, StoreError
from cgwatchdog.notify.http import target_of
from cgwatchdog.notify.receivers.telegram import TelegramConfig, bot_url
from cgwatchdog.silences import Matcher, Silence, SilenceBook
from cgwatchdog.store import Store
from cgwatchdog.units import format_duration, parse_duration, short_time

__all__ = [
    "BACKOFF_MAX_S",
    "BACKOFF_S",
    "STALE_COMMAND_S",
    "BotApiError",
    "TelegramListener",
    "status_text",
]

log = logging.getLogger("cgwatchdog.telegram")

# After a failed poll: wait BACKOFF_S, doubling up to BACKOFF_MAX_S, until one works.
BACKOFF_S: Final = 1.0
BACKOFF_MAX_S: Final = 60.0
# A command waiting in Telegram longer than this was sent while nobody listened: doing it
# hours late (a two-hour silence from then) would surprise; it is answered, not done.
STALE_COMMAND_S: Final = 15 * 60.0
# While a poll is open, leadership is looked at this often (a follower must not poll).
LEADERSHIP_CHECK_S: Final = 1.0
_STATE_VERSION: Final = 1
_ALERT_ID: Final = re.compile(r"\b[0-9a-f]{16}\b")
_ANSWER_MAX: Final = 3_500  # characters of an answer (Telegram takes 4,096)
_HELP: Final = (
    "/status: what fires, and the silences\n"
    "/ack ID [ID ...]: acknowledge alerts (or /ack in reply to a notification)\n"
    "/silence MINER DURATION [why]: silence a miner's alerts, e.g. /silence sim-001 2h board swap\n"
    "/maintenance MINER DURATION [why]: the same, and no repairs on it meanwhile\n"
    "/unsilence ID: end a silence (its first 8 characters do)"
)


class BotApiError(Exception):
    """The Bot API did not give updates; ``retry_after_s`` when it said when to retry."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class _Command:
    update_id: int
    chat_id: int
    user_id: int
    who: str  # "@alice" or "Alice (id 123)"
    message_id: int | None
    name: str  # "silence", without the slash and any @botname
    args: tuple[str, ...]
    rest: str  # the text after the command word
    reply_text: str  # the text of the message it replies to ("" if none)
    sent_at: float | None


def status_text(
    alerts: Iterable[Alert], silences: Sequence[Silence], now: float, *, header: str = ""
) -> str:
    """A short plain-text status for chat: firing (and pending) alerts with their ids,
    then the silences in force."""
    firing = sorted(
        (a for a in alerts if a.state is AlertState.FIRING),
        key=lambda a: (a.miner, a.alertname, a.fingerprint),
    )
    pending = sum(1 for a in alerts if a.state is AlertState.PENDING)
    lines = [header] if header else []
    lines.append(f"{len(firing)} firing, {pending} pending")
    for alert in firing[:30]:
        since = alert.fired_at if alert.fired_at is not None else alert.active_since
        ack = f", acknowledged by {alert.acknowledged_by}" if alert.acknowledged_by else ""
        lines.append(
            f"- {alert.alertname} on {alert.miner or 'the fleet'} for "
            f"{format_duration(max(0.0, now - since))}{ack} [{alert.fingerprint}]"
        )
    if len(firing) > 30:
        lines.append(f"... and {len(firing) - 30} more")
    active = [s for s in silences if s.active(now)]
    lines.append(f"{len(active)} silence{'s' if len(active) != 1 else ''} in force")
    lines += [f"- {s.describe()} on {' '.join(map(str, s.matchers))}" for s in active[:20]]
    return "\n".join(lines)


def _who(sender: Mapping[str, Any]) -> str:
    username = sender.get("username")
    if isinstance(username, str) and username:
        return f"@{username}"
    name = " ".join(str(sender.get(k) or "") for k in ("first_name", "last_name")).strip()
    return f"{name or 'user'} (id {sender.get('id')})"


def _command(update: Mapping[str, Any]) -> _Command | None:
    """The command an update carries, if it is a text message starting with /."""
    message = update.get("message")
    if not isinstance(message, Mapping):
        return None
    text = message.get("text")
    chat = message.get("chat")
    sender = message.get("from")
    if not isinstance(text, str) or not text.startswith("/"):
        return None
    if not isinstance(chat, Mapping) or not isinstance(sender, Mapping):
        return None
    chat_id, user_id = chat.get("id"), sender.get("id")
    if not isinstance(chat_id, int) or not isinstance(user_id, int):
        return None
    word, _, rest = text.strip().partition(" ")
    name = word[1:].split("@", 1)[0].lower()
    reply = message.get("reply_to_message")
    reply_text = ""
    if isinstance(reply, Mapping):
        reply_text = str(reply.get("text") or reply.get("caption") or "")
    date = message.get("date")
    message_id = message.get("message_id")
    return _Command(
        update_id=int(update["update_id"]),
        chat_id=chat_id,
        user_id=user_id,
        who=_who(sender),
        message_id=message_id if isinstance(message_id, int) else None,
        name=name,
        args=tuple(rest.split()),
        rest=rest.strip(),
        reply_text=reply_text,
        sent_at=float(date) if isinstance(date, int | float) else None,
    )


class TelegramListener:
    """Long-polls one bot for commands; see the module docstring.

    ``acknowledge(alert_id, by, now)`` is ``Watchdog.acknowledge``; ``status()`` the
    text /status answers (:func:`status_text` makes one); ``store`` keeps the update
    offset under ``telegram:<receiver name>``; ``should_listen()`` says whether this
    process may poll now (the daemon: whether it leads).
    """

    def __init__(
        self,
        name: str,
        config: TelegramConfig,
        *,
        book: SilenceBook,
        acknowledge: Callable[[str, str, float], Alert],
        status: Callable[[], str],
        store: Store | None = None,
        should_listen: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
        backoff_s: float = BACKOFF_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        leadership_check_s: float = LEADERSHIP_CHECK_S,
    ) -> None:
        self.name = name
        self.config = config
        self.book = book
        self.acknowledge = acknowledge
        self.status = status
        self.store = store
        self.should_listen = should_listen
        self.clock = clock
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.leadership_check_s = leadership_check_s
        self.state_key = f"telegram:{name}"
        self.offset: int | None = self._load_offset()
        self.failing: str | None = None
        """The last poll's error while polls fail (None: they work)."""
        self.handled = 0
        """Commands carried out or refused since the start (for tests and metrics)."""
        self._session: aiohttp.ClientSession | None = None
        self._secrets = (config.token.get_secret_value(),)

    # -- the offset ------------------------------------------------------------------------

    def _load_offset(self) -> int | None:
        if self.store is None:
            return None
        try:
            data = self.store.load_state(self.state_key)
        except StoreError as exc:
            log.error("Telegram %s: the update offset could not be read: %s", self.name, exc)
            return None
        offset = data.get("offset") if data and data.get("version") == _STATE_VERSION else None
        return offset if isinstance(offset, int) else None

    def _save_offset(self) -> None:
        if self.store is None or self.offset is None:
            return
        try:
            self.store.save_state(
                self.state_key, {"version": _STATE_VERSION, "offset": self.offset}, self.clock()
            )
        except StoreError as exc:
            log.error(
                "Telegram %s: the update offset was not saved (a restart may repeat a command): %s",
                self.name,
                exc,
            )

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled; never raises for the Bot API's failures."""
        delay = self.backoff_s
        try:
            while True:
                if not self.should_listen():
                    await asyncio.sleep(self.leadership_check_s)
                    continue
                try:
                    await self.poll_once()
                except BotApiError as exc:
                    self._failed(str(exc))
                    wait = max(delay, exc.retry_after_s or 0.0)
                    delay = min(delay * 2, self.backoff_max_s)
                    await asyncio.sleep(min(wait, self.backoff_max_s))
                    continue
                if self.failing is not None:
                    log.warning("Telegram %s: polling for commands works again", self.name)
                    self.failing = None
                delay = self.backoff_s
        finally:
            await self.close()

    def _failed(self, error: str) -> None:
        if error != self.failing:
            log.warning(
                "Telegram %s: polling for commands failed (trying again with back-off; "
                "notifications are not affected): %s",
                self.name,
                error,
            )
        self.failing = error

    async def close(self) -> None:
        """Close the HTTP session (run does it on its way out)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    async def _call(self, method: str, body: Mapping[str, Any], timeout_s: float) -> Any:
        """One Bot API call; its ``result``, or BotApiError."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        target = target_of(self.config.api_url)
        try:
            async with self._session.post(
                bot_url(self.config, method),
                json=dict(body),
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
            ) as response:
                status = response.status
                try:
                    data = await response.json(content_type=None)
                except (ValueError, aiohttp.ClientError):
                    data = None
        except TimeoutError:
            raise BotApiError(f"{target} did not answer {method} within {timeout_s:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                raise BotApiError(f"connection refused by {target} ({method})") from None
            why = exc.os_error.strerror or type(exc.os_error).__name__
            raise BotApiError(f"cannot reach {target} ({method}): {why}") from None
        except aiohttp.ServerDisconnectedError:
            raise BotApiError(
                f"{target} closed the connection without answering {method}"
            ) from None
        except aiohttp.ClientOSError as exc:
            # aiohttp names the URL (the token is in its path): say only what happened.
            why = (exc.strerror or "the connection failed").split(" for http", 1)[0]
            raise BotApiError(self._redact(f"cannot reach {target} ({method}): {why}")) from None
        except aiohttp.ClientError as exc:  # its text may hold the URL, hence the token
            raise BotApiError(f"cannot reach {target} ({method}): {type(exc).__name__}") from None
        if status == 200 and isinstance(data, dict) and data.get("ok") is True:
            return data.get("result")
        description = data.get("description") if isinstance(data, dict) else None
        parameters = data.get("parameters") if isinstance(data, dict) else None
        retry = parameters.get("retry_after") if isinstance(parameters, dict) else None
        why = {
            401: "the token was refused: check token_file",
            404: "the token was refused (or api_url is wrong)",
            409: "another process polls this bot, and Telegram lets only one; with "
            "replicas only the leader may listen",
        }.get(status, "")
        text = f"{target} answered {method} with HTTP {status}"
        if description:
            text += f": {self._redact(str(description))[:200]}"
        if why:
            text += f" ({why})"
        raise BotApiError(text, float(retry) if isinstance(retry, int | float) else None)

    async def poll_once(self) -> int:
        """One long poll of ``getUpdates``; the commands handled (BotApiError if it failed).

        A poll that outlives this process's leadership is dropped unconfirmed."""
        body: dict[str, Any] = {
            "timeout": int(self.config.poll_timeout_s),
            "allowed_updates": ["message"],
        }
        if self.offset is not None:
            body["offset"] = self.offset
        request = asyncio.ensure_future(
            self._call("getUpdates", body, self.config.poll_timeout_s + self.config.timeout_s)
        )
        try:
            while True:
                done, _ = await asyncio.wait({request}, timeout=self.leadership_check_s)
                if done:
                    break
                if not self.should_listen():
                    return 0
            updates = request.result()
        finally:
            if not request.done():
                request.cancel()
                with contextlib.suppress(asyncio.CancelledError, BotApiError):
                    await request
        if not isinstance(updates, list):
            raise BotApiError(
                f"{target_of(self.config.api_url)} answered getUpdates without a list"
            )
        handled = 0
        for update in sorted(
            (u for u in updates if isinstance(u, dict) and isinstance(u.get("update_id"), int)),
            key=lambda u: int(u["update_id"]),
        ):
            if not self.should_listen():
                break  # not ours any more: the new leader gets it (it stays unconfirmed)
            update_id = int(update["update_id"])
            if self.offset is not None and update_id < self.offset:
                continue  # confirmed before (a server that sends it again)
            await self._handle(update)
            self.offset = update_id + 1
            self._save_offset()
            handled += 1
        return handled

    # -- commands --------------------------------------------------------------------------

    async def _handle(self, update: Mapping[str, Any]) -> None:
        command = _command(update)
        if command is None:
            return
        self.handled += 1
        config = self.config
        if command.chat_id not in config.command_chats:
            log.warning(
                "Telegram %s: refused /%s from %s (user %d) in chat %d: the chat is not in "
                "chat_ids",
                self.name,
                command.name,
                command.who,
                command.user_id,
                command.chat_id,
            )
            return
        if command.user_id not in config.allowed_user_ids:
            log.warning(
                "Telegram %s: refused /%s from %s (user %d) in chat %d: the user is not in "
                "allowed_user_ids",
                self.name,
                command.name,
                command.who,
                command.user_id,
                command.chat_id,
            )
            await self._answer(
                command,
                f"Not allowed: your user id {command.user_id} is not in allowed_user_ids.",
            )
            return
        now = self.clock()
        if command.sent_at is not None and now - command.sent_at > STALE_COMMAND_S:
            log.warning(
                "Telegram %s: not carrying out /%s from %s: sent %s ago, while nobody listened",
                self.name,
                command.name,
                command.who,
                format_duration(now - command.sent_at),
            )
            await self._answer(
                command,
                f"Not done: this command was sent {format_duration(now - command.sent_at)} "
                "ago, while the bot was not listening. Send it again if it still stands.",
            )
            return
        try:
            answer = await self._carry_out(command, now)
        except Exception:  # a bug in one command must not end the listener
            log.exception("Telegram %s: /%s failed with an internal error", self.name, command.name)
            answer = "Internal error (see the daemon's log)."
        await self._answer(command, answer)

    async def _carry_out(self, command: _Command, now: float) -> str:
        name = command.name
        if name in ("help", "start"):
            return _HELP
        if name == "status":
            return self.status()
        if name == "ack":
            return self._ack(command, now)
        if name in ("silence", "maintenance"):
            return await self._silence(command, now, maintenance=name == "maintenance")
        if name == "unsilence":
            return await self._unsilence(command, now)
        return f"Unknown command /{name}.\n\n{_HELP}"

    def _ack(self, command: _Command, now: float) -> str:
        ids = [a for a in command.args if a]
        if not ids:
            ids = list(dict.fromkeys(_ALERT_ID.findall(command.reply_text)))
        if not ids:
            return "Which alert? /ack ID, or /ack in reply to a notification."
        lines = []
        for alert_id in ids[:50]:
            try:
                alert = self.acknowledge(alert_id, f"{command.who} via Telegram", now)
            except KeyError as exc:
                lines.append(str(exc.args[0]))
            except ValueError as exc:
                lines.append(str(exc))
            else:
                lines.append(
                    f"Acknowledged {alert.alertname} on {alert.miner or 'the fleet'} "
                    f"[{alert.fingerprint}]: no repeats while it fires."
                )
                log.warning(
                    "Telegram %s: alert %s acknowledged by %s",
                    self.name,
                    alert.fingerprint,
                    command.who,
                )
        return "\n".join(lines)

    async def _silence(self, command: _Command, now: float, *, maintenance: bool) -> str:
        usage = f"Write /{command.name} MINER DURATION [why], e.g. /{command.name} sim-001 2h board swap"
        if len(command.args) < 2:
            return usage
        target, duration = command.args[0], command.args[1]
        try:
            matcher = Matcher.parse(target) if "=" in target else Matcher("miner", target)
            seconds = parse_duration(duration)
        except ValueError as exc:
            return f"{exc}\n{usage}"
        if seconds <= 0:
            return f"The duration must be positive.\n{usage}"
        comment = command.rest.split(None, 2)[2] if len(command.args) > 2 else ""
        marker = f"#{command.update_id}"
        created_by = f"{command.who} via Telegram {marker}"
        done = [s for s in self.book.list(now) if s.created_by.endswith(marker)]
        if done:  # made already, by a leader that stopped before confirming this command
            silence = done[0]
        else:
            try:
                silence = await asyncio.to_thread(
                    self.book.add,
                    [matcher],
                    now + seconds,
                    comment or f"from Telegram by {command.who}",
                    created_by,
                    maintenance,
                    now,
                )
            except ValueError as exc:
                return f"Not silenced: {exc}"
            except NotifyError as exc:
                return f"Not silenced: {exc}"
            log.warning(
                "Telegram %s: %s made by %s, on %s",
                self.name,
                silence.describe(),
                command.who,
                matcher,
            )
        what = "Maintenance" if silence.maintenance else "Silenced"
        return (
            f"{what}: {matcher} until {short_time(silence.ends_at)}; id {silence.id}"
            f"{' (no repairs meanwhile)' if silence.maintenance else ''}. "
            f"/unsilence {silence.id[:8]} ends it."
        )

    async def _unsilence(self, command: _Command, now: float) -> str:
        if len(command.args) != 1:
            return "Which silence? /unsilence ID (the first 8 characters do; /status lists them)"
        try:
            silence = await asyncio.to_thread(self.book.expire, command.args[0], now)
        except KeyError as exc:
            return str(exc.args[0])
        except (ValueError, NotifyError) as exc:
            return f"Not expired: {exc}"
        log.warning("Telegram %s: %s expired by %s", self.name, silence.describe(), command.who)
        return f"Expired: {silence.describe()}"

    async def _answer(self, command: _Command, text: str) -> None:
        """sendMessage the answer (plain text, escaped); a failure is logged, not retried:
        the command itself was carried out."""
        if len(text) > _ANSWER_MAX:
            text = text[: _ANSWER_MAX - 1] + "…"
        body: dict[str, Any] = {
            "chat_id": command.chat_id,
            "text": html.escape(text, quote=False),
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
        if command.message_id is not None:
            body["reply_parameters"] = {
                "message_id": command.message_id,
                "allow_sending_without_reply": True,
            }
        try:
            await self._call("sendMessage", body, self.config.timeout_s)
        except BotApiError as exc:
            log.warning(
                "Telegram %s: the answer to /%s was not sent: %s", self.name, command.name, exc
            )
