"""Command-line flags that override the configuration file, and the shard's view of it.

Every instance of a sharded deployment reads one shared file; ``--shard``/``--replica``
(and, for the ``cgwatchdog@.service`` template, ``--state-dir``/``--listen``) say which
instance this is. :meth:`Overrides.apply` returns the configuration this instance runs:
the flags applied over the file, then only the miners its shard owns (``shard.select``).
The daemon applies the same overrides again to every configuration it reloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from cgwatchdog.config import ClusterConfig, Config, HttpConfig, Shard, parse_shard
from cgwatchdog.errors import ConfigError, ConfigProblem
from cgwatchdog.shard import select

__all__ = ["Overrides"]


@dataclass(frozen=True, slots=True)
class Overrides:
    """Values given on the command line; None leaves the file's value."""

    shard: Shard | None = None
    replica: str | None = None
    state_dir: Path | None = None
    listen: str | None = None

    @classmethod
    def from_flags(
        cls,
        *,
        shard: str | None = None,
        replica: str | None = None,
        state_dir: str | None = None,
        listen: str | None = None,
    ) -> Overrides:
        """Parse the flags' text; ConfigError naming the flag when one is malformed."""
        problems: list[ConfigProblem] = []
        parsed_shard: Shard | None = None
        if shard is not None:
            try:
                parsed_shard = parse_shard(shard)
            except ValueError as exc:
                problems.append(ConfigProblem("--shard", None, str(exc)))
        if listen is not None:
            try:
                HttpConfig(listen=listen)
            except ValidationError as exc:
                problems.append(ConfigProblem("--listen", None, _first_message(exc)))
        if replica is not None:
            try:
                ClusterConfig.model_validate({"replica": replica})
            except ValidationError as exc:
                problems.append(ConfigProblem("--replica", None, _first_message(exc)))
        if state_dir is not None and not state_dir.strip():
            problems.append(ConfigProblem("--state-dir", None, "must name a directory"))
        if problems:
            raise ConfigError(problems)
        return cls(
            shard=parsed_shard,
            replica=replica,
            state_dir=None if state_dir is None else Path(state_dir),
            listen=listen,
        )

    def apply(self, config: Config) -> Config:
        """The configuration this instance runs: flags over the file, the shard's miners.

        ConfigError when the result is inconsistent (``--replica`` without
        ``cluster.alertmanager`` to coordinate through).
        """
        cluster = config.cluster
        if self.shard is not None or self.replica is not None:
            cluster = cluster.model_copy(
                update={
                    "shard": cluster.shard if self.shard is None else self.shard,
                    "replica": cluster.replica if self.replica is None else self.replica,
                }
            )
        if cluster.replica is not None and cluster.alertmanager is None:
            raise ConfigError(
                [
                    ConfigProblem(
                        "--replica",
                        None,
                        "replicas coordinate through Alertmanager: set cluster.alertmanager "
                        "in the configuration to an alertmanager receiver listing every peer",
                    )
                ]
            )
        update: dict[str, object] = {
            "cluster": cluster,
            "miners": select(config.miners, cluster.shard),
        }
        if self.state_dir is not None:
            update["state_dir"] = self.state_dir
        if self.listen is not None:
            update["http"] = config.http.model_copy(update={"listen": self.listen})
        return config.model_copy(update=update)


def _first_message(exc: ValidationError) -> str:
    errors = exc.errors()
    return str(errors[0]["msg"]) if errors else str(exc)
