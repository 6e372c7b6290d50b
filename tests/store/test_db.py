"""The registry database's transactions: writers queue for the lock, readers wait for nobody."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from sqlalchemy.engine import make_url

from lepton_ai.jobs.queue import JobQueue
from lepton_ai.store import Registry, Services


def test_reads_go_on_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    registry = Registry()
    registry.register("digits", _file(tmp_path))
    run = registry.start_run("train", {})
    writer = sqlite3.connect(str(make_url(registry.db_url).database), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        answers: list[object] = []

        def read() -> None:
            answers.extend(
                [
                    registry.get("digits").ref,
                    len(registry.list_models()),
                    registry.get_run(run.id).id,
                    JobQueue().list(),
                    Services().list(),
                ]
            )

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # a read that took the write lock would wait for the writer (up to the 60 s busy timeout)
        reader.join(timeout=20)
        assert not reader.is_alive() and answers == ["digits:1", 1, run.id, [], []]
        # a write still waits its turn: the lock is the writer's until it commits
        late = threading.Thread(target=lambda: registry.log_metrics(run.id, {"loss": 1.0}), daemon=True)
        late.start()
        late.join(timeout=0.5)
        assert late.is_alive()
    finally:
        writer.execute("COMMIT")
        writer.close()
    late.join(timeout=20)
    assert registry.get_run(run.id).metrics == {"loss": 1.0}


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "weights.bin"
    path.write_text("w")
    return path
