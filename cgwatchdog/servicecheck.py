"""``cgwatchdog check --as-service``: the configuration as the systemd service will see it.

Run as root, ``check`` sees files the service cannot (a root-owned 0600 secret) and
misses what only the service has (its ``EnvironmentFile=`` variables, its credentials
directory). This module reads the unit (and its drop-ins) the way systemd would, with
no systemd needed (PID 1 may be anything where it runs):

- ``Environment=`` and ``EnvironmentFile=`` (``-`` for optional) give the service's
  variables, and nothing of the caller's shell;
- each ``LoadCredential=ID:PATH`` is read as root and staged, owned by the service's
  user and readable only by it, in a private directory given as
  ``$CREDENTIALS_DIRECTORY``; a missing source file is reported, since systemd would
  refuse to start the service (status 243/CREDENTIALS);

then a child process drops to an unprivileged user (``nobody``, as ``DynamicUser=``
would give an unknown uid in no group) and loads the configuration there.

``root`` prefixes every absolute path the unit names (for checking an install staged
under a directory before it is copied into place).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cgwatchdog.errors import EXIT_FAILURE, EXIT_USAGE

__all__ = [
    "DEFAULT_UNIT",
    "ServiceView",
    "check_as_service",
    "parse_environment_file",
    "read_unit",
]

DEFAULT_UNIT: Final = "/etc/systemd/system/cgwatchdog.service"
_SERVICE_USER: Final = "nobody"
_FALLBACK_ID: Final = 65534  # nobody/nogroup where there is no passwd entry
_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class ServiceView:
    """What the unit gives the service: its variables, credentials, and what is wrong."""

    unit: Path
    environment: dict[str, str] = field(default_factory=dict)
    credentials: dict[str, Path] = field(default_factory=dict)  # id -> source file
    problems: list[str] = field(default_factory=list)  # the service would not start
    notes: list[str] = field(default_factory=list)


def parse_environment_file(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's ``EnvironmentFile=`` reads them: ``#`` and ``;``
    comments, blank lines, optional single or double quotes around the value."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def _rooted(path: str, root: Path | None) -> Path:
    if root is None or not path.startswith("/"):
        return Path(path)
    return root / path.lstrip("/")


def _unit_lines(unit: Path, root: Path | None) -> list[tuple[str, str, str]]:
    """(file, key, value) of the [Service] settings of the unit, then of its drop-ins."""
    files = [unit]
    drop_ins = _rooted(f"/etc/systemd/system/{unit.name}.d", root)
    if drop_ins.is_dir():
        files += sorted(drop_ins.glob("*.conf"))
    settings = []
    for path in files:
        section = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            if section == "Service":
                settings.append((str(path), key.strip(), value.strip()))
    return settings


def read_unit(unit: Path, *, root: Path | None = None) -> ServiceView:
    """The service's environment and credentials from ``unit`` and its drop-ins (read
    as root, as systemd reads them)."""
    view = ServiceView(unit)
    for where, key, value in _unit_lines(unit, root):
        if key == "Environment":
            if not value:
                view.environment.clear()
                continue
            for item in shlex.split(value):
                name, _, setting = item.partition("=")
                view.environment[name] = setting
        elif key == "EnvironmentFile":
            optional = value.startswith("-")
            path = _rooted(value.lstrip("-"), root)
            try:
                view.environment.update(parse_environment_file(path.read_text()))
            except FileNotFoundError:
                if not optional:
                    view.problems.append(
                        f"{where}: EnvironmentFile={value}: no such file: the service "
                        "would not start"
                    )
            except OSError as exc:
                view.problems.append(f"{where}: EnvironmentFile={value}: {exc.strerror}")
        elif key == "LoadCredential":
            ident, sep, source = value.partition(":")
            if not sep or not source.startswith("/"):
                view.notes.append(
                    f"{where}: LoadCredential={value}: only ID:/absolute/path is checked here"
                )
                continue
            path = _rooted(source, root)
            if not path.is_file():
                view.problems.append(
                    f"{where}: LoadCredential={value}: {source} does not exist (or is not "
                    "a file): systemd would refuse to start the service (243/CREDENTIALS)"
                )
                continue
            view.credentials[ident] = path
        elif key == "LoadCredentialEncrypted":
            view.notes.append(
                f"{where}: LoadCredentialEncrypted={value}: not decrypted here (use "
                "systemd-creds decrypt to test it); the configuration is checked without it"
            )
    return view


def _service_ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        return _FALLBACK_ID, _FALLBACK_ID
    return entry.pw_uid, entry.pw_gid


def _stage_credentials(view: ServiceView, directory: Path, uid: int, gid: int) -> list[str]:
    problems = []
    os.chown(directory, uid, gid)
    directory.chmod(0o500)
    for ident, source in view.credentials.items():
        target = directory / ident
        try:
            shutil.copyfile(source, target)
        except OSError as exc:
            problems.append(f"LoadCredential={ident}:{source}: cannot read: {exc.strerror}")
            continue
        os.chown(target, uid, gid)
        target.chmod(0o400)
    return problems


def check_as_service(
    config: Path,
    unit: Path,
    report: Callable[[Path, Mapping[str, str]], int],
    *,
    root: Path | None = None,
    warm_up: Callable[[], object] | None = None,
) -> int:
    """Load ``config`` with the service's environment and credentials, as an
    unprivileged user; ``report(config, environ)`` (run in that child) prints what
    ``check`` prints and returns the exit code; ``warm_up`` loads the code it needs
    beforehand. Needs root."""
    if os.geteuid() != 0:
        print(
            "cgwatchdog: check --as-service needs root: it reads the unit's environment "
            "files and credentials as systemd does, then drops to an unprivileged user",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not unit.is_file():
        print(f"cgwatchdog: no unit at {unit} (install it, or name it with --unit)",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    view = read_unit(unit, root=root)
    uid, gid = _service_ids()
    print(f"as the service: uid {uid}, unit {unit}, {len(view.environment)} environment "
          f"variable(s), {len(view.credentials)} credential(s)")  # fmt: skip
    for note in view.notes:
        print(f"note: {note}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="cgwatchdog-credentials-") as staging:
        credentials = Path(staging) / "credentials"
        credentials.mkdir()
        Path(staging).chmod(0o755)
        view.problems += _stage_credentials(view, credentials, uid, gid)
        environ = {"PATH": _PATH, **view.environment}
        if view.credentials:
            environ["CREDENTIALS_DIRECTORY"] = str(credentials)
        for problem in view.problems:
            print(problem, file=sys.stderr)
        if warm_up is not None:
            # The child is forked from this interpreter, not started anew as the service
            # is: load the code now, while all of it is readable (an interpreter installed
            # under /root is not, for the service's user).
            with contextlib.suppress(Exception):
                warm_up()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: the service's view from here on
            code = EXIT_FAILURE
            try:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                code = report(config, environ)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if view.problems and code == 0:
        return EXIT_USAGE
    return code
