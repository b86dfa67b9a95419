"""``cgwatchdog discover`` over real sockets: the simulator's flavours on loopback
addresses, empty addresses, hung APIs, the cap, the deadline and the rate bound.

``discover.run`` drives its own event loop (``asyncio.run``), so it runs in a thread
while the test's loop serves the fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import socket
import time
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cgwatchdog import cli, discover
from cgwatchdog.client import AsyncCgminerAPI
from cgwatchdog.firmware import FAMILIES, ChannelTarget, Family, Identity, Reader
from cgwatchdog.poller import Poller
from cgwatchdog.simulator import FLAVOURS, Flavour, Fleet, serve
from cgwatchdog.snapshot import Snapshot

JSON_KEYS = {
    "host", "port", "family", "model", "firmware_version", "fork", "hashrate_hs",
    "control_port",
}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    return cli.build_parser()


async def run_discover(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``cgwatchdog discover ARGV`` through :func:`discover.run`: (exit, stdout, stderr)."""
    args = parser().parse_args(["discover", *argv])
    code = await asyncio.to_thread(discover.run, args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def free_port(host: str) -> int:
    """A port nothing listens on at ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def recognisable_flavours() -> list[Flavour]:
    """Every flavour whose family is registered (a flavour may land before its family)."""
    return [flavour for flavour in FLAVOURS.values() if flavour.firmware in FAMILIES]


def share_family_ports(fleet: Fleet) -> list[str]:
    """Put every member's control channel of one family on one port (each member has its
    own address) and return the ``--family-port`` flags that tell discover where."""
    ports: dict[str, int] = {}
    for member in fleet:
        flavour = member.miner.flavour
        if flavour.control is not None:
            member.control_port = ports.setdefault(flavour.firmware, free_port(member.host))
    return [f"--family-port={family}={port}" for family, port in ports.items()]


def passes_check(text: str, path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path.write_text(text)
    code = cli.main(["check", "-c", str(path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err + text


def by_host(text: str) -> dict[str, Mapping[str, Any]]:
    miners = yaml.safe_load(text)["miners"]
    return {entry["host"]: entry for entry in miners}


# -- the mixed fleet --------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    name: str
    host: str
    port: int


async def expected_families(fleet: Fleet) -> dict[str, set[str]]:
    """Per host, the families discover may rightly report: the one its flavour declares,
    and the one the poller itself recognises where the two differ (a flavour declared
    before its family existed: core's ``bmminer`` says ``cgminer``, and a registered
    Antminer family recognises it). The difference is reported as a warning."""
    expected: dict[str, set[str]] = {}
    for member in fleet:
        declared = member.miner.flavour.firmware
        poller = Poller([_Target(member.host, member.host, member.port)], timeout=3.0)
        (result,) = await poller.poll()
        family = poller.family_of(member.host)
        expected[member.host] = {declared}
        if isinstance(result, Snapshot) and family is not None and family.name != declared:
            warnings.warn(
                f"flavour {member.miner.flavour.name!r} declares firmware {declared!r}, but "
                f"the poller recognises it as {family.name!r}: the simulator and the "
                "families disagree (not discover's doing)",
                stacklevel=1,
            )
            expected[member.host].add(family.name)
    return expected


@pytest.fixture
async def mixed_fleet() -> AsyncIterator[tuple[Fleet, list[str]]]:
    """One miner of every flavour on 127.147.0.1, .2, ...; three empty addresses after."""
    flavours = recognisable_flavours()
    fleet = Fleet.build(len(flavours), flavours=flavours, listen="127.147.0.1")
    flags = share_family_ports(fleet)
    async with serve(fleet):
        yield fleet, [f"127.147.0.1-{len(flavours) + 3}", *flags]


async def test_finds_every_flavour_as_its_family_and_the_yaml_passes_check(
    mixed_fleet: tuple[Fleet, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet, argv = mixed_fleet
    code, out, err = await run_discover(capsys, *argv, "--timeout", "3")
    assert code == 0, err
    found = by_host(out)
    expected = await expected_families(fleet)
    assert sorted(found) == sorted(expected), out
    for host, families in expected.items():
        assert found[host]["firmware"] in families, (host, families, out)
    for member in fleet:
        entry = found[member.host]
        assert entry["name"] == member.host
        assert "port" not in entry  # 4028
    # The empty addresses are counted, not listed.
    assert f"found {len(fleet)} miner" in err
    assert "3 hosts did not answer" in err
    # A credentials block for families that log in, commented out; never a password.
    for family_name in {entry["firmware"] for entry in found.values()}:
        family = FAMILIES[family_name]
        if family.default_user or family.default_password:
            assert f"#   password_file: {family_name}-password" in out
        secret = family.default_password
        if secret:  # not even the factory default (which may equal the user: root/root)
            assert not [line for line in out.splitlines() if secret in line and "user" not in line]
    assert not re.search(r"^\s*#?\s*password\s*:", out, re.M)
    passes_check(out, tmp_path / "miners.yaml", capsys)


async def test_json_lists_every_miner_with_its_fields(
    mixed_fleet: tuple[Fleet, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    fleet, argv = mixed_fleet
    code, out, err = await run_discover(capsys, *argv, "--json")
    assert code == 0, err
    document = json.loads(out)
    assert [item["host"] for item in document] == [member.host for member in fleet]
    expected = await expected_families(fleet)
    for item, member in zip(document, fleet, strict=True):
        assert set(item) == JSON_KEYS
        assert item["family"] in expected[member.host]
        assert item["port"] == 4028
        assert isinstance(item["control_port"], int)
        if member.miner.flavour.name == "bmminer":
            assert item["model"] == "Antminer S9"
            assert item["fork"] == "bmminer 2.0.0"
            assert item["hashrate_hs"] > 1e12


# -- what bounds a scan -----------------------------------------------------------------


async def test_the_cap_refuses_a_slash_16_without_force(
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    code, out, err = await run_discover(capsys, "127.147.0.0/16")
    assert code == 2
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("cgwatchdog: usage error: 127.147.0.0/16 is 65,534 addresses")
    assert "--force" in line and "4,096" in line
    assert time.monotonic() - started < 2  # refused before any connection


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["127.147.1.9-3"], "ends before it starts"),
        (["127.147.1.0/33"], "is not a network"),
        (["127.147.1.1", "--family-port", "nosuchfamily=4433"], "unknown firmware family"),
    ],
)
async def test_bad_targets_are_usage_errors(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await run_discover(capsys, *argv)
    assert code == 2
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("cgwatchdog: usage error: ") and words in line


async def test_the_deadline_stops_a_scan_of_many_silent_hosts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Three miners that accept and never answer, then 2,043 addresses with nothing
    # listening: at 200 new connections a second the scan would take ten seconds.
    fleet = Fleet.build(3, flavours=["cgminer"], listen="127.147.16.1")
    async with serve(fleet):
        for member in fleet:
            await fleet.hang(member.name)
        started = time.monotonic()
        code, out, err = await run_discover(
            capsys, "127.147.16.1-127.147.23.254", "--rate", "200", "--timeout", "30",
            "--deadline", "1",
        )  # fmt: skip
        elapsed = time.monotonic() - started
    assert code == 0, err
    assert elapsed < 3.0, elapsed
    assert yaml.safe_load(out) == {"miners": []}
    found = re.search(r"--deadline of 1 s ran out: ([\d,]+) hosts not tried, (\d+) cut short", err)
    assert found is not None, err
    assert int(found[1].replace(",", "")) > 1500
    # The hung miners were still being asked (and a host or two between its steps).
    assert 3 <= int(found[2]) <= 6, err


async def test_a_hung_api_holds_up_no_one_beyond_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fleet = Fleet.build(6, flavours=["cgminer"], listen="127.147.2.1")
    async with serve(fleet):
        await fleet.hang(0)
        started = time.monotonic()
        code, out, err = await run_discover(
            capsys, "127.147.2.1-6", "--timeout", "1", "--concurrency", "2"
        )
        elapsed = time.monotonic() - started
    assert code == 0, err
    assert sorted(by_host(out)) == [member.host for member in fleet.members[1:]]
    assert "1 host did not answer" in err
    assert elapsed < 2.5, elapsed  # the hung one's second, not one per miner


async def test_the_rate_bound_holds_for_new_connections(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rate = 20
    fleet = Fleet.build(30, flavours=["cgminer"], listen="127.147.3.1")
    async with serve(fleet):
        args = parser().parse_args(["discover", "127.147.3.1-30", "--rate", str(rate)])
        scan = asyncio.create_task(asyncio.to_thread(discover.run, args))
        samples: list[tuple[float, int]] = []
        while not scan.done():
            samples.append((time.monotonic(), sum(m.connections for m in fleet)))
            await asyncio.sleep(0.01)
        samples.append((time.monotonic(), sum(m.connections for m in fleet)))
        code = await scan
    err = capsys.readouterr().err
    assert code == 0, err
    assert "found 30 miners" in err
    assert samples[-1][1] == 30  # one connection per miner that speaks multi-commands
    busiest = max(
        count - earlier
        for at, count in samples
        for since, earlier in samples
        if 0 <= at - since <= 1.0
    )
    assert busiest <= rate + 2, busiest  # one sample's slack at each end of the window
    first = next(at for at, count in samples if count)
    last = next(at for at, count in samples if count == 30)
    assert last - first >= 0.9 * (30 - 1) / rate


# -- families' own read paths and web fingerprints ----------------------------------------


class _ApiOnOwnPort(Reader):
    """Reads the cgminer API on the family's own port (as Whatsminer v3 has 4433)."""

    def __init__(self, target: ChannelTarget) -> None:
        self.target = target

    async def read(self, commands: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        assert self.target.password is None  # discover never hands out a password
        api = AsyncCgminerAPI(
            self.target.host, self.target.control_port, timeout=self.target.timeout_s,
            connect_timeout=self.target.connect_timeout_s,
        )  # fmt: skip
        return await api.multi(commands)


class OwnPortFamily(Family):
    """A family read on a port of its own, registered only for its test."""

    name = "discovertest-own-port"
    title = "discover test: read on its own port"
    control_port = 4433
    default_password = "factory-secret-own"

    def reader(self, target: ChannelTarget) -> Reader | None:
        return _ApiOnOwnPort(target)

    def firmware_version(self, identity: Identity) -> str | None:
        return f"own {identity.fork}"


WEB_BANNER = b"discovertest web\n"
fingerprinted: list[tuple[str, int]] = []


async def web_fingerprint(host: str, port: int, timeout_s: float) -> bool:
    """The test families' web fingerprint: a banner on the web port."""
    fingerprinted.append((host, port))
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            banner = await reader.readline()
            writer.close()
    except (OSError, TimeoutError):
        return False
    return banner == WEB_BANNER


class WebFamily(Family):
    """Third-party firmware that answers the API as stock bmminer does."""

    name = "discovertest-web"
    title = "discover test: told apart by its web UI"
    control_port = 8080
    default_user = "admin"
    default_password = "factory-secret-web"

    def firmware_version(self, identity: Identity) -> str | None:
        return f"web {identity.fork}"


@pytest.fixture
def registered(request: pytest.FixtureRequest) -> Iterator[Family]:
    family: Family = request.param()
    FAMILIES.add(family.name, family)
    try:
        yield family
    finally:
        FAMILIES.remove(family.name)


@pytest.mark.parametrize("registered", [OwnPortFamily], indirect=True)
async def test_a_refused_api_port_is_tried_on_the_families_own_ports(
    registered: Family, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = Fleet.build(1, flavours=["bmminer"], listen="127.147.5.1", base_port=0)
    async with serve(fleet):
        own_port = fleet[0].port  # the "own read path" is the simulator's API
        api_port = free_port("127.147.5.1")  # refused on every address
        code, out, err = await run_discover(
            capsys, "127.147.5.1-3", "--port", str(api_port),
            "--family-port", f"{registered.name}={own_port}",
        )  # fmt: skip
    assert code == 0, err
    (entry,) = yaml.safe_load(out)["miners"]
    assert entry == {
        "name": f"127.147.5.1:{api_port}", "host": "127.147.5.1", "port": api_port,
        "firmware": registered.name, "control_port": own_port,
    }  # fmt: skip
    assert "Antminer S9, firmware own bmminer 2.0.0" in out
    assert "factory-secret-own" not in out
    assert "found 1 miner (1 discovertest-own-port)" in err
    passes_check(out, tmp_path / "miners.yaml", capsys)


@pytest.mark.parametrize("registered", [WebFamily], indirect=True)
async def test_a_web_fingerprint_tells_third_party_firmware_from_stock(
    registered: Family, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = Fleet.build(2, flavours=["bmminer", "cgminer"], listen="127.147.4.1")
    web_port = free_port("127.147.4.1")

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(WEB_BANNER)
        await writer.drain()
        writer.close()

    # Both answer the banner; only the bmminer-looking one is asked.
    webs = [await asyncio.start_server(banner, m.host, web_port) for m in fleet]
    fingerprinted.clear()
    try:
        async with serve(fleet):
            code, out, err = await run_discover(
                capsys, "127.147.4.1-2", "--family-port", f"{registered.name}={web_port}", "--json"
            )
            assert code == 0, err
            bmminer, cgminer = json.loads(out)
            assert (bmminer["host"], bmminer["family"]) == ("127.147.4.1", registered.name)
            assert bmminer["firmware_version"] == "web bmminer 2.0.0"
            assert bmminer["control_port"] == web_port
            assert cgminer["family"] == FLAVOURS["cgminer"].firmware
            assert fingerprinted == [("127.147.4.1", web_port)]
            code, out, err = await run_discover(
                capsys, "127.147.4.1-2", "--family-port", f"{registered.name}={web_port}"
            )
    finally:
        for web in webs:
            web.close()
            await web.wait_closed()
    assert code == 0, err
    entry = by_host(out)["127.147.4.1"]
    assert entry["firmware"] == registered.name and entry["control_port"] == web_port
    assert "# credentials:  # factory default user: admin" in out
    assert "#   password_file: discovertest-web-password" in out
    assert "factory-secret-web" not in out
    passes_check(out, tmp_path / "miners.yaml", capsys)


# -- the command line -------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_progress_is_one_updating_line_on_a_terminal_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = Fleet.build(1, flavours=["cgminer"], listen="127.147.7.1")
    async with serve(fleet):
        code, _, err = await run_discover(capsys, "127.147.7.1-4")
        assert code == 0
        assert "\r" not in err and err.startswith("found 1 miner (1 cgminer) in ")
        terminal = _Terminal()
        monkeypatch.setattr("sys.stderr", terminal)
        code, _, _ = await run_discover(capsys, "127.147.7.1-4")
    assert code == 0
    shown = terminal.getvalue()
    assert "\r\x1b[Kdiscover: 4/4 hosts, 1 found" in shown
    last = shown.rsplit("\r\x1b[K", 1)[1]  # the summary replaces the progress line
    assert last.startswith("found 1 miner (1 cgminer) in ") and last.endswith(
        " s; 3 hosts did not answer\n"
    )
    assert shown.count("\n") == 1


def _cli_knows_discover() -> bool:
    for action in cli.build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return "discover" in action.choices
    return False


async def test_cgwatchdog_discover_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    if not _cli_knows_discover():
        pytest.skip("cli wiring pending")
    fleet = Fleet.build(1, flavours=["cgminer"], listen="127.147.6.1")
    async with serve(fleet):
        code = await asyncio.to_thread(cli.main, ["discover", "127.147.6.1-2", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (item,) = json.loads(captured.out)
    assert item["host"] == "127.147.6.1"
    code = await asyncio.to_thread(cli.main, ["discover", "127.147.0.0/16"])
    assert code == 2
    assert "--force" in capsys.readouterr().err
