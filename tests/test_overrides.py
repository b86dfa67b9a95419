"""Instance flags over the shared file: --shard, --replica, --state-dir, --listen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cgwatchdog.config import Shard
from cgwatchdog.config.loader import load_config
from cgwatchdog.errors import ConfigError
from cgwatchdog.overrides import Overrides
from cgwatchdog.shard import shard_of

FLEET = 12
ALERTMANAGER = """
receivers:
  - {name: am, alertmanager: {urls: ["http://127.0.0.1:1", "http://127.0.0.1:2"]}}
route: {receiver: am}
"""


def write(tmp_path: Path, *, cluster: str = "", extra: str = "") -> Path:
    miners = "".join(
        f"  - {{name: rig-{i:02d}, host: 127.0.0.1, port: {40000 + i}}}\n" for i in range(FLEET)
    )
    path = tmp_path / "shared.yaml"
    path.write_text(f"miners:\n{miners}{cluster}{extra}")
    return path


def test_shards_of_one_file_partition_its_miners(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    owned = [
        {m.name for m in Overrides(shard=Shard(i, 3)).apply(config).miners} for i in (1, 2, 3)
    ]
    assert set().union(*owned) == {m.name for m in config.miners}
    assert sum(len(names) for names in owned) == FLEET  # disjoint
    for index, names in enumerate(owned, start=1):
        assert all(shard_of(name, 3) == index for name in names)
    # Configuration order is kept.
    kept = [m.name for m in Overrides(shard=Shard(2, 3)).apply(config).miners]
    assert kept == sorted(kept)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, cluster="cluster: {shard: 1/2, replica: a, alertmanager: am}\n",
                 extra=ALERTMANAGER + "state_dir: /srv/x\nhttp: {listen: '127.0.0.1:9841'}\n")
    config = load_config(path)
    flags = Overrides.from_flags(
        shard="2-of-2", replica="b", state_dir=str(tmp_path / "s"), listen="127.0.0.1:9900"
    )
    applied = flags.apply(config)
    assert applied.cluster.shard == Shard(2, 2) and applied.cluster.replica == "b"
    assert applied.cluster.alertmanager == "am"
    assert applied.state_dir == tmp_path / "s"
    assert (applied.http.host, applied.http.port) == ("127.0.0.1", 9900)
    assert {m.name for m in applied.miners} == {
        m.name for m in config.miners if shard_of(m.name, 2) == 2
    }
    # No flags: the file's own shard still selects.
    file_only = Overrides().apply(config)
    assert all(shard_of(m.name, 2) == 1 for m in file_only.miners)
    assert file_only.state_dir == Path("/srv/x")


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        ({"shard": "3/2"}, "--shard"),
        ({"shard": "one"}, "--shard"),
        ({"listen": "nowhere"}, "--listen"),
        ({"replica": ""}, "--replica"),
        ({"state_dir": " "}, "--state-dir"),
    ],
)
def test_malformed_flags_name_the_flag(flags: dict[str, str], flag: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Overrides.from_flags(**flags)
    assert caught.value.problems[0].file == flag


def test_a_replica_needs_an_alertmanager_to_coordinate_through(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    with pytest.raises(ConfigError, match=r"cluster\.alertmanager"):
        Overrides.from_flags(replica="a").apply(config)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cgwatchdog", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_poll_json_lists_only_the_shards_miners(tmp_path: Path) -> None:
    path = write(tmp_path, extra="poll: {timeout: 0.5s, connect_timeout: 0.2s}\n")
    seen: list[set[str]] = []
    for index in (1, 2):
        result = run_cli("poll", "-c", str(path), "--json", "--shard", f"{index}/2")
        assert result.returncode == 1, result.stderr  # no miner answers here
        document = json.loads(result.stdout)
        assert document["shard"] == f"{index}/2"
        names = {miner["name"] for miner in document["miners"]}
        assert all(shard_of(name, 2) == index for name in names)
        seen.append(names)
    assert seen[0].isdisjoint(seen[1]) and len(seen[0] | seen[1]) == FLEET


def test_run_refuses_a_bad_flag_with_exit_2(tmp_path: Path) -> None:
    result = run_cli("run", "-c", str(write(tmp_path)), "--shard", "0/2")
    assert result.returncode == 2
    assert "--shard" in result.stderr and "Traceback" not in result.stderr
