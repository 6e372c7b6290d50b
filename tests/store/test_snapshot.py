"""A snapshot of the registry while another process writes it: one committed moment, the source untouched."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from lepton_ai.store import Registry
from lepton_ai.store.snapshot import snapshot


def test_a_snapshot_has_what_was_committed_and_nothing_in_flight(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    for i in range(3):
        registry.start_run("train", {"i": i})
    # a writer mid-transaction: its run must not be in the copy
    writer = sqlite3.connect(tmp_path / "registry.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute(
        "INSERT INTO runs (kind, name, params, status, created_at) VALUES ('x', '', '{}', 'running', 0)"
    )
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "lepton_ai.store.snapshot",
                str(tmp_path / "registry.db"),
                str(tmp_path / "copy.db"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert done.returncode == 0, done.stderr
    copy = Registry(f"sqlite:///{tmp_path / 'copy.db'}")
    assert [r.params["i"] for r in copy.list_runs()] == [2, 1, 0]
    assert not list(tmp_path.glob(".copy.db.part"))


def test_a_snapshot_replaces_an_older_copy(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    registry.start_run("train", {})
    snapshot(tmp_path / "registry.db", tmp_path / "copy.db")
    registry.start_run("train", {})
    snapshot(tmp_path / "registry.db", tmp_path / "copy.db")
    assert len(Registry(f"sqlite:///{tmp_path / 'copy.db'}").list_runs()) == 2
