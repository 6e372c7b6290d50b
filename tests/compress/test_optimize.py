from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from lepton_ai import LeptonModel  # noqa: E402
from lepton_ai.compress import optimize  # noqa: E402
from lepton_ai.data import load  # noqa: E402
from lepton_ai.errors import InvalidInputError  # noqa: E402


def test_search_picks_the_fastest_candidate_within_the_drop(trained: LeptonModel, tmp_path: Path) -> None:
    test, train = load("digits", "test"), load("digits", "train")
    result = optimize(trained, test, calib_data=load("digits", "val"), train_data=train, max_accuracy_drop=0.02,
                      workdir=tmp_path / "work", progress=False)
    r = result.report
    base, trials = r["baseline"], r["trials"]
    assert len(trials) >= 8 and any(t["recipe"].get("prune") for t in trials)
    accepted = [t for t in trials if t["accepted"]]
    assert r["best"]["throughput_per_s"] == max(t["throughput_per_s"] for t in accepted)  # the fastest, not the first
    for t in trials[1:]:
        too_lossy = base["accuracy"] - t["accuracy"] > 0.02
        slower = t["throughput_per_s"] < base["throughput_per_s"]
        assert t["accepted"] == (not too_lossy and not slower), t
        assert t["accepted"] or t["reason"]
    assert r["speedup"] >= 1.0 and r["accuracy_drop"] <= 0.02
    assert r["speedup"] == pytest.approx(r["best"]["throughput_per_s"] / base["throughput_per_s"])
    assert torch.equal(result.best(test.features[:5]).argmax(-1), result.best(test.features[:5]).argmax(-1))
    out = result.save(tmp_path / "report")
    doc = json.loads((out / "report.json").read_text())
    for key in ("machine", "baseline", "best", "speedup", "size_reduction", "accuracy_drop", "trials"):
        assert key in doc
    assert {"accuracy", "size_bytes", "latency_ms_p50", "latency_ms_p99", "throughput_per_s", "recipe"} <= set(doc["best"])
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| candidate |" in (out / "report.md").read_text()


def test_size_objective_and_bad_input(trained: LeptonModel, tmp_path: Path) -> None:
    test = load("digits", "test")
    r = optimize(trained, test, objective="size", max_accuracy_drop=0.02, workdir=tmp_path, progress=False).report
    accepted = [t for t in r["trials"] if t["accepted"]]
    assert r["best"]["size_bytes"] == min(t["size_bytes"] for t in accepted)
    assert r["size_reduction"] > 2.5  # int8 weights
    with pytest.raises(InvalidInputError, match="objective"):
        optimize(trained, test, objective="cost")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="max_accuracy_drop"):
        optimize(trained, test, max_accuracy_drop=-0.1)
    with pytest.raises(InvalidInputError, match="classes"):
        optimize(trained, load("iris", "test"))
