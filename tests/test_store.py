"""The sqlite store: state documents, outbox and action log survive reopening."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cgwatchdog.errors import StoreError
from cgwatchdog.store import Store
from tests.conftest import unprivileged


def test_state_documents_round_trip_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = Store(path)
    store.save_state("alerts", {"a": [1, 2, {"b": "c"}]}, now=10.0)
    store.save_state("alerts", {"a": [3]}, now=11.0)
    assert store.load_state("alerts") == {"a": [3]}
    assert store.load_state("missing") is None
    store.close()
    assert Store(path).load_state("alerts") == {"a": [3]}


def test_outbox_order_retry_and_delivery(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    first = store.enqueue("chat", "g1", {"n": 1}, now=100.0)
    second = store.enqueue("mail", "g2", {"n": 2}, now=101.0)
    assert [item.id for item in store.due(now=101.0)] == [first, second]
    assert [item.id for item in store.due(now=100.5)] == [first]

    store.retry_later(first, next_attempt_at=200.0, error="HTTP 503")
    due = store.due(now=150.0)
    assert [item.id for item in due] == [second]
    (item,) = [i for i in store.pending() if i.id == first]
    assert item.attempts == 1 and item.last_error == "HTTP 503"
    assert item.payload == {"n": 1}

    store.delivered(second)
    assert store.outbox_depth() == 1
    assert [item.id for item in store.due(now=200.0)] == [first]


def test_action_log_filters_by_miner_and_time(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.record_action(10.0, "m1", "DeviceDead", "restart", "sent")
    store.record_action(20.0, "m2", "DeviceDead", "restart", "verified")
    store.record_action(30.0, "m1", "DeviceDead", "exec", "failed", "exit 3")
    assert [r.action for r in store.actions(miner="m1")] == ["restart", "exec"]
    assert [r.miner for r in store.actions(since=15.0)] == ["m2", "m1"]
    store.prune_actions(before=25.0)
    assert [r.at for r in store.actions()] == [30.0]


def test_committed_writes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    code = (
        "import os, signal\n"
        "from cgwatchdog.store import Store\n"
        f"s = Store({str(path)!r})\n"
        "s.enqueue('chat', 'g', {'n': 1}, now=1.0)\n"
        "s.save_state('k', {'v': 1}, now=1.0)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False)
    assert result.returncode == -9
    store = Store(path)
    assert store.outbox_depth() == 1
    assert store.load_state("k") == {"v": 1}


def test_read_only_file_raises_store_error() -> None:
    # Root ignores file permissions: the body runs as an unprivileged user then.
    def body(directory: Path) -> None:
        path = directory / "s.sqlite"
        Store(path).close()
        path.chmod(0o444)
        directory.chmod(0o555)
        try:
            with pytest.raises(StoreError):
                Store(path).save_state("k", {}, now=1.0)
        finally:
            directory.chmod(0o755)

    unprivileged(body)


def test_query_only_database_raises_store_error_with_path(tmp_path: Path) -> None:
    # Works as root too: sqlite refuses writes on a query_only connection.
    store = Store(tmp_path / "s.sqlite")
    store._db.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreError, match=r"s\.sqlite: cannot queue a notification"):
        store.enqueue("chat", "g", {}, now=1.0)


def test_corrupt_document_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO state (key, value, saved_at) VALUES ('k', '{not json', 0)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="corrupt"):
        Store(path).load_state("k")


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(RuntimeError), store.transaction():
        store.enqueue("chat", "g", {}, now=1.0)
        raise RuntimeError("boom")
    assert store.outbox_depth() == 0


def test_usable_from_worker_threads(tmp_path: Path) -> None:
    # The outbox delivers from worker threads while the loop enqueues.
    import threading

    store = Store(tmp_path / "s.sqlite")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                store.enqueue("chat", f"g{n}", {"i": i}, now=float(i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert store.outbox_depth() == 200


def test_nested_transactions_commit_once_with_the_outer(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(RuntimeError), store.transaction():
        with store.transaction():
            store.enqueue("chat", "g", {}, now=1.0)
        raise RuntimeError("outer fails after the inner finished")
    assert store.outbox_depth() == 0
    with store.transaction():
        with store.transaction():
            store.enqueue("chat", "g", {}, now=1.0)
        store.save_state("k", {"v": 1}, now=1.0)
    assert store.outbox_depth() == 1 and store.load_state("k") == {"v": 1}
