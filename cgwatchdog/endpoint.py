"""Where a running daemon answers, for the commands that talk to it (``status``,
``silence``, ``ack``): ``--url``, else the ``http.listen`` of ``-c CONFIG`` (or of the
service's config when it exists), else the default address."""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["DEFAULT_CONFIG", "DEFAULT_URL", "daemon_url"]

DEFAULT_CONFIG: Final = "/etc/cgwatchdog/config.yaml"
"""Where ``-c`` looks when not given (the service's config)."""
DEFAULT_URL: Final = "http://127.0.0.1:9841"
"""The default ``http.listen``, as a URL."""


def daemon_url(url: str | None, config: str | None) -> str:
    """The daemon's base URL, without a trailing slash. Only ``http:`` is read from the
    config, so a config whose secrets only the service can read still says where its
    daemon listens; ValueError for a ``url`` that is not http(s), ConfigError for an
    unreadable config or a bad ``http.listen``."""
    if url is not None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--url {url!r} is not an http:// URL")
        return url.rstrip("/")
    from cgwatchdog.config.loader import read_http_listen

    path = Path(config if config is not None else DEFAULT_CONFIG)
    if config is None and not path.exists():
        return DEFAULT_URL
    host, port = read_http_listen(path)
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
