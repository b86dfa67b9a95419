"""Scale-out and high availability end to end (DESIGN §11).

Everything real and on 127.0.0.1: a two-peer cluster of Debian's
``prometheus-alertmanager`` that gossips its notification log and notifies a webhook
sink; eight simulated miners served by this test's event loop; four ``cgwatchdog run``
subprocesses (two shards x replicas a and b) reading one configuration file. The poll
interval is 1 s and the daemons run on the real clock, so every wait is for a condition
under a deadline, and "exactly once" is checked over a window as long as a duplicate
would take to arrive (the second Alertmanager peer waits ``--cluster.peer-timeout``
before it sends its copy). Measured figures are printed (``pytest -s`` shows them).

Two edges of leadership run on one Alertmanager with one shard of two replicas: the
worst-case takeover (within three intervals) and a joining replica never leading beside
the incumbent. The dead man's switch (``heartbeat:``) runs on one plain instance.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cgwatchdog.config import REDACTED
from cgwatchdog.daemon import HEARTBEAT_LIFETIME_INTERVALS
from cgwatchdog.shard import shard_of
from cgwatchdog.simulator import Fleet, serve
from tests.clusterkit import (
    ALERTMANAGER,
    AlertmanagerCluster,
    Instance,
    Sink,
    break_device,
    logs_of,
    stays,
)
from tests.conftest import until

INTERVAL_S = 1.0
SHARDS = 2
REPLICAS = ("a", "b")
AM_HOOK = "/am-hook"
DIRECT_HOOK = "/direct"
# Long enough for a duplicate to show: the second Alertmanager peer sends its copy of a
# notification peer-timeout (1 s) after the first peer's, if at all (clusterkit).
QUIET_S = 2.5
# Daemons start in a second or two; a fault is seen, restarted and resolved in a few.
START_S = 20.0
EVENT_S = 15.0
LIFETIME_S = HEARTBEAT_LIFETIME_INTERVALS * INTERVAL_S

needs_alertmanager = pytest.mark.skipif(
    not os.access(ALERTMANAGER, os.X_OK),
    reason=f"{ALERTMANAGER} not found: apt-get install prometheus-alertmanager",
)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def am_sink() -> Iterator[Sink]:
    sink = Sink().start()
    yield sink
    sink.stop()


@pytest.fixture
def direct_sink() -> Iterator[Sink]:
    sink = Sink().start()
    yield sink
    sink.stop()


@pytest.fixture
def ping_sink() -> Iterator[Sink]:
    sink = Sink().start()
    yield sink
    sink.stop()


@pytest.fixture
async def am_cluster(tmp_path: Path, am_sink: Sink) -> AsyncIterator[AlertmanagerCluster]:
    cluster = AlertmanagerCluster.start(tmp_path, am_sink.base_url + AM_HOOK, size=2)
    try:
        await cluster.formed()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    built = Fleet.build(
        8, "healthy", flavours=("cgminer",), listen="127.0.0.1", base_port=0,
        restart_downtime_s=1.0, uptime_s=7200.0,
    )  # fmt: skip
    async with serve(built):
        yield built


@pytest.fixture
def instances() -> Iterator[list[Instance]]:
    started: list[Instance] = []
    yield started
    for instance in started:
        instance.cleanup()


# -- helpers ------------------------------------------------------------------------------


def miner_lines(fleet: Fleet) -> str:
    return "".join(f"  - {{name: {m.name}, host: {m.host}, port: {m.port}}}\n" for m in fleet)


def write_cluster_config(
    path: Path, fleet: Fleet, am_urls: list[str], direct_url: str, state_dir: Path
) -> Path:
    """One file for every instance: DeviceDead restarts the miner once; alert state goes
    to every Alertmanager peer, notifications also to a direct webhook.

    ``restart_grace: 0s``: the alert resolves at the first poll that finds the device
    Alive. With a grace, each replica holds the alert from its own estimate of the
    restart time (``at - Elapsed``, Elapsed in whole seconds), so with 1 s cycles the two
    can resolve a cycle apart; the later one's firing push then re-opens the alert on
    Alertmanager (the newest push wins) and a second firing notice may go out.
    """
    urls = ", ".join(f'"{url}"' for url in am_urls)
    path.write_text(
        f"""\
poll: {{interval: {INTERVAL_S:g}s, timeout: 600ms, connect_timeout: 300ms, jitter: 0%}}
state_dir: {state_dir}
miners:
{miner_lines(fleet)}rules:
  - name: DeviceDead
    type: device_status
    status: [Dead]
    for: 0s
    severity: critical
    actions: [{{do: restart, verify_within: 20s}}]
receivers:
  - name: am
    alertmanager: {{urls: [{urls}], timeout: 1s}}
  - name: direct
    webhook: {{url: "{direct_url}"}}
route:
  receiver: direct
  group_by: [alertname, miner]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
actions:
  dry_run: false
  cooldown: 1h
  max_per_miner_per_hour: 1
  max_in_flight: 5
  fleet_incident_share: 0.5
  restart_grace: 0s
cluster: {{alertmanager: am}}
"""
    )
    return path


def shard_members(fleet: Fleet) -> dict[int, list[str]]:
    members: dict[int, list[str]] = {index: [] for index in range(1, SHARDS + 1)}
    for member in fleet:
        members[shard_of(member.name, SHARDS)].append(member.name)
    return members


def arrived(sink: Sink, path: str, miner: str, status: str) -> Callable[[], int]:
    """How many DeviceDead notices for ``miner`` with ``status`` reached ``path``."""
    return lambda: sink.count(path, "DeviceDead", miner, status)


async def documents(started: dict[tuple[int, str], Instance]) -> dict[tuple[int, str], Any]:
    keys = list(started)
    found = await asyncio.gather(*(started[key].document() for key in keys))
    return dict(zip(keys, found, strict=True))


async def wait_roles(
    started: dict[tuple[int, str], Instance], want: dict[tuple[int, str], str], timeout_s: float
) -> None:
    async def settled() -> bool:
        found = await documents({key: started[key] for key in want})
        return all(doc is not None and doc["role"] == want[key] for key, doc in found.items())

    await until(f"roles {want}", settled, timeout_s, context=lambda: logs_of(started.values()))


# -- the cluster --------------------------------------------------------------------------


@needs_alertmanager
async def test_two_shards_two_replicas_on_an_alertmanager_cluster(
    tmp_path: Path,
    am_cluster: AlertmanagerCluster,
    am_sink: Sink,
    direct_sink: Sink,
    fleet: Fleet,
    instances: list[Instance],
) -> None:
    began = time.monotonic()
    config = write_cluster_config(
        tmp_path / "cgwatchdog.yaml", fleet, am_cluster.urls,
        direct_sink.base_url + DIRECT_HOOK, tmp_path / "unused-state",
    )  # fmt: skip
    members = shard_members(fleet)
    assert all(len(names) >= 2 for names in members.values()), members
    started: dict[tuple[int, str], Instance] = {}
    for index in range(1, SHARDS + 1):
        for replica in REPLICAS:
            instance = Instance.start(
                config, tmp_path, f"{index}{replica}", shard=f"{index}/{SHARDS}", replica=replica
            )
            started[index, replica] = instance
            instances.append(instance)

    def context() -> str:
        return logs_of(instances) + "\n" + am_cluster.logs()

    # b. In each shard the lowest name leads: a leads, b follows.
    roles = {key: ("leader" if key[1] == "a" else "follower") for key in started}
    await wait_roles(started, roles, START_S)

    # b polls 0.1 interval after a, so that no push lands on a group flush (clusterkit).
    def align(index: int) -> Awaitable[float]:
        return am_cluster.align_phase(
            started[index, "b"], f"{index}/{SHARDS}", "a", "b",
            offset_s=0.1 * INTERVAL_S, interval_s=INTERVAL_S, lifetime_s=LIFETIME_S,
        )  # fmt: skip

    offsets = await asyncio.gather(*(align(index) for index in range(1, SHARDS + 1)))
    await wait_roles(started, roles, START_S)

    # Each instance polls exactly its shard's miners (shard_of): disjoint, covering.
    found = await documents(started)
    for (index, replica), document in found.items():
        assert document["shard"] == f"{index}/{SHARDS}"
        assert document["replica"] == replica
        assert sorted(document["miner_names"]) == sorted(members[index])
    polled_by_shard = [set(found[index, "a"]["miner_names"]) for index in range(1, SHARDS + 1)]
    assert sum(len(names) for names in polled_by_shard) == len(fleet)
    assert set().union(*polled_by_shard) == {m.name for m in fleet}

    # a. Counted at the miners over a few cycles: each is asked once per cycle by each
    # replica of its shard and by nobody else. A cycle straddling either end of the
    # window may be counted on one side only: one poll per replica per end.
    fleet.reset_counters()
    before = {key: doc["cycles"] for key, doc in (await documents(started)).items()}

    async def five_more() -> bool:
        now = await documents(started)
        return all(doc is not None and doc["cycles"] >= before[key] + 5 for key, doc in now.items())

    await until("five more cycles of every instance", five_more, 15.0, context=context)
    polls = {m.name: m.commands.get("summary", 0) for m in fleet}
    after = {key: doc["cycles"] for key, doc in (await documents(started)).items()}
    for index, names in members.items():
        cycles = sum(after[index, r] - before[index, r] for r in REPLICAS)
        for name in names:
            assert abs(polls[name] - cycles) <= 2 * len(REPLICAS), (name, polls, cycles)
    print(
        f"\nb after a by {[round(o, 2) for o in offsets]} s; polls per miner over the window: "
        f"{polls}; cycles: {before} -> {after}"
    )

    # c. A dead device in shard 1: one firing and one resolved notification from the
    # Alertmanager cluster, one restart by the leader, direct notifications from the
    # leader only.
    first, second = members[1][:2]
    dead = break_device(fleet, first)
    await until("the restart", lambda: dead.restarts >= 1, EVENT_S, context=context)
    for sink, path in ((am_sink, AM_HOOK), (direct_sink, DIRECT_HOOK)):
        for status in ("firing", "resolved"):
            await until(
                f"{status} DeviceDead {first} at {path}",
                arrived(sink, path, first, status),
                EVENT_S,
                context=context,
            )

    def once(miner_name: str, restarts: Callable[[], int]) -> bool:
        return (
            restarts() == 1
            and am_sink.count(AM_HOOK, "DeviceDead", miner_name, "firing") == 1
            and am_sink.count(AM_HOOK, "DeviceDead", miner_name, "resolved") == 1
        )

    await stays(
        f"one restart, one firing and one resolved notification for {first}",
        lambda: once(first, lambda: dead.restarts)
        and direct_sink.count(DIRECT_HOOK, "DeviceDead", first, "firing") == 1
        and direct_sink.count(DIRECT_HOOK, "DeviceDead", first, "resolved") == 1,
        QUIET_S,
        context=lambda: f"{am_sink.notices(AM_HOOK)}\n{direct_sink.notices(DIRECT_HOOK)}",
    )
    senders = {n.sender for n in am_sink.notices(AM_HOOK, miner=first)}
    assert len(senders) == 1 and senders <= set(am_cluster.urls), senders

    # d. kill -9 shard 1's leader: b leads within three intervals (plus scheduling
    # slack), and repairs the next failure in shard 1, once.
    leader, follower = started[1, "a"], started[1, "b"]
    last_push = await asyncio.to_thread(
        am_cluster.heartbeat_pushed_at, f"1/{SHARDS}", "a", LIFETIME_S
    )
    leader.kill()
    killed_at, killed_wall = time.monotonic(), time.time()

    async def follower_leads() -> bool:
        return bool(await follower.field("role") == "leader")

    await until("replica b to take over shard 1", follower_leads, 10 * INTERVAL_S, context=context)
    takeover_s = time.monotonic() - killed_at
    since_push = None if last_push is None else killed_wall + takeover_s - last_push
    print(
        f"takeover: b leads {takeover_s:.2f} s after kill -9 of a "
        f"({takeover_s / INTERVAL_S:.2f} intervals); "
        f"{'?' if since_push is None else f'{since_push:.2f}'} s after a's last heartbeat"
    )
    assert takeover_s <= 3 * INTERVAL_S + 2.0, takeover_s
    await wait_roles(started, {(2, "a"): "leader", (2, "b"): "follower"}, 5.0)

    dead_again = break_device(fleet, second)
    await until("b's restart", lambda: dead_again.restarts >= 1, EVENT_S, context=context)
    for status in ("firing", "resolved"):
        await until(
            f"{status} DeviceDead {second} at the Alertmanager sink",
            arrived(am_sink, AM_HOOK, second, status),
            EVENT_S,
            context=context,
        )
    await until(
        "b's direct notification",
        lambda: direct_sink.count(DIRECT_HOOK, "DeviceDead", second, "firing"),
        EVENT_S,
        context=context,
    )
    await stays(
        f"one restart (by b) and one notification of each kind for {second}",
        lambda: once(second, lambda: dead_again.restarts)
        and direct_sink.count(DIRECT_HOOK, "DeviceDead", second, "firing") == 1,
        QUIET_S,
        context=lambda: f"{am_sink.notices(AM_HOOK)}\n{direct_sink.notices(DIRECT_HOOK)}",
    )
    document = await follower.document()
    assert document is not None
    assert [(a["miner"], a["action"]) for a in document["actions"] if a["outcome"] == "succeeded"] == [
        (second, "restart")
    ], document["actions"]

    # e. SIGKILL the Alertmanager peer that has been sending: the other one notifies a
    # new failure (in shard 2, both replicas alive), once.
    (sender,) = {n.sender for n in am_sink.notices(AM_HOOK, miner=second)}
    victim = next(p for p in am_cluster.peers if p.url == sender)
    survivor = next(p for p in am_cluster.peers if p is not victim)
    victim.kill()
    third = members[2][0]
    dead_third = break_device(fleet, third)
    for status in ("firing", "resolved"):
        await until(
            f"{status} DeviceDead {third} from the surviving peer",
            arrived(am_sink, AM_HOOK, third, status),
            EVENT_S,
            context=context,
        )
    await stays(
        f"one firing and one resolved notification for {third}",
        lambda: once(third, lambda: dead_third.restarts),
        QUIET_S,
        context=lambda: f"{am_sink.notices(AM_HOOK)}",
    )
    assert {n.sender for n in am_sink.notices(AM_HOOK, miner=third)} == {survivor.url}
    assert all(instance.running for instance in instances if instance is not leader)
    print(f"cluster test: {time.monotonic() - began:.1f} s")


# -- leadership edges: one shard, two replicas, one Alertmanager ----------------------------


@pytest.fixture
async def lone_am(tmp_path: Path, am_sink: Sink) -> AsyncIterator[AlertmanagerCluster]:
    cluster = AlertmanagerCluster.start(tmp_path, am_sink.base_url + AM_HOOK, size=1)
    try:
        await cluster.formed()
        yield cluster
    finally:
        cluster.stop()


def write_pair_config(path: Path, fleet: Fleet, am_url: str, state_dir: Path) -> Path:
    """One shard for two replicas (given by --replica), no rules: only roles matter."""
    path.write_text(
        f"""\
poll: {{interval: {INTERVAL_S:g}s, timeout: 600ms, connect_timeout: 300ms, jitter: 0%}}
state_dir: {state_dir}
miners:
{miner_lines(fleet)}receivers:
  - name: am
    alertmanager: {{urls: ["{am_url}"], timeout: 1s}}
route: {{receiver: am}}
cluster: {{alertmanager: am}}
"""
    )
    return path


async def role(instance: Instance) -> str | None:
    found = await instance.field("role")
    return None if found is None else str(found)


@needs_alertmanager
async def test_a_leader_dying_right_after_its_push_is_replaced_within_three_intervals(
    tmp_path: Path, lone_am: AlertmanagerCluster, fleet: Fleet, instances: list[Instance]
) -> None:
    began = time.monotonic()
    config = write_pair_config(tmp_path / "pair.yaml", fleet, lone_am.urls[0], tmp_path / "s")
    leader = Instance.start(config, tmp_path, "a", replica="a")
    follower = Instance.start(config, tmp_path, "b", replica="b")
    instances += [leader, follower]

    async def settled() -> bool:
        return await role(leader) == "leader" and await role(follower) == "follower"

    await until("a to lead and b to follow", settled, START_S, context=lambda: logs_of(instances))

    # The worst case the design must cover: b checks the heartbeats just *before* a's
    # last one expires, so only its next check sees a gone. Put b's cycles 0.6
    # interval after a's, then kill a right after one of its pushes.
    offset_s = await lone_am.align_phase(
        follower, "1/1", "a", "b", offset_s=0.6 * INTERVAL_S, interval_s=INTERVAL_S,
        lifetime_s=LIFETIME_S,
    )  # fmt: skip
    await until("b to follow again", lambda: _is(role(follower), "follower"), 5.0)

    last_push = await lone_am.next_push("1/1", "a", LIFETIME_S, time.time())
    leader.kill()
    killed_at = time.monotonic()
    killed_after_push_s = time.time() - last_push
    await until("b to take over", lambda: _is(role(follower), "leader"), 10 * INTERVAL_S)
    takeover_s = time.monotonic() - killed_at
    print(
        f"\nworst-case takeover: b's cycles {offset_s:.2f} s after a's; a killed "
        f"{killed_after_push_s:.2f} s after its last push; b leads {takeover_s:.2f} s after "
        f"the kill ({takeover_s / INTERVAL_S:.2f} intervals); test {time.monotonic() - began:.1f} s"
    )
    assert takeover_s <= 3 * INTERVAL_S + 0.25


@needs_alertmanager
async def test_a_joining_replica_never_leads_alongside_the_incumbent(
    tmp_path: Path, lone_am: AlertmanagerCluster, fleet: Fleet, instances: list[Instance]
) -> None:
    began = time.monotonic()
    config = write_pair_config(tmp_path / "pair.yaml", fleet, lone_am.urls[0], tmp_path / "s")
    incumbent = Instance.start(config, tmp_path, "b", replica="b")
    instances.append(incumbent)
    await until("b to lead alone", lambda: _is(role(incumbent), "leader"), START_S)
    await lone_am.next_push("1/1", "b", LIFETIME_S, time.time())

    joining = Instance.start(config, tmp_path, "a", replica="a")
    instances.append(joining)
    both_since: float | None = None
    both_s = 0.0

    async def handed_over() -> bool:
        nonlocal both_since, both_s
        # a first: once a leads it stays leader, so "b leads" read after it means both.
        a_role = await role(joining) if joining.running else None
        b_role = await role(incumbent)
        now = time.monotonic()
        if a_role == "leader" and b_role == "leader":
            both_since = now if both_since is None else both_since
            both_s = now - both_since
        return a_role == "leader" and b_role == "follower"

    await until("a to take over from b", handed_over, START_S, context=lambda: logs_of(instances))
    print(
        f"\njoin: both replicas reported leader for {both_s:.2f} s"
        f"{'' if both_since is None else ' (at least)'}; test {time.monotonic() - began:.1f} s"
    )
    assert both_since is None, f"two leaders for {both_s:.2f} s"


async def _is(value: Any, expected: object) -> bool:
    return bool(await value == expected)


# -- the dead man's switch -----------------------------------------------------------------


async def test_heartbeat_pings_after_good_cycles_and_stop_with_the_daemon(
    tmp_path: Path, fleet: Fleet, ping_sink: Sink, instances: list[Instance]
) -> None:
    began = time.monotonic()
    secret = uuid.uuid4().hex
    config = tmp_path / "cgwatchdog.yaml"
    config.write_text(
        f"""\
poll: {{interval: {INTERVAL_S:g}s, timeout: 600ms, connect_timeout: 300ms, jitter: 0%}}
state_dir: {tmp_path / "state"}
miners:
{miner_lines(fleet)}heartbeat: {{url: "{ping_sink.base_url}/ping/{secret}", interval: {INTERVAL_S:g}s, timeout: 2s}}
"""
    )
    # The heartbeat interval equals the poll interval: a ping after every cycle (the
    # daemon allows half an interval of early, so cycles' spread skips none).
    daemon = Instance.start(config, tmp_path, "solo", global_flags=["--debug"])
    instances.append(daemon)

    async def cycles() -> int:
        found = await daemon.field("cycles")
        return int(found or 0)

    await until("six cycles", lambda: _at_least(cycles, 6), START_S, context=daemon.text)
    pings_now, cycles_now = len(ping_sink.gets("/ping/")), await cycles()
    assert abs(pings_now - cycles_now) <= 1, (pings_now, cycles_now)
    assert {path for path, _ in ping_sink.gets()} == {f"/ping/{secret}"}

    assert await daemon.terminate() == 0
    stopped_at = time.monotonic()
    pings = len(ping_sink.gets("/ping/"))
    await stays(
        "no ping after the exit",
        lambda: len(ping_sink.gets("/ping/")) == pings,
        3 * INTERVAL_S,
    )
    # --debug: urllib3 logs each request line, which the redacting filter must scrub.
    stderr = daemon.text()
    assert secret not in stderr and "/ping/" not in stderr, stderr
    assert f'"GET {REDACTED} HTTP/1.1" 200' in stderr
    last_ping = max(at for _, at in ping_sink.gets("/ping/"))
    print(
        f"\nheartbeat: {pings} pings for {cycles_now}+ cycles; last ping "
        f"{stopped_at - last_ping:.2f} s before the exit; test {time.monotonic() - began:.1f} s"
    )


async def _at_least(read: Any, count: int) -> bool:
    return bool(await read() >= count)

