"""Durable state in one sqlite file: engine state, the notification outbox, the action log.

Everything the watchdog must not forget across a restart or ``kill -9`` lives here:

- ``state``: JSON documents by key (alert states and the notification log, rule
  history and baselines, action safeguards), written once per cycle in one transaction;
  ``state_rows`` beside it holds what is kept a record per miner (the rule history), so
  that a large fleet's is never one JSON text in memory;
- ``outbox``: every notification, written *before* it is sent and deleted only once it
  is delivered (at-least-once), with attempts, the next attempt time and the last error;
- ``actions``: every remediation and its outcome.

sqlite runs in WAL mode: a crash of the process (kill -9) loses nothing committed, and
readers (``cgwatchdog status``) never block the daemon. Any sqlite failure (disk full,
read-only file, locked database) becomes :class:`~cgwatchdog.errors.StoreError`, so the
daemon can keep alerting from memory, say so loudly, and retry.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cgwatchdog.errors import StoreError

__all__ = ["CACHE_KIB", "ActionRecord", "OutboxItem", "Store"]

SCHEMA_VERSION = 1

CACHE_KIB: Final = 512
"""sqlite's page cache for the state file, in KiB (sqlite's own default is 2,000). The
file is written in large sequential transactions (the rule history, every 5 minutes)
and read back at start, where a larger cache saves nothing: saving and loading the
history of 10,000 miners grew the process by 1.3 MB with the default and by 0.1 MB with
this, for the same CPU (``benchmarks/statefile.py``)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL, saved_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS state_rows (
    key TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (key, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver TEXT NOT NULL,
    group_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    miner TEXT NOT NULL,
    alertname TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS actions_miner ON actions (miner, at);
"""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One notification waiting for delivery."""

    id: int
    receiver: str
    group_key: str
    payload: dict[str, Any]
    created_at: float
    next_attempt_at: float
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One remediation step and what came of it."""

    id: int
    at: float
    miner: str
    alertname: str
    action: str
    outcome: str
    detail: str


class Store:
    """The sqlite state file; one per daemon (``state_dir/cgwatchdog.sqlite``)."""

    def __init__(
        self, path: str | Path, *, timeout_s: float = 5.0, cache_kib: int = CACHE_KIB
    ) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        with self._errors("open"):
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # The outbox delivers from a worker thread; one lock serialises every use.
            self._db = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a crash of the process (the WAL is in the OS cache);
            # only a power loss may drop the last transaction.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")  # negative: KiB
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def close(self) -> None:
        """Close the file (pending transactions are already committed)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            with self._lock:
                yield
        except sqlite3.Error as exc:
            raise StoreError(f"state file {self.path}: cannot {doing}: {exc}") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several writes into one atomic commit (nested: part of the outer one)."""
        with self._errors("write"):
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- state documents ----------------------------------------------------------------

    def save_state(self, key: str, value: Mapping[str, Any], now: float) -> None:
        """Replace the JSON document stored under ``key``."""
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        with self._errors("save state"):
            self._db.execute(
                "INSERT INTO state (key, value, saved_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, saved_at = excluded.saved_at",
                (key, text, now),
            )

    def load_state(self, key: str) -> dict[str, Any] | None:
        """The document saved under ``key``, or None."""
        with self._errors("read state"):
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except json.JSONDecodeError:
            raise StoreError(f"state file {self.path}: document {key!r} is corrupt") from None
        return value if isinstance(value, dict) else None

    def save_rows(self, key: str, rows: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Replace the records stored under ``key``, a JSON document each, encoded and
        written one at a time (in the caller's transaction, if any)."""
        encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
        with self.transaction(), self._errors("save state"):
            self._db.execute("DELETE FROM state_rows WHERE key = ?", (key,))
            self._db.executemany(
                "INSERT INTO state_rows (key, name, value) VALUES (?, ?, ?)",
                ((key, name, encode(value)) for name, value in rows),
            )

    def load_rows(self, key: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The records saved under ``key``, read and decoded one at a time."""
        with self._errors("read state"):
            cursor = self._db.execute(
                "SELECT name, value FROM state_rows WHERE key = ? ORDER BY name", (key,)
            )
            for name, text in cursor:
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise StoreError(
                        f"state file {self.path}: record {name!r} of {key!r} is corrupt"
                    ) from None
                if not isinstance(value, dict):
                    raise StoreError(
                        f"state file {self.path}: record {name!r} of {key!r} is not an object"
                    )
                yield name, value

    # -- outbox -------------------------------------------------------------------------

    def enqueue(self, receiver: str, group_key: str, payload: Mapping[str, Any], now: float) -> int:
        """Write a notification to the outbox before any attempt to send it."""
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        with self._errors("queue a notification"):
            cursor = self._db.execute(
                "INSERT INTO outbox (receiver, group_key, payload, created_at, next_attempt_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (receiver, group_key, text, now, now),
            )
        return int(cursor.lastrowid or 0)

    def due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        """Notifications whose next attempt is due, oldest first."""
        with self._errors("read the outbox"):
            rows = self._db.execute(
                "SELECT id, receiver, group_key, payload, created_at, next_attempt_at, attempts, "
                "last_error FROM outbox WHERE next_attempt_at <= ? ORDER BY id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [self._item(row) for row in rows]

    def pending(self) -> list[OutboxItem]:
        """Every undelivered notification, oldest first."""
        with self._errors("read the outbox"):
            rows = self._db.execute(
                "SELECT id, receiver, group_key, payload, created_at, next_attempt_at, attempts, "
                "last_error FROM outbox ORDER BY id"
            ).fetchall()
        return [self._item(row) for row in rows]

    @staticmethod
    def _item(row: tuple[Any, ...]) -> OutboxItem:
        return OutboxItem(
            id=row[0], receiver=row[1], group_key=row[2], payload=json.loads(row[3]),
            created_at=row[4], next_attempt_at=row[5], attempts=row[6], last_error=row[7],
        )  # fmt: skip

    def delivered(self, item_id: int) -> None:
        """The notification arrived: remove it."""
        with self._errors("update the outbox"):
            self._db.execute("DELETE FROM outbox WHERE id = ?", (item_id,))

    def retry_later(
        self, item_id: int, next_attempt_at: float, error: str, *, attempts: int | None = None
    ) -> None:
        """Record a failed attempt and when to try again; ``attempts`` sets the count of
        attempts so far (default: one more than stored)."""
        with self._errors("update the outbox"):
            self._db.execute(
                "UPDATE outbox SET attempts = COALESCE(?, attempts + 1), next_attempt_at = ?, "
                "last_error = ? WHERE id = ?",
                (attempts, next_attempt_at, error, item_id),
            )

    def drop(self, item_id: int) -> None:
        """Give up on a notification (expired, or refused for good)."""
        self.delivered(item_id)

    def oldest_pending(self) -> dict[str, float]:
        """Per receiver, when its oldest undelivered notification was queued."""
        with self._errors("read the outbox"):
            rows = self._db.execute(
                "SELECT receiver, MIN(created_at) FROM outbox GROUP BY receiver"
            ).fetchall()
        return {str(receiver): float(at) for receiver, at in rows}

    def outbox_depth(self) -> int:
        """How many notifications wait for delivery."""
        with self._errors("read the outbox"):
            row = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(row[0])

    # -- action log ---------------------------------------------------------------------

    def record_action(
        self, at: float, miner: str, alertname: str, action: str, outcome: str, detail: str = ""
    ) -> int:
        """Append one remediation step to the log."""
        with self._errors("log an action"):
            cursor = self._db.execute(
                "INSERT INTO actions (at, miner, alertname, action, outcome, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (at, miner, alertname, action, outcome, detail),
            )
        return int(cursor.lastrowid or 0)

    def actions(
        self, *, since: float = 0.0, miner: str | None = None, limit: int = 1000
    ) -> list[ActionRecord]:
        """Logged actions, newest last."""
        query = (
            "SELECT id, at, miner, alertname, action, outcome, detail FROM actions WHERE at >= ?"
        )
        params: list[Any] = [since]
        if miner is not None:
            query += " AND miner = ?"
            params.append(miner)
        query += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._errors("read the action log"):
            rows = self._db.execute(query, params).fetchall()
        return [ActionRecord(*row) for row in reversed(rows)]

    def prune_actions(self, before: float) -> None:
        """Forget actions older than ``before`` (the log is kept for a bounded time)."""
        with self._errors("prune the action log"):
            self._db.execute("DELETE FROM actions WHERE at < ?", (before,))
