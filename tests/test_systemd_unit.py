"""systemd/cgwatchdog.service and the per-shard template cgwatchdog@.service:
`systemd-analyze verify` passes and the sandbox scores well."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cgwatchdog.config import Shard, parse_shard

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "cgwatchdog.service"
TEMPLATE = UNIT.with_name("cgwatchdog@.service")
INSTANCE = "cgwatchdog@1-of-2.service"
# `systemd-analyze security` exposure, 0 (locked down) .. 10 (unprotected); measured 1.1
# on systemd 252. What remains is what a network poller must keep: AF_INET/AF_INET6 and
# AF_UNIX sockets, the host network, no IP allow list, char-rtc (ProtectClock's own ACL).
MAX_EXPOSURE = 2.0


def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    return found


def runnable_copy(tmp_path: Path, unit: Path = UNIT) -> Path:
    """The unit with ExecStart pointing at this interpreter: verify wants the binary to
    exist, and /opt/cgwatchdog/venv exists only where the README install ran."""
    text = unit.read_text()
    text, count = re.subn(
        r"(?m)^ExecStart=/opt/cgwatchdog/venv/bin/cgwatchdog (.*)$",
        lambda found: f"ExecStart={sys.executable} -m cgwatchdog {found[1]}",
        text,
    )
    assert count == 1
    copy = tmp_path / unit.name
    copy.write_text(text)
    return copy


def unit_settings(unit: Path = UNIT) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def test_the_unit_carries_the_contract() -> None:
    settings = unit_settings()
    expected = {
        "Service.Type": ["notify"],
        "Service.NotifyAccess": ["main"],
        "Service.ExecStart": ["/opt/cgwatchdog/venv/bin/cgwatchdog run -c /etc/cgwatchdog/config.yaml"],
        "Service.ExecReload": ["/bin/kill -HUP $MAINPID"],
        "Service.Restart": ["on-failure"],
        "Service.RestartPreventExitStatus": ["2"],
        "Service.StateDirectory": ["cgwatchdog"],
        "Service.DynamicUser": ["yes"],
        "Service.NoNewPrivileges": ["yes"],
        "Service.ProtectSystem": ["strict"],
        "Service.RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
        "Service.CapabilityBoundingSet": [""],
        "Service.LimitNOFILE": ["65536"],
        "Service.WatchdogSec": ["180s"],
    }
    for key, value in expected.items():
        assert settings.get(key) == value, key
    assert "Service.IPAddressDeny" not in settings  # miners can be anywhere
    assert settings["Install.WantedBy"] == ["multi-user.target"]


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    tool = analyze()
    unit = runnable_copy(tmp_path)
    done = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


def security(tool: str, unit: Path) -> tuple[float, set[str] | None]:
    """`systemd-analyze security --offline` of ``unit``: the overall exposure, and the
    names of the items left open (None if this systemd has no --json)."""
    done = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0 and "offline" in done.stderr.lower():
        pytest.skip(f"this systemd-analyze has no --offline (systemd < 252): {done.stderr.strip()}")
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert found is not None, done.stdout + done.stderr
    table = subprocess.run(
        [tool, "security", "--offline=true", "--json=short", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    open_items = None
    if table.returncode == 0 and table.stdout.strip().startswith("["):
        open_items = {item["name"] for item in json.loads(table.stdout) if item.get("set") is False}
    return float(found[1]), open_items


def test_security_exposure_is_low(tmp_path: Path) -> None:
    tool = analyze()
    exposure, open_items = security(tool, runnable_copy(tmp_path))
    print(f"systemd-analyze security exposure of {UNIT.name}: {exposure}")
    assert exposure < MAX_EXPOSURE
    # Every item still open is one the daemon needs; list them so a change shows up.
    if open_items is not None:
        print("open:", ", ".join(sorted(open_items)))
        assert "NoNewPrivileges=" not in open_items


# --- the per-shard template, cgwatchdog@.service ------------------------------------

# What the template may set differently from the plain unit; everything else is equal.
TEMPLATE_OWN = {"Unit.Description", "Service.ExecStart", "Service.EnvironmentFile",
                "Service.StateDirectory"}  # fmt: skip


def test_the_template_is_the_plain_unit_per_shard() -> None:
    plain, template = unit_settings(UNIT), unit_settings(TEMPLATE)
    assert template["Service.ExecStart"] == [
        "/opt/cgwatchdog/venv/bin/cgwatchdog run -c /etc/cgwatchdog/config.yaml --shard %i"
        " --state-dir %S/cgwatchdog-%i --listen ${CGWATCHDOG_LISTEN}"
    ]
    # Own state per instance, and the daemon is told where it is.
    assert template["Service.StateDirectory"] == ["cgwatchdog-%i"]
    state_dir = re.search(r"--state-dir (\S+)", template["Service.ExecStart"][0])
    assert state_dir is not None and state_dir[1] == "%S/" + template["Service.StateDirectory"][0]
    # The shared secrets file, then this instance's port (required: no "-").
    assert template["Service.EnvironmentFile"] == [
        *plain["Service.EnvironmentFile"],
        "/etc/cgwatchdog/%i.env",
    ]
    assert "%i" in template["Unit.Description"][0]
    # Every other line, hardening included, is the plain unit's, and none is missing.
    assert {k: v for k, v in template.items() if k not in TEMPLATE_OWN} == {
        k: v for k, v in plain.items() if k not in TEMPLATE_OWN
    }


def test_the_instance_name_is_a_shard_the_daemon_reads() -> None:
    instance = INSTANCE.removeprefix("cgwatchdog@").removesuffix(".service")
    assert parse_shard(instance) == Shard(1, 2)
    assert str(parse_shard("2-of-2")) == "2/2"


def test_systemd_analyze_verifies_an_instance_of_the_template(tmp_path: Path) -> None:
    tool = analyze()
    runnable_copy(tmp_path, TEMPLATE)
    # The instance name is resolved to the template next to it, specifiers expanded.
    for unit in (tmp_path / INSTANCE, tmp_path / "cgwatchdog@2-of-2.service"):
        done = subprocess.run(
            [tool, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip() == "", done.stderr


def test_the_template_is_as_locked_down_as_the_plain_unit(tmp_path: Path) -> None:
    tool = analyze()
    plain_dir, template_dir = tmp_path / "plain", tmp_path / "template"
    plain_dir.mkdir()
    template_dir.mkdir()
    plain, plain_open = security(tool, runnable_copy(plain_dir))
    runnable_copy(template_dir, TEMPLATE)
    template, template_open = security(tool, template_dir / INSTANCE)
    print(f"systemd-analyze security exposure of {INSTANCE}: {template} (plain unit {plain})")
    assert template <= plain
    assert template < MAX_EXPOSURE
    if plain_open is not None and template_open is not None:
        assert template_open <= plain_open, template_open - plain_open
