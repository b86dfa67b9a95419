"""``pool_stale``: the miner is not delivering shares to a pool it should.

Judged on the active pool: no accepted share for ``no_accepted_share_for``, too many
stale shares, or not Alive; no pool Alive at all (``pool="none"``); no pool configured
(``pool="none"``); mining on a backup because a higher-priority pool is down (signalled
on that pool, as a ``warning`` while the backup works: the miner is fine, and the
planner never switches it off a pool that accepts shares). One signal per pool, its
reasons joined in ``value``. Not judged without a pools reply.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from cgwatchdog.alerts import Signal
from cgwatchdog.config.fields import PositiveDuration, Ratio
from cgwatchdog.config.models import MinerConfig, RuleBase
from cgwatchdog.history import MinerHistory
from cgwatchdog.rules.base import CompiledRule, make_signal, rule_type
from cgwatchdog.snapshot import Snapshot
from cgwatchdog.units import format_duration, format_percent

__all__ = ["FAILOVER_SEVERITY", "PoolStaleRule", "eval_pool_stale"]

# cgminer API codes (api.c): MSG_NOPOOL "No pools".
_NO_POOLS_CODE: Final = 8
_NO_POOL_LABEL: Final = "none"
# The severity of "a higher-priority pool is down, the backup it failed over to works".
FAILOVER_SEVERITY: Final = "warning"


class PoolStaleRule(RuleBase):
    """No accepted share for a while, the active pool not Alive, or too many stales."""

    type: Literal["pool_stale"]
    no_accepted_share_for_s: PositiveDuration = Field(
        default=600.0, validation_alias="no_accepted_share_for"
    )
    """How long the active pool may go without an accepted share."""
    stale_above: Ratio | None = 0.05
    """The share of stale shares on the active pool above which the rule fires."""


@rule_type(PoolStaleRule)
def eval_pool_stale(
    rule: CompiledRule[PoolStaleRule],
    miner: MinerConfig,
    snapshot: Snapshot,
    history: MinerHistory,
    now: float,
) -> list[Signal] | None:
    """The active pool: no accepted share for too long, stale shares, not Alive; no pool
    Alive at all (``pool="none"``); mining on a backup because the primary is down
    (signalled on the primary). One signal per pool, its reasons joined in ``value``."""
    cfg = rule.config
    pools = snapshot.pools
    host = snapshot.host
    if not pools:
        refusal = snapshot.refused.get("pools")
        if refusal is not None and refusal.code == _NO_POOLS_CODE:
            return [make_signal(rule, miner, host, "no pool configured", ("pool", _NO_POOL_LABEL))]
        return None  # no pools reply: cannot judge
    if not any(pool.status == "Alive" for pool in pools):
        listing = ", ".join(f"pool {pool.id} {pool.status} ({pool.url})" for pool in pools)
        value = f"no pool is Alive: {listing}"
        return [make_signal(rule, miner, host, value, ("pool", _NO_POOL_LABEL))]
    active = snapshot.active_pool
    if active is None:
        return []
    signals: list[Signal] = []
    reasons: list[str] = []
    if active.status != "Alive":
        reasons.append(f"status {active.status}")
    limit = cfg.no_accepted_share_for_s
    age = active.last_share_age_s
    if age is not None:
        if age > limit:
            reasons.append(f"no accepted share for {format_duration(age)}")
    elif active.accepted == 0:
        # No share yet on this pool: count from when it became active (or the start).
        since = history.active_pool_since if history.active_pool_id == active.id else None
        waited = (now - since) if since is not None else snapshot.elapsed_s
        if waited is not None and waited > limit:
            reasons.append(f"no accepted share in {format_duration(waited)} on this pool")
    stale_ratio = active.stale_ratio
    if cfg.stale_above is not None and stale_ratio is not None and stale_ratio > cfg.stale_above:
        reasons.append(
            f"stale shares {format_percent(stale_ratio)} (above {format_percent(cfg.stale_above)})"
        )
    if reasons:
        value = f"pool {active.id} {active.url}: " + "; ".join(reasons)
        signals.append(make_signal(rule, miner, host, value, ("pool", str(active.id))))

    # Failover: mining on a backup because a better pool is down. While the backup works
    # (nothing wrong with the active pool) that is a notice, not a page: a warning.
    primary = active
    for pool in pools:
        if pool.status != "Disabled" and (pool.priority, pool.id) < (primary.priority, primary.id):
            primary = pool
    if primary.priority < active.priority and primary.status != "Alive":
        value = (
            f"pool {primary.id} {primary.url} is {primary.status}: mining on backup "
            f"pool {active.id} {active.url}"
        )
        severity = None if reasons else FAILOVER_SEVERITY
        signals.append(
            make_signal(rule, miner, host, value, ("pool", str(primary.id)), severity=severity)
        )
    return signals


