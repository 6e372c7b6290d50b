"""`lepton data add` killed at random moments: never a version without its records, and the next add works."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from lepton_ai.data import load
from lepton_ai.data.ingest import add
from lepton_ai.store.datasets import Datasets


def test_a_killed_add_leaves_whole_versions_or_none(digit_folder: Path, lepton_home: Path) -> None:
    command = [sys.executable, "-m", "lepton_ai.cli.main", "data", "add", "d", str(digit_folder), "--json"]
    env = {**os.environ, "LEPTON_HOME": str(lepton_home)}
    start = time.monotonic()
    subprocess.run(command, env=env, check=True, capture_output=True)
    span = time.monotonic() - start
    rng = random.Random(0)
    for _ in range(6):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.0) * span)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    datasets = Datasets()
    # every version that landed is whole: its manifest and every pack it names read back, sha256 checked
    for version in datasets.list_versions("d"):
        assert len(load(version.ref).labels) == 300
    final = add("d", str(digit_folder))
    assert final.records == 300 and final.stats["new_records"] == 0
