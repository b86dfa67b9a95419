"""``cgwatchdog silence add|list|expire`` and ``cgwatchdog ack``: talk to the running daemon.

They use the daemon's HTTP API (``/api/silences``, ``/api/alerts/{id}/ack``), never the
state file, so a silence made here holds at once, everywhere the daemon shares it (the
Alertmanager cluster), and is saved by the daemon. The daemon is found as ``cgwatchdog
status`` finds it: ``--url``, else the ``http.listen`` of ``-c CONFIG``. Writes send the
token of ``--token-file``, else of the config's ``http.token_file``.

Exit codes, as every command: 0 done; 1 the daemon is unreachable, or refused for a
reason of its state (unknown id, a config-file silence, an alert already resolved, the
Alertmanager cluster out of reach); 2 a usage or configuration error (a bad matcher or
duration, a missing or wrong token, a daemon without a token).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from cgwatchdog import endpoint
from cgwatchdog.endpoint import DEFAULT_CONFIG, DEFAULT_URL
from cgwatchdog.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from cgwatchdog.units import parse_duration, parse_rfc3339, short_time

if TYPE_CHECKING:
    import urllib.error

    from cgwatchdog.silences import Matcher

__all__ = ["DaemonAnswer", "add_parsers", "daemon_url", "parse_matchers", "read_token"]

_ENV_REF: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MAX_ANSWER: Final = 16 * 1024 * 1024


class DaemonAnswer(Exception):
    """The daemon could not be asked, or refused: the message and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- finding the daemon and its token ------------------------------------------------------


def daemon_url(url: str | None, config: str | None) -> str:
    """Where the daemon answers (:func:`cgwatchdog.endpoint.daemon_url`), a bad ``--url``
    as a usage error."""
    try:
        return endpoint.daemon_url(url, config)
    except ValueError as exc:
        raise DaemonAnswer(str(exc), EXIT_USAGE) from None


def _config_token_file(config: Path, environ: Mapping[str, str]) -> Path | None:
    """The path the config's ``http.token_file`` names, resolved as the loader resolves
    a ``*_file`` (absolute; else in $CREDENTIALS_DIRECTORY when there; else beside the
    config); None when the config names none. Only the ``http:`` section is read."""
    import yaml

    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise DaemonAnswer(
            f"cannot read {config}: {exc.strerror or exc} (or give --token-file)", EXIT_USAGE
        ) from None
    except yaml.YAMLError:
        raise DaemonAnswer(
            f"{config} is not valid YAML (cgwatchdog check -c {config} says where)", EXIT_USAGE
        ) from None
    http = data.get("http") if isinstance(data, dict) else None
    named = http.get("token_file") if isinstance(http, dict) else None
    if not isinstance(named, str) or not named.strip():
        return None
    text = _ENV_REF.sub(lambda m: environ.get(m[1], ""), named.strip())
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / path).exists():
        return Path(credentials) / path
    return config.parent / path


def read_token(
    token_file: str | None, config: str | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The write token: from ``--token-file``, else from the file the config's
    ``http.token_file`` names; None when neither gives one."""
    environ = os.environ if environ is None else environ
    if token_file is not None:
        path: Path | None = Path(token_file).expanduser()
    else:
        config_path = Path(config if config is not None else DEFAULT_CONFIG)
        if config is None and not config_path.exists():
            return None
        path = _config_token_file(config_path, environ)
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise DaemonAnswer(
            f"cannot read the token file {path}: {exc.strerror or exc} "
            "(run as a user who may read it, or give --token-file)",
            EXIT_USAGE,
        ) from None
    except UnicodeDecodeError:
        raise DaemonAnswer(f"the token file {path} is not UTF-8 text", EXIT_USAGE) from None
    if not token:
        raise DaemonAnswer(f"the token file {path} is empty", EXIT_USAGE)
    return token


# -- asking the daemon ---------------------------------------------------------------------


def _ask(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
    *,
    write: bool = False,
) -> dict[str, Any]:
    """One request to the daemon; its JSON answer, or DaemonAnswer."""
    # Here, not at the top: every command builds the parser this module adds to.
    import urllib.error
    import urllib.request

    base = daemon_url(args.url, args.config)
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if write:
        token = read_token(args.token_file, args.config)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as answer:
            document = json.loads(answer.read(_MAX_ANSWER))
    except urllib.error.HTTPError as exc:
        raise _refusal(exc, base, write) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        reason = getattr(reason, "strerror", None) or reason
        raise DaemonAnswer(
            f"cannot reach the daemon at {base}: {reason} (is cgwatchdog running? see --url and -c)",
            EXIT_FAILURE,
        ) from None
    except ValueError:
        raise DaemonAnswer(
            f"{base}{path} did not answer JSON: is that a cgwatchdog daemon?", EXIT_FAILURE
        ) from None
    if not isinstance(document, dict):
        raise DaemonAnswer(f"{base}{path} answered unexpected JSON", EXIT_FAILURE)
    return document


def _refusal(exc: urllib.error.HTTPError, base: str, write: bool) -> DaemonAnswer:
    try:
        message = str(json.loads(exc.read(64 * 1024)).get("error") or "")
    except (ValueError, AttributeError, OSError):
        message = ""
    code = exc.code
    if code == 404 and not message:
        message = f"{base} has no silence API: is it a cgwatchdog daemon of this version?"
    if code in (401, 403) and write:
        hint = " (give --token-file, or -c the config whose http.token_file the daemon uses)"
        message = (message or "refused") + (hint if code == 401 else "")
    text = f"{message or 'refused'} (HTTP {code})"
    return DaemonAnswer(text, EXIT_USAGE if code in (400, 401, 403) else EXIT_FAILURE)


# -- the commands --------------------------------------------------------------------------


def parse_matchers(texts: Sequence[str]) -> list[Matcher]:
    """``name=value`` and ``name=~regex`` arguments as matchers; DaemonAnswer (exit 2)."""
    from cgwatchdog.silences import Matcher

    matchers = []
    for text in texts:
        try:
            matcher = Matcher.parse(text)
        except ValueError as exc:
            raise DaemonAnswer(str(exc), EXIT_USAGE) from None
        if not matcher.equal:
            raise DaemonAnswer(f"{text!r}: only = and =~ matchers", EXIT_USAGE)
        matchers.append(matcher)
    return matchers


def _author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def cmd_silence_add(args: argparse.Namespace) -> int:
    """Make a silence through the daemon; prints its id."""
    matchers = parse_matchers(args.matchers)
    body: dict[str, Any] = {
        "matchers": [{"name": m.name, "value": m.value, "isRegex": m.regex} for m in matchers],
        "comment": args.comment,
        "createdBy": args.author or _author(),
        "maintenance": args.maintenance,
    }
    if args.until is not None:
        if parse_rfc3339(args.until) is None:
            raise DaemonAnswer(
                f"--until {args.until!r} is not a time such as 2026-11-25T21:00:00Z", EXIT_USAGE
            )
        body["endsAt"] = args.until
    else:
        try:
            seconds = parse_duration(args.duration)
        except ValueError as exc:
            raise DaemonAnswer(f"--for: {exc}", EXIT_USAGE) from None
        if seconds <= 0:
            raise DaemonAnswer("--for must be positive", EXIT_USAGE)
        body["duration"] = seconds
    answer = _ask(args, "POST", "/api/silences", body, write=True)
    print(answer.get("silenceID", ""))
    return EXIT_OK


def _silence_line(silence: Mapping[str, Any]) -> str:
    state = str((silence.get("status") or {}).get("state", "?"))
    ends = parse_rfc3339(silence.get("endsAt"))
    until = "?" if ends is None else short_time(ends)
    matchers = " ".join(
        f"{m.get('name')}{'=~' if m.get('isRegex') else '='}{json.dumps(m.get('value'))}"
        for m in silence.get("matchers") or ()
        if isinstance(m, dict)
    )
    kind = " maintenance" if silence.get("maintenance") else ""
    shown = str(silence.get("id", ""))
    if silence.get("source") != "config":
        shown = shown[:8]
    return (
        f"{shown:<8}  {state:<7}{kind}  until {until}  "
        f"{matchers}  by {silence.get('createdBy', '')}: {silence.get('comment', '')}"
    )


def cmd_silence_list(args: argparse.Namespace) -> int:
    """Print the daemon's silences (pending and active; ``--expired`` too)."""
    answer = _ask(args, "GET", "/api/silences")
    silences = [s for s in answer.get("silences") or () if isinstance(s, dict)]
    if not args.expired:
        silences = [s for s in silences if (s.get("status") or {}).get("state") != "expired"]
    if args.json:
        print(json.dumps(silences, indent=2))
        return EXIT_OK
    cluster = answer.get("cluster") or {}
    if isinstance(cluster, dict) and cluster.get("error"):
        print(
            f"cgwatchdog: the Alertmanager cluster could not be read; these are the last "
            f"known silences: {cluster['error']}",
            file=sys.stderr,
        )
    if not silences:
        print("no silences")
    for silence in silences:
        print(_silence_line(silence))
    return EXIT_OK


def cmd_silence_expire(args: argparse.Namespace) -> int:
    """Expire a silence through the daemon."""
    answer = _ask(args, "DELETE", f"/api/silences/{quote(args.id, safe='')}", write=True)
    silence = answer.get("silence") or {}
    print(f"expired {silence.get('id', args.id)}")
    return EXIT_OK


def cmd_ack(args: argparse.Namespace) -> int:
    """Acknowledge an alert through the daemon."""
    body = {"by": args.by or _author()}
    answer = _ask(
        args, "POST", f"/api/alerts/{quote(args.alert_id, safe='')}/ack", body, write=True
    )
    alert = answer.get("alert") or {}
    print(
        f"acknowledged {alert.get('fingerprint', args.alert_id)} "
        f"({alert.get('alertname', '?')} on {alert.get('miner') or 'the fleet'}) "
        f"by {alert.get('acknowledgedBy', body['by'])}"
    )
    return EXIT_OK


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print a DaemonAnswer as the other commands print errors; its exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            code: int = command(args)
        except DaemonAnswer as exc:
            print(f"cgwatchdog: {exc}", file=sys.stderr)
            return exc.code
        return code

    return run


# -- the parsers ---------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser, *, write: bool) -> None:
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )
    parser.add_argument(
        "--url",
        default=None,
        help="the daemon's address, e.g. http://127.0.0.1:9841 (default: the http.listen "
        "of -c CONFIG)",
    )
    parser.add_argument(
        "-c",
        "--config",
        default=None,
        metavar="CONFIG",
        help=f"read the daemon's address (and token_file) from this config's http: "
        f"(default {DEFAULT_CONFIG} when it exists, else {DEFAULT_URL})",
    )
    if write:
        parser.add_argument(
            "--token-file",
            default=None,
            metavar="FILE",
            help="the file holding the daemon's write token (default: the config's "
            "http.token_file)",
        )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Define ``silence`` (``add``, ``list``, ``expire``) and ``ack`` on ``subparsers``."""
    silence = subparsers.add_parser(
        "silence",
        help="silence alerts (and hold back actions) through the running daemon",
        description="Make, list and expire silences through the running daemon's HTTP API. "
        "A silence holds back the notifications of the alerts it matches; with "
        "--maintenance also the actions on them. Exit 0 done, 1 the daemon is unreachable "
        "or refused, 2 a usage error or a missing/wrong token.",
    )
    silence.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )
    silence.set_defaults(func=lambda args: _usage(silence))
    commands = silence.add_subparsers(dest="silence_command", metavar="SUBCOMMAND")

    add = commands.add_parser(
        "add",
        help="make a silence: miner=sim-001 --for 2h --comment 'board swap'",
        description="Make a silence of the alerts all of whose matchers match, from now; "
        "prints its id.",
    )
    add.add_argument(
        "matchers",
        nargs="+",
        metavar="MATCHER",
        help="name=value or name=~regex (the regex matches the whole value), e.g. "
        "miner=sim-001 alertname=DeviceDead",
    )
    span = add.add_mutually_exclusive_group(required=True)
    span.add_argument(
        "--for", dest="duration", metavar="DURATION", help="how long, e.g. 2h, 30m, 1d"
    )
    span.add_argument("--until", metavar="TIME", help="until when, RFC 3339 (2026-11-25T21:00:00Z)")
    add.add_argument("--comment", required=True, help="why (people reading the alerts see it)")
    add.add_argument(
        "--maintenance",
        action="store_true",
        help="also hold back remediation actions on what it matches",
    )
    add.add_argument("--author", default=None, help="who makes it (default: your user name)")
    _add_common(add, write=True)
    add.set_defaults(func=_guarded(cmd_silence_add))

    listing = commands.add_parser(
        "list", help="list the silences", description="Pending and active silences."
    )
    listing.add_argument("--expired", action="store_true", help="also the recently expired ones")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    _add_common(listing, write=False)
    listing.set_defaults(func=_guarded(cmd_silence_list))

    expire = commands.add_parser(
        "expire",
        help="end a silence now",
        description="End a silence now; ID is its id or its first 8 characters or more.",
    )
    expire.add_argument("id", metavar="ID")
    _add_common(expire, write=True)
    expire.set_defaults(func=_guarded(cmd_silence_expire))

    ack = subparsers.add_parser(
        "ack",
        help="acknowledge a firing alert: it is not repeated; its resolution still is",
        description="Acknowledge an alert through the running daemon: it is not repeated "
        "while it fires (its resolution is still notified). ALERT_ID is the alert's "
        "16-digit id, as notifications and /api/alerts show it.",
    )
    ack.add_argument("alert_id", metavar="ALERT_ID")
    ack.add_argument("--by", default=None, help="who is on it (default: your user name)")
    _add_common(ack, write=True)
    ack.set_defaults(func=_guarded(cmd_ack))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE
