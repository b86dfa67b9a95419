"""The README's "Install as a service", run as written into a temporary root.

Each command of the README's block runs with its absolute paths under a staging root
(``/opt/cgwatchdog`` -> ``ROOT/opt/cgwatchdog``, ``/etc/...`` likewise) and without
``sudo``; ``apt-get`` lines are checked as installed (``.ci/run`` installs them) and
``systemctl`` lines are left out (no systemd as PID 1 here). Then the installed unit
passes ``systemd-analyze verify`` against that root (its ExecStart exists there), and
``check --as-service`` passes as the service would run it: the unit's credentials
staged, as an unprivileged user. It also fails where the service would: a credential
file missing, a root-only config.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MOVED = ("/opt/cgwatchdog", "/etc/cgwatchdog", "/etc/systemd/system")


def install_block() -> list[str]:
    """The commands of the README's "Install as a service" block, as written."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Install as a service") :]
    lines: list[str] = []
    for line in section.splitlines()[1:]:
        if line.startswith("    "):
            lines.append(line[4:])
        elif lines:
            break
    return lines


def staged(command: str, root: Path) -> str:
    command = re.sub(r"\bsudo ", "", command)
    for path in MOVED:
        command = command.replace(path, f"{root}{path}")
    return command


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """A root the README's install ran into (module scope: the pip install takes time)."""
    if os.geteuid() != 0:
        pytest.skip("the install steps and check --as-service run as root")
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    commands = install_block()
    assert commands, "the README's install block was not found"
    root = Path(tempfile.mkdtemp(prefix="cgw-install-"))
    root.chmod(0o755)  # the service user must reach the staged files
    for present in ("etc/systemd/system", "opt", "bin"):  # as on any Debian system
        (root / present).mkdir(parents=True)
    shutil.copy2("/bin/kill", root / "bin" / "kill")  # the unit's ExecReload
    try:
        ran = []
        for command in commands:
            words = shlex.split(command.replace("sudo ", ""))
            if words[0] == "apt-get":
                packages = [w for w in words[2:] if not w.startswith("-")]
                missing = [
                    p for p in packages
                    if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                      text=True, check=False).stdout != "install ok installed"
                ]  # fmt: skip
                if missing:
                    pytest.skip(f"the README's apt-get packages are not installed: {missing}")
                continue
            if words[0] == "systemctl":
                continue
            line = staged(command, root)
            if "check --as-service" in line:
                line += f" --root {root}"
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", line], cwd=REPO, capture_output=True,
                text=True, timeout=600, check=False,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            )  # fmt: skip
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            ran.append((command, done))
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_readme_install_gives_a_verified_unit_and_a_passing_service_check(
    installed: Path,
) -> None:
    root = installed
    unit = root / "etc/systemd/system/cgwatchdog.service"
    assert (root / "opt/cgwatchdog/venv/bin/cgwatchdog").is_file()
    assert "ExecStart=/opt/cgwatchdog/venv/bin/cgwatchdog run" in unit.read_text()
    # verify resolves ExecStart and the targets inside the root.
    systemd_units = root / "usr/lib/systemd/system"
    systemd_units.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree("/usr/lib/systemd/system", systemd_units, symlinks=True)
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", str(unit)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The secrets are the service's only: root-only files, its credentials.
    for secret in ("slack-webhook-url", "smtp-password"):
        assert (root / "etc/cgwatchdog" / secret).stat().st_mode & 0o777 == 0o600
    result = check_as_service(root)
    assert result.returncode == 0, result.stderr
    assert "as the service: uid" in result.stdout and "2 credential(s)" in result.stdout
    assert "actions: DRY RUN" in result.stdout  # the example never acts unasked
    assert result.stdout.splitlines()[-1].startswith("ok: ")


def check_as_service(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(root / "opt/cgwatchdog/venv/bin/cgwatchdog"), "check", "--as-service",
         "--root", str(root)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_check_as_service_fails_where_the_service_would(installed: Path) -> None:
    root = installed
    config = root / "etc/cgwatchdog/config.yaml"
    secret = root / "etc/cgwatchdog/smtp-password"
    # A root-only config: fine for root, unreadable for the service's dynamic user.
    config.chmod(0o600)
    try:
        as_root = subprocess.run(
            [str(root / "opt/cgwatchdog/venv/bin/cgwatchdog"), "check", "-c", str(config)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert as_root.returncode == 0, as_root.stderr
        result = check_as_service(root)
        assert result.returncode == 2
        assert "cannot read config file: Permission denied" in result.stderr
    finally:
        config.chmod(0o644)
    # A LoadCredential= whose file is missing: systemd would not start the service.
    kept = secret.read_bytes()
    secret.unlink()
    try:
        result = check_as_service(root)
        assert result.returncode == 2
        assert "LoadCredential=smtp-password:/etc/cgwatchdog/smtp-password" in result.stderr
        assert "243/CREDENTIALS" in result.stderr
    finally:
        secret.write_bytes(kept)
        secret.chmod(0o600)
