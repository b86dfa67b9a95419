"""The ``cgwatchdog`` command line.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error. Errors print as one
line on stderr; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import traceback
from collections.abc import Callable, Sequence

from cgwatchdog import __version__
from cgwatchdog.client import DEFAULT_TIMEOUT_S, CgminerAPI
from cgwatchdog.errors import CgwatchdogError, ConfigError, ProtocolError
from cgwatchdog.protocol import DEFAULT_PORT, encode_request

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


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
    host, port = parse_host_port(args.target)
    api = CgminerAPI(host, port, timeout=args.timeout, connect_timeout=args.connect_timeout)
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


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config and its rule files; list every problem as file:line."""
    from cgwatchdog.config import load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"cgwatchdog: {count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return EXIT_USAGE
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"ok: {args.config}: {len(cfg.miners)} miners, {len(cfg.rules)} rules, "
        f"{len(cfg.receivers)} receivers"
    )
    return EXIT_OK


# -- simulate ---------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run simulated miners until interrupted."""
    from cgwatchdog import simulator

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            simulator.run_simulator(
                args.miners,
                scenario=args.scenario,
                listen=args.listen,
                base_port=args.base_port,
            )
        )
    return EXIT_OK


# -- wiring -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="cgwatchdog",
        description="Alerting watchdog for cgminer-API mining farms.",
    )
    parser.add_argument("--version", action="version", version=f"cgwatchdog {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")

    query = sub.add_parser(
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
    query.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="read deadline, s")
    query.add_argument("--connect-timeout", type=float, default=None, help="connect deadline, s")
    query.set_defaults(func=cmd_query)

    check = sub.add_parser(
        "check",
        help="validate a config and its rule files",
        description="Exit 0 when valid; else exit 2 listing every problem as file:line: message.",
    )
    check.add_argument("-c", "--config", required=True, metavar="CONFIG")
    check.set_defaults(func=cmd_check)

    simulate = sub.add_parser(
        "simulate",
        help="run simulated miners on loopback until stopped",
        description="Fake miners speaking the real cgminer API, one per loopback address "
        "(127.0.0.2, 127.0.0.3, ... port 4028) or on consecutive ports with --base-port.",
    )
    simulate.add_argument("--miners", type=int, default=3)
    simulate.add_argument("--scenario", default="healthy")
    simulate.add_argument("--listen", default="127.0.0.1",
                          help="address for --base-port mode (default 127.0.0.1)")
    simulate.add_argument("--base-port", type=int, default=None,
                          help="serve every miner on LISTEN with consecutive ports")
    simulate.set_defaults(func=cmd_simulate)
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
