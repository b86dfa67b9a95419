"""Configuration: YAML files in, validated and typed settings out.

The package has three parts, each one thing::

    models.py   the sections as pydantic models (Config, MinerConfig, RouteConfig, ...),
                with the field types of fields.py and the addresses of hosts.py
    secrets.py  finding secrets in the models and scrubbing them from any text
    loader.py   files -> YAML nodes with their lines -> ${ENV} and *_file resolved ->
                models, one section or list item at a time -> cross checks -> Config;
                every problem collected and raised once, each with file:line

Rule types and receiver kinds declare their own models next to their code
(``cgwatchdog/rules/types/``, ``cgwatchdog/notify/receivers/``) and register them; the
loader builds the ``rules:`` and ``receivers:`` models from those registries, so it is
the one part that imports them. Reading the config does no network I/O and never reads
the clock. Import the loader as ``from cgwatchdog.config.loader import load_config``.
"""

from cgwatchdog.config.hosts import MAX_HOSTS_PER_RANGE, expand_hosts
from cgwatchdog.config.models import (
    ActionsConfig,
    AuthConfig,
    BasicAuth,
    BearerAuth,
    ClusterConfig,
    Config,
    Credentials,
    HeartbeatConfig,
    HttpConfig,
    MinerConfig,
    PollConfig,
    ReceiverConfig,
    RouteConfig,
    RuleAction,
    RuleBase,
    Shard,
    SilenceConfig,
    parse_shard,
)
from cgwatchdog.config.secrets import REDACTED, Redactor
from cgwatchdog.units import parse_duration, parse_hashrate, parse_ratio

__all__ = [
    "MAX_HOSTS_PER_RANGE",
    "REDACTED",
    "ActionsConfig",
    "AuthConfig",
    "BasicAuth",
    "BearerAuth",
    "ClusterConfig",
    "Config",
    "Credentials",
    "HeartbeatConfig",
    "HttpConfig",
    "MinerConfig",
    "PollConfig",
    "ReceiverConfig",
    "Redactor",
    "RouteConfig",
    "RuleAction",
    "RuleBase",
    "Shard",
    "SilenceConfig",
    "expand_hosts",
    "parse_duration",
    "parse_hashrate",
    "parse_ratio",
    "parse_shard",
]
