"""Telegram as a receiver kind and a command listener, against a fake Bot API: a real
aiohttp HTTP server on 127.58.3.1 implementing ``getUpdates`` (long polling, offsets
confirmed as Telegram confirms them) and ``sendMessage``, which can also go down
(connection refused) or answer 500 or 409.

The receiver (blocking, requests) runs in worker threads; the listener on the test's
event loop with short back-off and long-poll times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cgwatchdog.alerts import AlertEngine, Evaluation, Notification, Signal
from cgwatchdog.config.loader import load_config
from cgwatchdog.errors import NotifyError
from cgwatchdog.notify import Outbox, build_integration
from cgwatchdog.notify.receivers.telegram import TelegramConfig, TelegramIntegration
from cgwatchdog.notify.telegram_listener import TelegramListener, status_text
from cgwatchdog.silences import SilenceBook, SilenceState
from cgwatchdog.simulator import FakeClock, Fleet
from cgwatchdog.store import Store
from cgwatchdog.watchdog import Watchdog
from tests.conftest import until

HOST = "127.58.3.1"
TOKEN = "123456:ABCdefGhIJKlmNoPQRsTUVwxyZ-test"
CHAT = -1001234
OTHER_CHAT = -1009999
ALICE = 111
MALLORY = 666
LABELS = {"alertname": "DeviceDead", "miner": "sim-001", "severity": "critical"}


@dataclass
class FakeBotApi:
    """The Bot API's getUpdates and sendMessage, as far as cgwatchdog uses them."""

    updates: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    offsets: list[int | None] = field(default_factory=list)  # each getUpdates' offset
    fail_status: int | None = None
    next_update_id: int = 500
    next_message_id: int = 1
    port: int = 0
    runner: web.AppRunner | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, HOST, self.port).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        """Down: connections are refused until start() again (same port)."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def push(
        self,
        text: str,
        *,
        chat: int = CHAT,
        user: int = ALICE,
        username: str | None = "alice",
        reply_to: str | None = None,
        date: float | None = None,
    ) -> int:
        """A message someone sends the bot; its update id."""
        update_id = self.next_update_id
        self.next_update_id += 1
        sender: dict[str, Any] = {"id": user, "is_bot": False, "first_name": "A"}
        if username:
            sender["username"] = username
        message: dict[str, Any] = {
            "message_id": update_id * 10,
            "from": sender,
            "chat": {"id": chat, "type": "supergroup"},
            "date": int(time.time() if date is None else date),
            "text": text,
        }
        if reply_to is not None:
            message["reply_to_message"] = {"message_id": 1, "text": reply_to}
        self.updates.append({"update_id": update_id, "message": message})
        self.arrived.set()
        return update_id

    def answers(self, chat: int = CHAT) -> list[str]:
        return [m["text"] for m in self.sent if m["chat_id"] == chat and "reply_parameters" in m]

    async def handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TOKEN:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        body = await request.json() if request.can_read_body else {}
        method = request.match_info["method"]
        if method == "getUpdates":
            return await self.get_updates(body)
        if method == "sendMessage":
            if self.fail_status is not None:
                return self.failure()
            self.sent.append(body)
            message_id = self.next_message_id
            self.next_message_id += 1
            return web.json_response({"ok": True, "result": {"message_id": message_id}})
        return web.json_response(
            {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
        )

    def failure(self) -> web.Response:
        status = self.fail_status or 500
        description = {
            409: "Conflict: terminated by other getUpdates request; make sure that only one "
            "bot instance is running",
        }.get(status, "Internal Server Error")
        return web.json_response(
            {"ok": False, "error_code": status, "description": description}, status=status
        )

    async def get_updates(self, body: dict[str, Any]) -> web.Response:
        offset = body.get("offset")
        self.offsets.append(offset)
        if self.fail_status is not None:
            return self.failure()
        if isinstance(offset, int):  # Telegram forgets what an offset confirms
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + min(float(body.get("timeout", 0)), 0.5)
        while not self.updates and time.monotonic() < deadline:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        return web.json_response({"ok": True, "result": list(self.updates)})


@pytest.fixture
async def bot() -> AsyncIterator[FakeBotApi]:
    fake = FakeBotApi()
    await fake.start()
    yield fake
    await fake.stop()


def telegram_config(bot: FakeBotApi, **extra: Any) -> TelegramConfig:
    return TelegramConfig.model_validate(
        {
            "token": TOKEN,
            "chat_ids": [CHAT, "@farmchannel"],
            "api_url": bot.url,
            "listen": True,
            "allowed_user_ids": [ALICE],
            "poll_timeout": "1s",
            "timeout": "2s",
            **extra,
        }
    )


@dataclass
class Bot:
    listener: TelegramListener
    book: SilenceBook
    engine: AlertEngine
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.listener.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    @property
    def fingerprint(self) -> str:
        return self.engine.firing()[0].fingerprint


def make_bot(
    bot: FakeBotApi,
    *,
    store: Store | None = None,
    book: SilenceBook | None = None,
    should_listen: Callable[[], bool] = lambda: True,
    clock: Callable[[], float] = time.time,
) -> Bot:
    engine = AlertEngine()
    engine.update(Evaluation([Signal(LABELS, {}, "1")], {("DeviceDead", "sim-001")}), time.time())
    book = book if book is not None else SilenceBook()
    listener = TelegramListener(
        "oncall",
        telegram_config(bot),
        book=book,
        acknowledge=engine.acknowledge,
        status=lambda: status_text(engine.alerts(), book.active(time.time()), time.time()),
        store=store,
        should_listen=should_listen,
        clock=clock,
        backoff_s=0.05,
        backoff_max_s=0.2,
        leadership_check_s=0.05,
    )
    return Bot(listener, book, engine)


@pytest.fixture
async def listening(bot: FakeBotApi) -> AsyncIterator[Bot]:
    made = make_bot(bot)
    made.start()
    yield made
    await made.stop()


async def answer_to(bot: FakeBotApi, count: int, chat: int = CHAT) -> str:
    found: list[str] = await until(
        f"{count} answer(s) in chat {chat}",
        lambda: bot.answers(chat) if len(bot.answers(chat)) >= count else None,
        10.0,
        context=lambda: f"sent: {bot.sent}",
    )
    return found[count - 1]


# --- the receiver ------------------------------------------------------------------------------


def notification(engine: AlertEngine) -> Notification:
    from cgwatchdog.alerts import AlertView

    views = tuple(AlertView.of(a) for a in engine.firing())
    return Notification("oncall", "g", {"alertname": "DeviceDead"}, "firing", views)


async def test_notifications_go_to_every_chat_with_the_alert_ids(
    bot: FakeBotApi, tmp_path: Path
) -> None:
    (tmp_path / "bot-token").write_text(TOKEN + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"state_dir: {tmp_path}\nminers: []\nrules: []\n"
        "receivers:\n"
        f"  - {{name: oncall, telegram: {{token_file: bot-token, chat_ids: [{CHAT}, '@farmchannel'],"
        f" api_url: '{bot.url}'}}}}\n"
        "  - {name: old, webhook: {url: 'https://api.telegram.org/bot1:x/sendMessage',"
        " format: telegram, chat_id: 5}}\n"
        "route: {receiver: oncall}\n"
    )
    loaded = load_config(config)
    receiver = loaded.receivers[0]
    assert receiver.kind == "telegram" and loaded.receivers[1].kind == "webhook"
    integration = build_integration(receiver)
    assert isinstance(integration, TelegramIntegration)
    engine = make_bot(bot).engine
    fp = engine.firing()[0].fingerprint
    receipt = await asyncio.to_thread(integration.notify, notification(engine))
    assert receipt == "HTTP 200 from 2 chats"
    assert [m["chat_id"] for m in bot.sent] == [CHAT, "@farmchannel"]
    text = bot.sent[0]["text"]
    assert f"<code>{fp}</code>" in text and "sim-001" in text and "/ack" in text
    assert bot.sent[0]["parse_mode"] == "HTML"

    bot.fail_status = 500
    with pytest.raises(NotifyError) as failed:
        await asyncio.to_thread(integration.notify, notification(engine))
    assert failed.value.recoverable and "HTTP 500" in str(failed.value)
    assert TOKEN not in str(failed.value)
    bot.fail_status = None
    await bot.stop()
    with pytest.raises(NotifyError, match="connection refused") as refused:
        await asyncio.to_thread(integration.notify, notification(engine))
    assert TOKEN not in str(refused.value)
    integration.close()


def test_listening_needs_allowed_users_and_a_numeric_chat() -> None:
    base = {"token": TOKEN, "chat_ids": [CHAT], "listen": True}
    with pytest.raises(ValueError, match="allowed_user_ids"):
        TelegramConfig.model_validate(base)
    with pytest.raises(ValueError, match="numeric chat id"):
        TelegramConfig.model_validate({**base, "chat_ids": ["@chan"], "allowed_user_ids": [1]})
    with pytest.raises(ValueError, match="not a chat id"):
        TelegramConfig.model_validate({**base, "chat_ids": ["general"], "allowed_user_ids": [1]})


# --- the listener ------------------------------------------------------------------------------


async def test_silence_from_an_allowed_chat_is_made_and_answered(
    bot: FakeBotApi, listening: Bot
) -> None:
    update = bot.push("/silence sim-001 2h board swap")
    answer = await answer_to(bot, 1)
    (silence,) = listening.book.active(time.time())
    assert silence.comment == "board swap" and not silence.maintenance
    assert silence.created_by == f"@alice via Telegram #{update}"
    assert [str(m) for m in silence.matchers] == ['miner="sim-001"']
    assert answer.startswith('Silenced: miner="sim-001" until')
    assert silence.id in answer

    bot.push("/maintenance@FarmBot miner=~sim-00[12] 30m psu")
    answer = await answer_to(bot, 2)
    assert "Maintenance" in answer and "no repairs" in answer
    assert listening.book.in_maintenance({"miner": "sim-002"}, time.time())

    bot.push(f"/unsilence {silence.id[:8]}")
    assert "Expired" in await answer_to(bot, 3)
    assert listening.book.get(silence.id).state(time.time()) is SilenceState.EXPIRED

    bot.push("/status")
    status = await answer_to(bot, 4)
    assert listening.fingerprint in status and "1 firing" in status

    # /ack in reply to a notification names the alerts it lists.
    bot.push("/ack", reply_to=f"🔥 sim-001 DeviceDead: dead {listening.fingerprint}")
    assert "Acknowledged DeviceDead on sim-001" in await answer_to(bot, 5)
    assert listening.engine.firing()[0].acknowledged_by == "@alice via Telegram"
    bot.push("/ack 0123456789abcdef")
    assert "no alert" in await answer_to(bot, 6)
    bot.push("/silence sim-001 forever")
    assert "not a duration" in await answer_to(bot, 7)
    bot.push("/reboot sim-001")
    assert "Unknown command" in await answer_to(bot, 8)


async def test_commands_from_other_chats_and_users_are_refused_and_logged(
    bot: FakeBotApi, listening: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cgwatchdog.telegram")
    bot.push("/silence sim-001 2h from a stranger", chat=OTHER_CHAT, user=ALICE)
    bot.push("/silence sim-001 2h not allowed", user=MALLORY, username="mallory")
    bot.push("/unsilence whatever", chat=OTHER_CHAT, user=MALLORY)
    answer = await answer_to(bot, 1)
    assert "your user id 666 is not in allowed_user_ids" in answer
    await until("the three updates to be handled", lambda: listening.listener.handled == 3)
    assert listening.book.list(time.time()) == []
    assert bot.answers(OTHER_CHAT) == []  # a stranger's chat gets nothing
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 3
    assert "in chat -1009999: the chat is not in chat_ids" in refusals[0]
    assert "@mallory (user 666)" in refusals[1] and "allowed_user_ids" in refusals[1]


async def test_a_command_sent_while_nobody_listened_is_not_carried_out(
    bot: FakeBotApi, listening: Bot
) -> None:
    bot.push("/silence sim-001 2h old", date=time.time() - 3600)
    assert "Not done" in await answer_to(bot, 1)
    assert listening.book.list(time.time()) == []


async def test_the_offset_is_saved_so_a_restart_neither_loses_nor_repeats(
    bot: FakeBotApi, tmp_path: Path
) -> None:
    store = Store(tmp_path / "state.sqlite")
    book = SilenceBook()
    first = make_bot(bot, store=store, book=book)
    update = bot.push("/silence sim-001 2h one")
    assert await first.listener.poll_once() == 1
    # It stops before the next poll would have confirmed the update to Telegram.
    await first.listener.close()
    assert store.load_state("telegram:oncall") == {"version": 1, "offset": update + 1}
    missed = bot.push("/silence sim-002 2h sent while it restarted")

    second = make_bot(bot, store=store, book=book)
    assert second.listener.offset == update + 1
    assert await second.listener.poll_once() == 1
    await second.listener.close()
    assert bot.offsets[-1] == update + 1
    assert sorted(s.comment for s in book.list(time.time())) == [
        "one",
        "sent while it restarted",
    ]
    assert second.listener.offset == missed + 1
    store.close()


async def test_a_takeover_does_not_make_a_silence_twice(bot: FakeBotApi, tmp_path: Path) -> None:
    shared = SilenceBook()  # replicas share silences through the Alertmanager cluster
    leader = make_bot(bot, store=Store(tmp_path / "a.sqlite"), book=shared)
    bot.push("/silence sim-001 2h once")
    assert await leader.listener.poll_once() == 1
    await leader.listener.close()  # dies before confirming: Telegram sends it again
    follower = make_bot(bot, store=Store(tmp_path / "b.sqlite"), book=shared)
    assert await follower.listener.poll_once() == 1
    await follower.listener.close()
    assert [s.comment for s in shared.list(time.time())] == ["once"]
    assert len(bot.answers()) == 2 and "Silenced" in bot.answers()[1]


async def test_only_the_leader_listens(bot: FakeBotApi) -> None:
    leading = False
    made = make_bot(bot, should_listen=lambda: leading)
    made.start()
    try:
        bot.push("/silence sim-001 2h while following")
        deadline = time.monotonic() + 0.5  # a window as long as several leadership checks
        while time.monotonic() < deadline:
            assert bot.offsets == [], "a follower polled"
            await asyncio.sleep(0.05)
        leading = True
        await answer_to(bot, 1)
        # Leadership lost mid-poll: that poll is dropped, the next leader gets the command.
        await until("a poll in flight", lambda: len(bot.offsets) >= 2)
        leading = False
        polls = len(bot.offsets)
        bot.push("/silence sim-002 2h while following again")
        await asyncio.sleep(0)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            assert len(bot.offsets) <= polls + 1
            await asyncio.sleep(0.05)
        assert len(made.book.list(time.time())) == 1
        leading = True
        await answer_to(bot, 2)
        assert len(made.book.list(time.time())) == 2
    finally:
        await made.stop()


async def test_a_bot_api_outage_disturbs_neither_polling_nor_notifications(
    bot: FakeBotApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cgwatchdog.telegram")
    clock = FakeClock(1_800_000_000.0)
    fleet = Fleet.build(
        2, "device_dead", flavours=["cgminer"], listen="127.58.3.10", base_port=0,
        clock=clock, scenario_options={"fail_after_s": 30.0},
    )  # fmt: skip
    await fleet.start()
    miners = "".join(f"  - {{name: {m.name}, host: {m.host}, port: {m.port}}}\n" for m in fleet)
    config = tmp_path / "c.yaml"
    config.write_text(
        "poll: {interval: 30s, timeout: 2s, connect_timeout: 0.5s}\n"
        f"state_dir: {tmp_path}\nminers:\n{miners}"
        "rules: [{name: DeviceDead, type: device_status, status: [Dead], for: 1m}]\n"
        "receivers:\n"
        f"  - {{name: oncall, telegram: {{token: '{TOKEN}', chat_ids: [{CHAT}],"
        f" api_url: '{bot.url}'}}}}\n"
        "route: {receiver: oncall, group_wait: 0s}\n"
    )
    loaded = load_config(config)
    integration = build_integration(loaded.receivers[0])
    store = Store(tmp_path / "state.sqlite")
    outbox = Outbox(store, {"oncall": integration}, clock=clock)
    watchdog = Watchdog(loaded, store=store, outbox=outbox, clock=clock)
    listening = make_bot(bot, store=store, book=watchdog.silence_book, clock=clock)
    listening.start()
    durations: list[float] = []

    async def cycles(count: int) -> None:
        for _ in range(count):
            clock.advance(30.0)
            await fleet.sync()
            started = time.monotonic()
            await watchdog.cycle()
            durations.append(time.monotonic() - started)
            await asyncio.to_thread(outbox.deliver_due, clock(), wait_s=2.0)

    def logged(text: str) -> Callable[[], bool]:
        return lambda: any(
            text in r.getMessage() for r in caplog.records if r.name == "cgwatchdog.telegram"
        )

    try:
        await until("the listener to poll", lambda: bot.offsets)
        await bot.stop()  # down: connection refused
        await cycles(5)  # DeviceDead fires on both miners; its notice cannot go out
        await until("a refused poll to be logged", logged("connection refused by 127.58.3.1"))
        assert [m for m in bot.sent if "DeviceDead" in m["text"]] == []
        assert store.outbox_depth() >= 1
        await bot.start()
        bot.fail_status = 500
        await cycles(2)
        await until("a 500 to be met", logged("getUpdates with HTTP 500"))
        polls = len(bot.offsets)
        bot.fail_status = 409  # another poller
        await until("a 409 to be met", logged("getUpdates with HTTP 409"))
        await until("more tries after a 409", lambda: len(bot.offsets) >= polls + 3)
        assert listening.task is not None and not listening.task.done()
        bot.fail_status = None
        await cycles(6)  # the outbox's retry delivers it
        notices = [m for m in bot.sent if "DeviceDead" in m["text"]]
        assert notices and "sim-001" in notices[0]["text"]
        assert store.outbox_depth() == 0
        bot.push("/silence sim-002 1h after the outage", date=clock())
        assert "Silenced" in await answer_to(bot, 1)
        assert watchdog.silence_book.silenced({"miner": "sim-002"}, clock())
        failures = [
            r.getMessage()
            for r in caplog.records
            if "polling for commands failed" in r.getMessage()
        ]
        # Logged when it starts and when the error changes, not at every try.
        assert 3 <= len(failures) <= 4, failures
        assert any("works again" in r.getMessage() for r in caplog.records)
        assert all(TOKEN not in r.getMessage() for r in caplog.records)
        print(f"\ncycle durations during the outage: max {max(durations):.3f} s")
        assert max(durations) < 2.0
    finally:
        await listening.stop()
        outbox.close()
        integration.close()
        store.close()
        await fleet.stop()
