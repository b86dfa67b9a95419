"""The ``cgwatchdog`` command line.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error. Errors print as one
line on stderr; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from cgwatchdog import __version__
from cgwatchdog.endpoint import DEFAULT_CONFIG, DEFAULT_URL, daemon_url
from cgwatchdog.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CgwatchdogError,
    ConfigError,
    ProtocolError,
)
from cgwatchdog.protocol import DEFAULT_PORT, encode_request
from cgwatchdog.units import iso_seconds

if TYPE_CHECKING:
    from cgwatchdog.overrides import Overrides
    from cgwatchdog.watchdog import CycleReport, Watchdog


class UsageError(Exception):
    """A command line that cannot be acted on (exit 2)."""


def parse_host_port(value: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` -> (host, port)."""
    host, port = value, default_port
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], value)
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
        port = _port(port_text, value)
    if not host:
        raise UsageError(f"no host in {value!r}")
    return host, port


def _port(text: str, whole: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise UsageError(f"bad port in {whole!r}") from None
    if not 0 < port < 65536:
        raise UsageError(f"port out of range in {whole!r}")
    return port


# -- query ------------------------------------------------------------------------------


def cmd_query(args: argparse.Namespace) -> int:
    """One API call, any command; print the reply."""
    from cgwatchdog.client import DEFAULT_TIMEOUT_S, CgminerAPI

    host, port = parse_host_port(args.target)
    timeout = DEFAULT_TIMEOUT_S if args.timeout is None else args.timeout
    api = CgminerAPI(host, port, timeout=timeout, connect_timeout=args.connect_timeout)
    try:
        request = encode_request(args.command, args.parameter, text=args.text)
    except ProtocolError as exc:
        raise UsageError(str(exc)) from None
    if args.raw:
        decoder = api.exchange(request)
        out = decoder.raw() + (b"\0" if decoder.nul_seen else b"")
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
        return EXIT_OK
    reply = api.command(args.command, args.parameter, text=args.text)
    print(json.dumps(reply, indent=2, ensure_ascii=False))
    return EXIT_OK


# -- check ------------------------------------------------------------------------------


@contextlib.contextmanager
def _one_shot() -> Iterator[None]:
    """Tune the process for a command that exits when it is done (``check``, ``poll``).

    No cyclic garbage collection while it runs (left as found after): what such a command
    makes lives until it exits and holds no reference cycles worth finding, so the
    collector would only walk the 10,000 miners' objects again and again (``poll --json``
    at 10,000 miners: 5.67 s CPU with it, 4.97 s without, ``benchmarks/RESULTS.md``, row
    12). Large freed blocks go back to the OS.
    """
    from cgwatchdog.gcpause import gc_paused
    from cgwatchdog.malloc import keep_large_blocks_unmapped

    keep_large_blocks_unmapped()
    with gc_paused():
        yield


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config and its rule files; list every problem as file:line."""
    with _one_shot():
        return _check(args)


def _check(args: argparse.Namespace) -> int:
    if args.as_service:
        from cgwatchdog.servicecheck import DEFAULT_UNIT, check_as_service

        root = Path(args.root) if args.root else None

        def rooted(path: str) -> Path:
            return (
                root / path.lstrip("/") if root is not None and path.startswith("/") else Path(path)
            )

        unit = rooted(args.unit or DEFAULT_UNIT)
        config = rooted(args.config)

        def warm_up() -> object:
            from cgwatchdog.config.loader import load_config

            return load_config(config, environ={})

        return check_as_service(config, unit, report_config, root=root, warm_up=warm_up)
    if args.unit or args.root:
        raise UsageError("--unit and --root go with --as-service")
    environ: dict[str, str] | None = None
    if args.env_file:
        from cgwatchdog.servicecheck import parse_environment_file

        environ = dict(os.environ)
        for name in args.env_file:
            try:
                environ.update(parse_environment_file(Path(name).read_text()))
            except OSError as exc:
                raise UsageError(f"--env-file {name}: {exc.strerror}") from None
    return report_config(Path(args.config), environ)


def report_config(path: Path, environ: Mapping[str, str] | None) -> int:
    """What ``check`` prints for the config at ``path`` read with ``environ``; its exit
    code (2 with every problem as file:line, else 0)."""
    from cgwatchdog.config.loader import load_config

    try:
        cfg = load_config(path, environ=environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"cgwatchdog: {count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return EXIT_USAGE
    for note in cfg.notes:
        print(f"note: {note}", file=sys.stderr)
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(cfg.actions_summary())
    print(
        f"ok: {path}: {len(cfg.miners)} miners, {len(cfg.rules)} rules, "
        f"{len(cfg.receivers)} receivers"
    )
    return EXIT_OK


# -- poll -------------------------------------------------------------------------------


def poll_header(watchdog: Watchdog, report: CycleReport) -> dict[str, Any]:
    """The ``poll --json`` object's keys before ``miners``."""
    return {
        "time": iso_seconds(report.finished_at),
        "shard": str(watchdog.config.cluster.shard),
        "replica": watchdog.config.cluster.replica,
        "duration_s": round(report.duration_s, 3),
        "problems": report.problems,
    }


def poll_entries(watchdog: Watchdog, report: CycleReport) -> Iterator[dict[str, Any]]:
    """The ``poll --json`` object's ``miners``, one at a time (a large fleet's document is
    written as it is made, never held whole)."""
    by_miner: dict[str, list[dict[str, Any]]] = {}
    for alert in watchdog.alerts.alerts():
        if alert.state.name not in ("PENDING", "FIRING"):
            continue
        labels = {k: v for k, v in alert.labels.items() if k not in ("alertname", "miner")}
        by_miner.setdefault(alert.miner, []).append(
            {
                "alertname": alert.alertname,
                "state": alert.state.name.lower(),
                "labels": labels,
                "value": alert.value,
                "since": iso_seconds(alert.active_since),
            }
        )
    from cgwatchdog.firmware import ACTIONS

    configured = {miner.name: miner for miner in watchdog.config.miners}
    for result in report.results:
        entry = result.to_json()
        miner = configured.get(result.name)
        entry["labels"] = dict(miner.labels) if miner is not None else {}
        capabilities = watchdog.capabilities(result.name)
        known = watchdog.poller.family_of(result.name) is not None
        unsupported = {
            action: why
            for action in ACTIONS
            if (why := capabilities.why_not(action, None)) is not None
        }
        entry["capabilities"] = [a for a in ACTIONS if a not in unsupported] if known else []
        entry["unsupported"] = unsupported
        entry["alerts"] = by_miner.get(result.name, [])
        yield entry


def poll_document(watchdog: Watchdog, report: CycleReport) -> dict[str, Any]:
    """The ``poll --json`` object: keys may be added, never renamed (scripts rely on it)."""
    return {**poll_header(watchdog, report), "miners": list(poll_entries(watchdog, report))}


def write_poll_json(
    header: Mapping[str, Any], entries: Iterable[Mapping[str, Any]], out: TextIO, pretty: bool
) -> int:
    """Write the ``poll --json`` object as its entries come; return the exit status.

    ``pretty`` indents everything (for a person at a terminal); otherwise each miner is one
    line: the same document, written by the stdlib's C encoder, which does not indent
    (indenting takes its pure-Python encoder: 1.6 s of CPU at 10,000 miners).
    """
    dumps: Callable[[Any], str]
    if pretty:
        dumps = functools.partial(json.dumps, indent=2, allow_nan=False)
    else:
        dumps = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode
    head = json.dumps(dict(header), indent=2, allow_nan=False)
    out.write(head[: -len("\n}")] + ',\n  "miners": [')
    quiet = not header["problems"]
    first = True
    for entry in entries:
        quiet = quiet and bool(entry["up"]) and not entry["alerts"]
        text = dumps(entry)
        out.write(("\n    " if first else ",\n    ") + text.replace("\n", "\n    "))
        first = False
    out.write("]\n}\n" if first else "\n  ]\n}\n")
    return EXIT_OK if quiet else EXIT_FAILURE


def _human_rate(value: Any) -> str:
    from cgwatchdog.units import format_hashrate

    return format_hashrate(float(value)) if isinstance(value, int | float) else "-"


def print_poll_table(document: Mapping[str, Any], out: TextIO) -> None:
    """A readable table of miners and the signals each rule sees."""
    rows = [("MINER", "HOST", "UP", "FORK", "HASHRATE", "TEMP", "DEVICES", "POOL")]
    for miner in document["miners"]:
        devices = miner["devices"]
        alive = sum(1 for d in devices if d["status"] == "Alive")
        pool = next((p for p in miner["pools"] if p["active"]), None)
        temp = miner["temperature_max_c"]
        rows.append(
            (
                miner["name"],
                f"{miner['host']}:{miner['port']}",
                "up" if miner["up"] else "DOWN",
                str(miner["fork"] or "-"),
                _human_rate(miner["hashrate_hs"]),
                "-" if temp is None else f"{temp:.0f}C",
                f"{alive}/{len(devices)}" if devices else "-",
                "-" if pool is None else f"{pool['id']} {pool['status']}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(),
            file=out,
        )
        if index == 0:
            continue
        miner = document["miners"][index - 1]
        if miner["error"]:
            print(f"    ! {miner['error']}", file=out)
        for alert in miner["alerts"]:
            where = [f"{k}={v}" for k, v in alert["labels"].items() if k in ("device", "pool")]
            head = " ".join([alert["alertname"], *where, alert["state"]])
            print(f"    ! {head}: {alert['value']}", file=out)
    for problem in document["problems"]:
        print(f"problem: {problem}", file=out)
    up = sum(1 for m in document["miners"] if m["up"])
    signals = sum(len(m["alerts"]) for m in document["miners"])
    print(
        f"{up}/{len(document['miners'])} miners up, {signals} signals, "
        f"{document['duration_s']:.2f}s",
        file=out,
    )


def cmd_poll(args: argparse.Namespace) -> int:
    """One poll and evaluation of every miner; print a table or JSON."""
    with _one_shot():
        return _poll(args)


def _poll(args: argparse.Namespace) -> int:
    import asyncio

    from cgwatchdog.config.loader import load_config
    from cgwatchdog.watchdog import Watchdog

    cfg = _overrides(args).apply(load_config(args.config))
    watchdog = Watchdog(cfg, acting=False)  # poll observes; it never repairs
    watchdog.poller.plan_ahead = False  # one cycle: no later cycle to plan for
    report = asyncio.run(watchdog.cycle())
    if args.json:
        return write_poll_json(
            poll_header(watchdog, report),
            poll_entries(watchdog, report),
            sys.stdout,
            pretty=sys.stdout.isatty(),
        )
    document = poll_document(watchdog, report)
    print_poll_table(document, sys.stdout)
    return poll_exit_status(document)


def poll_exit_status(document: Mapping[str, Any]) -> int:
    """0 when every miner answered and no rule signals, else 1 (for cron and monit)."""
    miners = document["miners"]
    quiet = all(m["up"] and not m["alerts"] for m in miners) and not document["problems"]
    return EXIT_OK if quiet else EXIT_FAILURE


# -- test-notify ------------------------------------------------------------------------


def cmd_test_notify(args: argparse.Namespace) -> int:
    """Send a test alert through each receiver; one result line per receiver."""
    from cgwatchdog.config.loader import load_config
    from cgwatchdog.notify.testing import send_test

    cfg = load_config(args.config)
    results = send_test(cfg, args.receiver)
    if not results:
        print("no receivers configured", file=sys.stderr)
        return EXIT_USAGE
    width = max(len(result.name) for result in results)
    for result in results:
        print(
            f"{result.name.ljust(width)}  {'ok    ' if result.ok else 'FAILED'}  {result.message}"
        )
    return EXIT_OK if all(result.ok for result in results) else EXIT_FAILURE


# -- demo -------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded default: a simulated farm with failures, watched for --duration s."""
    import asyncio

    from cgwatchdog.demo import run_demo

    asyncio.run(run_demo(args.duration))
    return EXIT_OK


# -- simulate ---------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run simulated miners until interrupted."""
    import asyncio

    from cgwatchdog import simulator

    flavours: Sequence[str] = simulator.DEFAULT_FLAVOURS
    if args.firmware:
        flavours = simulator.flavours_named([n.strip() for n in args.firmware.split(",") if n])
    miners = args.miners if args.miners is not None else max(3, len(flavours))
    clock = simulator.ScaledClock(args.speed) if args.speed != 1.0 else time.time
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            simulator.run_simulator(
                miners,
                scenario=args.scenario,
                listen=args.listen,
                base_port=args.base_port,
                flavours=flavours,
                clock=clock,
                scenario_options={"fail_after_s": args.fail_after},
            )
        )
    return EXIT_OK


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _simulate_epilog() -> str:
    from cgwatchdog import simulator

    scenarios = "\n".join(
        textwrap.fill(text, 88, initial_indent=f"  {name:<20} ", subsequent_indent=" " * 23)
        for name, text in simulator.SCENARIOS.items()
    )
    families: dict[str, list[str]] = {}
    for flavour in simulator.FLAVOURS.values():
        families.setdefault(flavour.firmware, []).append(flavour.name)
    firmware = "\n".join(f"  {fam:<20} {', '.join(names)}" for fam, names in families.items())
    return (
        f"scenarios (--scenario):\n{scenarios}\n\n"
        f"firmware families and their flavours (--firmware):\n{firmware}\n\n"
        "Each miner prints one line: name host:port flavour scenario [control host:port]."
    )


# -- run / status -----------------------------------------------------------------------


def _overrides(args: argparse.Namespace) -> Overrides:
    """The instance flags of ``run`` and ``poll`` (ConfigError when malformed)."""
    from cgwatchdog.overrides import Overrides

    return Overrides.from_flags(
        shard=args.shard,
        replica=args.replica,
        state_dir=getattr(args, "state_dir", None),
        listen=getattr(args, "listen", None),
    )


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        default=DEFAULT_CONFIG,
        metavar="CONFIG",
        help=f"the config file (default {DEFAULT_CONFIG})",
    )


def _add_instance_flags(parser: argparse.ArgumentParser, *, daemon: bool) -> None:
    parser.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="own shard I of N (1/4 or 1-of-4); overrides cluster.shard",
    )
    parser.add_argument(
        "--replica",
        default=None,
        metavar="NAME",
        help="this replica's name; overrides cluster.replica",
    )
    if daemon:
        parser.add_argument(
            "--state-dir",
            default=None,
            metavar="DIR",
            help="where the state file lives; overrides state_dir",
        )
        parser.add_argument(
            "--listen",
            default=None,
            metavar="HOST:PORT",
            help="the HTTP endpoint's address; overrides http.listen",
        )


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon in the foreground (what systemd runs)."""
    import asyncio
    import logging

    from cgwatchdog.daemon import run_daemon
    from cgwatchdog.malloc import keep_large_blocks_unmapped

    level = logging.DEBUG if args.debug else getattr(logging, args.log_level.upper())
    keep_large_blocks_unmapped()
    try:
        # The [uvloop] extra, where installed. The client's sockets are in an epoll set of
        # its own on either loop, so a cycle costs about the same CPU on both
        # (benchmarks/RESULTS.md).
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    return asyncio.run(run_daemon(args.config, log_level=level, overrides=_overrides(args)))


def status_url(url: str | None, config: str | None) -> str:
    """Where the daemon answers (:func:`cgwatchdog.endpoint.daemon_url`)."""
    try:
        return daemon_url(url, config)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_status(args: argparse.Namespace) -> int:
    """Ask a running daemon for its health and firing alerts."""
    import urllib.error
    import urllib.request

    from cgwatchdog.web.status import status_lines

    base = status_url(args.url, args.config)
    url = base + "/api/alerts"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as answer:
            document = json.loads(answer.read(16 * 1024 * 1024))
    except urllib.error.HTTPError as exc:
        print(
            f"cgwatchdog: {url} answered HTTP {exc.code}: is that a cgwatchdog daemon?",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        reason = getattr(reason, "strerror", None) or reason
        print(
            f"cgwatchdog: cannot reach the daemon at {base}: {reason} "
            "(is cgwatchdog running? see --url and -c)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except ValueError:
        print(
            f"cgwatchdog: {url} did not answer JSON: is that a cgwatchdog daemon?", file=sys.stderr
        )
        return EXIT_FAILURE
    if not isinstance(document, dict):
        print(f"cgwatchdog: {url} answered unexpected JSON", file=sys.stderr)
        return EXIT_FAILURE
    for line in status_lines(document):
        print(line)
    return EXIT_OK if document.get("health") == "ok" else EXIT_FAILURE


# -- wiring -----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """A parser completed only when it is used, so that no other command has to import
    what completing it takes: its epilog made when its help is shown (``simulate``'s
    lists the simulator's flavours), its arguments defined when it parses or shows its
    help (``discover``'s module brings the firmware families and the poller)."""

    def __init__(
        self,
        *args: Any,
        epilog_from: Callable[[], str] | None = None,
        arguments_from: Callable[[argparse.ArgumentParser], None] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self._epilog_from = epilog_from
        self._arguments_from = arguments_from

    def _define(self) -> None:
        if self._arguments_from is not None:
            define, self._arguments_from = self._arguments_from, None
            define(self)

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        self._define()
        return super().parse_known_args(*args, **kwargs)

    def format_usage(self) -> str:
        self._define()
        return super().format_usage()

    def format_help(self) -> str:
        self._define()
        if self._epilog_from is not None:
            self.epilog, self._epilog_from = self._epilog_from(), None
        return super().format_help()


def _discover_arguments(parser: argparse.ArgumentParser) -> None:
    from cgwatchdog import discover

    discover.add_arguments(parser)
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="cgwatchdog",
        description="Alerting watchdog for cgminer-API mining farms.",
    )
    parser.add_argument("--version", action="version", version=f"cgwatchdog {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    # --debug after the subcommand too; SUPPRESS keeps one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="subcommand", metavar="COMMAND", parser_class=_Parser
    )
    add_parser = functools.partial(sub.add_parser, parents=[common])

    demo = add_parser(
        "demo",
        help="watch a simulated farm with failures for a minute (no config needed)",
        description="Starts simulated miners with failures, a local webhook sink and the "
        "watchdog with the shipped rules; prints alerts, actions and webhooks; exits by itself.",
    )
    demo.add_argument(
        "--duration",
        type=_positive,
        default=60.0,
        metavar="S",
        help="real seconds to run, each one a farm minute (default 60; every failure has "
        "been seen by 45)",
    )
    demo.set_defaults(func=cmd_demo)

    query = add_parser(
        "query",
        help="one API call to one miner; prints the reply as JSON",
        description="Send one command (privileged ones too) and print the reply. "
        "STATUS E/F exits 1 with the code and message.",
    )
    query.add_argument("target", metavar="HOST[:PORT]")
    query.add_argument("command", metavar="COMMAND", help="e.g. summary, devs, summary+pools")
    query.add_argument("parameter", metavar="PARAMETER", nargs="?", default=None)
    form = query.add_mutually_exclusive_group()
    form.add_argument("--text", action="store_true", help="use the plain-text request form")
    form.add_argument("--raw", action="store_true", help="print the reply bytes as received")
    # None: the client's default (importing the client for it would bring asyncio to
    # every command).
    query.add_argument("--timeout", type=float, default=None, help="read deadline, s")
    query.add_argument("--connect-timeout", type=float, default=None, help="connect deadline, s")
    query.set_defaults(func=cmd_query)

    check = add_parser(
        "check",
        help="validate a config and its rule files",
        description="Exit 0 when valid; else exit 2 listing every problem as file:line: message.",
    )
    _add_config(check)
    check.add_argument(
        "--env-file",
        action="append",
        default=[],
        metavar="FILE",
        help="read ${VARS} from this KEY=VALUE file too, as the unit's EnvironmentFile= "
        "gives them to the service (repeatable)",
    )
    check.add_argument(
        "--as-service",
        action="store_true",
        help="check as the systemd service will run: the unit's Environment=, "
        "EnvironmentFile= and LoadCredential= (staged as $CREDENTIALS_DIRECTORY), as an "
        "unprivileged user; needs root",
    )
    check.add_argument(
        "--unit",
        default=None,
        metavar="FILE",
        help="the unit for --as-service (default /etc/systemd/system/cgwatchdog.service)",
    )
    check.add_argument(
        "--root",
        default=None,
        metavar="DIR",
        help="with --as-service: read every absolute path (config, unit, its files) under "
        "DIR, for an install staged there",
    )
    check.set_defaults(func=cmd_check)

    poll = add_parser(
        "poll",
        help="poll every miner once and show what each rule sees",
        description="One poll and evaluation of every miner; a table, or JSON with --json. "
        "Sends no notifications and never acts. Exit 0 when every miner answered and no "
        "rule signals, 1 when a miner is down or a rule signals, 2 on a usage or config "
        "error (a script under `set -e` stops at 1).",
    )
    _add_config(poll)
    poll.add_argument("--json", action="store_true", help="print one JSON object")
    _add_instance_flags(poll, daemon=False)
    poll.set_defaults(func=cmd_poll)

    test_notify = add_parser(
        "test-notify",
        help="send a test alert through each receiver",
        description="Sends a test notification through every receiver (or --receiver) and "
        "prints ok or the exact error per receiver; exit 1 if any failed.",
    )
    _add_config(test_notify)
    test_notify.add_argument("--receiver", default=None, metavar="NAME")
    test_notify.set_defaults(func=cmd_test_notify)

    simulate = add_parser(
        "simulate",
        help="run simulated miners on loopback until stopped",
        description=textwrap.fill(
            "Fake miners speaking the real cgminer API (and each firmware family's control "
            "channel), one per loopback address from --listen (127.0.0.1, 127.0.0.2, ... "
            "port 4028), or on consecutive ports of --listen with --base-port. The "
            "scenario's failure starts after --fail-after seconds of farm time.",
            88,
        ),
        epilog_from=_simulate_epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulate.add_argument(
        "--miners",
        type=_positive_int,
        default=None,
        metavar="N",
        help="how many miners (default 3, or one per --firmware entry if more)",
    )
    simulate.add_argument(
        "--scenario",
        default="healthy",
        metavar="NAME",
        help="what goes wrong, for every miner (default healthy; the list is below)",
    )
    simulate.add_argument(
        "--fail-after",
        type=_non_negative,
        default=60.0,
        metavar="S",
        help="seconds of farm time before the scenario's failure starts (default 60; 0: at once)",
    )
    simulate.add_argument(
        "--speed",
        type=_positive,
        default=1.0,
        metavar="X",
        help="farm seconds per real second: uptime, share ages and --fail-after run X "
        "times faster (default 1)",
    )
    simulate.add_argument(
        "--firmware",
        default=None,
        metavar="LIST",
        help="comma-separated firmware families or flavours, given to the miners in "
        "turn, e.g. antminer,whatsminer,luxos (default cgminer,bmminer,bfgminer)",
    )
    simulate.add_argument(
        "--listen",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="the first miner's address; the next ones count up from it (default 127.0.0.1)",
    )
    simulate.add_argument(
        "--base-port", type=int, default=None, metavar="PORT",
        help="serve every miner on --listen with consecutive ports from PORT instead",
    )  # fmt: skip
    simulate.set_defaults(func=cmd_simulate)

    run = add_parser(
        "run",
        help="the daemon, in the foreground (what systemd runs)",
        description="Poll, evaluate, notify on schedule until SIGTERM; SIGHUP reloads the "
        "configuration. Serves /metrics, /healthz and /api/alerts on http.listen.",
    )
    _add_config(run)
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _add_instance_flags(run, daemon=True)
    run.set_defaults(func=cmd_run)

    status = add_parser(
        "status",
        help="ask a running daemon for its health and firing alerts",
        description="Prints health, the last cycle and the firing alerts of a running "
        "daemon; exit 0 when it is ok, 1 when it is degraded, unhealthy or unreachable.",
    )
    status.add_argument(
        "--url",
        default=None,
        help="the daemon's address, e.g. http://127.0.0.1:9841 (default: "
        "the http.listen of -c CONFIG)",
    )
    status.add_argument(
        "-c",
        "--config",
        default=None,
        metavar="CONFIG",
        help=f"read the daemon's address from this config's http.listen "
        f"(default {DEFAULT_CONFIG} when it exists, else {DEFAULT_URL})",
    )
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait")
    status.set_defaults(func=cmd_status)

    from cgwatchdog import silencecli

    silencecli.add_parsers(sub)
    sub.add_parser(
        "discover",
        help="scan a network for miners and print a ready miners: config",
        description="Ask every address of the targets for a miner (the poller's first "
        "contact on the API port, the firmware families' own read paths and web "
        "fingerprints; reads only, never a password) and print a miners: section that "
        "cgwatchdog check accepts, or JSON. Exit 0 when the scan ran, 2 on a bad target.",
        arguments_from=_discover_arguments,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cgwatchdog`` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return func(args)
    except UsageError as exc:
        return _fail(args, f"usage error: {exc}", EXIT_USAGE)
    except ConfigError as exc:
        return _fail(args, str(exc), EXIT_USAGE)
    except CgwatchdogError as exc:
        return _fail(args, str(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if getattr(args, "debug", False):
        traceback.print_exc()
    print(f"cgwatchdog: {message}", file=sys.stderr)
    return code
