"""Logging for the daemon: journald with fields when under systemd, else plain stderr.

- stderr is connected to the journal (``$JOURNAL_STREAM`` names its device and inode) and
  systemd-python is installed: records go through ``systemd.journal.JournalHandler`` and
  keep structured fields; ``extra={"MINER": ..., "ALERTNAME": ...}`` become journal
  fields, so ``journalctl -u cgwatchdog MINER=rack1-s9-01`` finds one miner's history.
- stderr is the journal without systemd-python: one line per record with the syslog
  priority prefix (``<4>``) journald reads; no timestamp, journald adds its own.
- otherwise (a terminal, a file, a container log): time, level and message.

Every record passes through :class:`RedactingFilter` on its way to the handler: the
message, its arguments, traceback and stack text are rendered and scrubbed of every
secret of the configuration (:meth:`cgwatchdog.config.Config.redact`) before any handler sees
them, so no secret reaches a log, whatever logger the record came from.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import Final, TextIO

from cgwatchdog.config import Config

__all__ = [
    "FIELD_ALERTNAME",
    "FIELD_MINER",
    "RedactingFilter",
    "setup_logging",
    "stderr_is_journal",
    "syslog_priority",
]

FIELD_MINER: Final = "MINER"
FIELD_ALERTNAME: Final = "ALERTNAME"
SYSLOG_IDENTIFIER: Final = "cgwatchdog"

_PLAIN_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_JOURNAL_FORMAT: Final = "%(message)s"
# Marks the handler setup_logging installed, so a second call replaces it.
_OURS: Final = "_cgwatchdog_handler"


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (journald's PRIORITY field)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def stderr_is_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (``$JOURNAL_STREAM``)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        stat = os.fstat(stream.fileno())
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        return False


class RedactingFilter(logging.Filter):
    """Renders each record's text and scrubs the configuration's secrets from it.

    Holds the current configuration and the one before it (a reload may leave an old
    receiver's message in flight); :meth:`set_config` moves them along.
    """

    def __init__(self) -> None:
        super().__init__()
        self._configs: tuple[Config, ...] = ()

    def set_config(self, config: Config) -> None:
        """Scrub ``config``'s secrets from now on (and the previous one's)."""
        self._configs = (config, *self._configs[:1])

    def scrub(self, text: str) -> str:
        """``text`` without any known secret."""
        for config in self._configs:
            text = config.redact(text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError) as exc:  # a bad format string is not worth a crash
            message = f"{record.msg!r} (unformattable: {exc})"
        record.msg = self.scrub(message)
        record.args = ()  # journald would otherwise get them raw as CODE_ARGS
        if record.exc_info is not None:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None  # only the scrubbed text goes on
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


class _PriorityFormatter(logging.Formatter):
    """``<4>message``: the sd-daemon(3) prefix journald reads from a stream."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{syslog_priority(record.levelno)}>"
        # Each line gets the prefix, or journald would log traceback lines as INFO.
        return "\n".join(prefix + line for line in text.splitlines() or [""])


def _journal_handler() -> logging.Handler | None:
    try:
        journal = importlib.import_module("systemd.journal")  # the [systemd] extra
    except ImportError:
        return None
    handler: logging.Handler = journal.JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
    return handler


def setup_logging(
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    use_journal: bool = True,
) -> RedactingFilter:
    """Install the daemon's log handler on the root logger; return its redacting filter.

    ``use_journal`` false keeps records on ``stream`` (default stderr) even under
    systemd. Calling it again replaces the handler it installed before.
    """
    out = sys.stderr if stream is None else stream
    journal = stderr_is_journal(out, environ)
    handler: logging.Handler | None = _journal_handler() if journal and use_journal else None
    if handler is None:
        handler = logging.StreamHandler(out)
        if journal:
            handler.setFormatter(_PriorityFormatter(_JOURNAL_FORMAT))
        else:
            handler.setFormatter(logging.Formatter(_PLAIN_FORMAT))
    redactor = RedactingFilter()
    handler.addFilter(redactor)
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return redactor
