from __future__ import annotations

import math
import os
import posixpath
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from lepton_ai.errors import IntegrityError, InvalidInputError, NotFoundError
from lepton_ai.store import Registry, sha256_of


@pytest.fixture
def registry(db_url: str, lepton_home: Path) -> Registry:
    return Registry(db_url=db_url, artifacts_url=str(lepton_home / "artifacts"))


def _file(tmp_path: Path, name: str = "m.safetensors", size: int = 256) -> Path:
    p = tmp_path / name
    p.write_bytes(os.urandom(size))
    return p


def test_versions_increment_and_refs_resolve(registry: Registry, tmp_path: Path) -> None:
    a = registry.register(
        "digits",
        _file(tmp_path, "a.safetensors"),
        metrics={"accuracy": 0.97},
        description="digits classifier",
        tags=["vision"],
    )
    b = registry.register("digits", _file(tmp_path, "b.onnx"), parent="digits:1", recipe={"quantize": "int8"})
    assert (a.version, b.version) == (1, 2)
    assert registry.get("digits") == b == registry.get("digits:latest")
    assert registry.get("digits:1") == a
    assert a.metrics == {"accuracy": 0.97} and a.format == "safetensors" and a.size_bytes == 256
    assert b.parent == "digits:1" and b.recipe == {"quantize": "int8"} and b.format == "onnx"
    assert b.description == "digits classifier" and b.tags == ["vision"]
    assert registry.fetch("digits:1").read_bytes() == (tmp_path / "a.safetensors").read_bytes()
    [m] = registry.list_models()
    assert (m.name, m.latest_version, m.num_versions) == ("digits", 2, 2)
    assert [v.version for v in registry.list_versions("digits")] == [1, 2]


def test_unknown_things_are_clear_errors_and_write_nothing(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="unknown model 'nope'"):
        registry.get("nope")
    registry.register("m", _file(tmp_path))
    with pytest.raises(NotFoundError, match="no version 7"):
        registry.get("m:7")
    with pytest.raises(NotFoundError, match="unknown model 'ghost'"):
        registry.register("m2", _file(tmp_path, "x.bin"), parent="ghost:1")
    with pytest.raises(InvalidInputError, match="NaN"):
        registry.register("m2", _file(tmp_path, "y.bin"), metrics={"loss": math.nan})
    with pytest.raises(InvalidInputError, match="invalid model name"):
        registry.register("../evil", _file(tmp_path, "z.bin"))
    assert [m.name for m in registry.list_models()] == ["m"]
    objects = registry.artifacts.fs.find(registry.artifacts.path("objects"))
    assert len(objects) == 1


def test_removed_versions_keep_numbers_and_shared_content(registry: Registry, tmp_path: Path) -> None:
    f = _file(tmp_path)
    v1 = registry.register("m", f)
    # same bytes: one object, two versions
    registry.register("m", f)
    registry.register("m", _file(tmp_path, "other.bin"))
    assert [v.ref for v in registry.remove("m:3")] == ["m:3"]
    # 3 is never reused
    assert registry.register("m", _file(tmp_path, "n.bin")).version == 4
    registry.remove("m:1")
    # still used by m:2
    assert registry.artifacts.exists(v1.key)
    registry.remove("m:2")
    assert not registry.artifacts.exists(v1.key)
    gone = registry.remove("m")
    assert [v.ref for v in gone] == ["m:4"]
    assert registry.list_models() == []
    assert registry.artifacts.fs.find(registry.artifacts.path("objects")) == []


def test_parent_link_is_cleared_when_the_parent_goes(registry: Registry, tmp_path: Path) -> None:
    registry.register("base", _file(tmp_path))
    registry.register("small", _file(tmp_path, "s.onnx"), parent="base")
    registry.remove("base")
    assert registry.get("small").parent is None


def test_runs_record_metrics_over_steps(registry: Registry, tmp_path: Path) -> None:
    run = registry.start_run("train", {"lr": 0.001, "epochs": 2}, name="digits")
    assert run.status == "running" and run.params == {"lr": 0.001, "epochs": 2}
    for step, (loss, acc) in enumerate([(1.0, 0.5), (0.4, 0.9)]):
        registry.log_metrics(run.id, {"loss": loss, "accuracy": acc}, step=step)
    done = registry.end_run(run.id, "completed", logs_uri="runs/1/log.txt")
    assert done.status == "completed" and done.ended_at is not None and done.logs_uri == "runs/1/log.txt"
    assert done.metrics == {"loss": 0.4, "accuracy": 0.9}
    assert done.history["loss"] == [(0, 1.0), (1, 0.4)]
    v = registry.register("digits", _file(tmp_path), run_id=run.id)
    assert v.run_id == run.id
    registry.start_run("optimize")
    assert [r.kind for r in registry.list_runs()] == ["optimize", "train"]
    assert [r.id for r in registry.list_runs(kind="train")] == [run.id]
    with pytest.raises(InvalidInputError, match="finite"):
        registry.log_metrics(run.id, {"loss": math.inf})
    with pytest.raises(InvalidInputError, match="a run ends as"):
        registry.end_run(run.id, "exploded")
    with pytest.raises(NotFoundError, match="unknown run 999"):
        registry.get_run(999)


def _statements(registry: Registry, fn: Callable[[], Any]) -> int:
    """Return how many SQL statements `fn()` sent."""
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2])

    event.listen(registry.engine, "before_cursor_execute", count)
    try:
        fn()
    finally:
        event.remove(registry.engine, "before_cursor_execute", count)
    return len(sent)


def test_lists_of_versions_cost_the_same_queries_however_long(registry: Registry, tmp_path: Path) -> None:
    """A version's parent (in another model) is loaded with the list, not with one query per version."""
    counts = []
    for n in (2, 6):
        for i in range(n):
            base = registry.register(f"base{n}-{i}", _file(tmp_path))
            registry.register(f"tuned{n}", _file(tmp_path), parent=base.ref)
        counts.append(
            (
                _statements(registry, lambda n=n: registry.list_versions(f"tuned{n}")),
                _statements(registry, lambda n=n: registry.list_versions(f"tuned{n}", limit=n)),
            )
        )
    assert counts[0] == counts[1]
    assert [v.parent for v in registry.list_versions("tuned6", limit=2)] == ["base6-5:1", "base6-4:1"]
    registry.register("tuned6", _file(tmp_path), parent="tuned6:1")
    assert [c.ref for c in registry.children("tuned6:1")] == ["tuned6:7"]


def test_the_versions_trained_on_a_dataset_version_are_found(registry: Registry, tmp_path: Path) -> None:
    first = registry.register("digits", _file(tmp_path), dataset="digits-data:1")
    registry.register("other", _file(tmp_path), dataset="digits-data:2")
    registry.register("digits", _file(tmp_path), parent=first.ref)
    tuned = registry.register("small", _file(tmp_path), parent=first.ref, dataset="digits-data:1")
    assert [v.ref for v in registry.trained_on("digits-data:1")] == [first.ref, tuned.ref]
    assert registry.trained_on("digits-data:3") == []


def test_a_run_as_a_dict_is_its_dataclass_as_a_dict(registry: Registry) -> None:
    run = registry.start_run("train", {"optimizer": {"name": "adamw", "betas": [0.9, 0.99]}})
    for step in range(3):
        registry.log_metrics(run.id, {"loss": 1.0 / (step + 1), "accuracy": 0.3 * step}, step=step)
    info = registry.get_run(run.id)
    assert info.to_dict() == asdict(info) and list(info.to_dict()) == list(asdict(info))
    assert info.history == {
        "loss": [(0, 1.0), (1, 0.5), (2, 1 / 3)],
        "accuracy": [(0, 0.0), (1, 0.3), (2, 0.6)],
    }


def test_concurrent_registration_in_threads(registry: Registry, tmp_path: Path) -> None:
    files = [_file(tmp_path, f"f{i}.bin", 64) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda f: registry.register("race", f).version, files))
    assert sorted(versions) == list(range(1, 17))
    assert [v.version for v in registry.list_versions("race")] == list(range(1, 17))


def test_same_bytes_under_other_names_are_each_fetched_and_kept(registry: Registry, tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    registry.register("x", a)
    registry.register("y", b)
    assert registry.fetch("x").name == "a.bin" and registry.fetch("y").name == "b.bin"
    registry.remove("x")
    assert registry.fetch("y").read_bytes() == b"same bytes"
    registry.remove("y")
    assert registry.artifacts.fs.find(registry.artifacts.path("objects")) == []


def test_removing_while_registering_the_same_bytes_never_loses_them(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = _file(tmp_path)
    delete = registry.artifacts.delete

    def slow_delete(key: str) -> None:
        # a slow store: a wide gap between deciding that an object is unused and its deletion
        time.sleep(0.005)
        delete(key)

    monkeypatch.setattr(registry.artifacts, "delete", slow_delete)
    deadline = time.monotonic() + 2.0

    def churn(name: str) -> list[str]:
        lost = []
        while time.monotonic() < deadline:
            v = registry.register(name, f)
            try:
                registry.fetch(v.ref)
            except (NotFoundError, IntegrityError) as e:
                lost.append(str(e))
            registry.remove(name)
        registry.register(name, f)
        return lost

    with ThreadPoolExecutor(2) as pool:
        assert [e for lost in pool.map(churn, ["a", "b"]) for e in lost] == []
    for name in ("a", "b"):
        for v in registry.list_versions(name):
            assert sha256_of(registry.fetch(v.ref)) == v.sha256 == sha256_of(f)


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_register_repairs_an_object_a_crash_left_half_copied(db_url: str, tmp_path: Path, kind: str) -> None:
    registry = Registry(db_url=db_url, artifacts_url=f"memory://lepton-test-{os.urandom(4).hex()}")
    src = _file(tmp_path, "w.bin", 4096)
    if kind == "directory":
        src = tmp_path / "hf"
        src.mkdir()
        for i in range(3):
            _file(src, f"part{i}.bin", 1024)
    stored = registry.artifacts.put(src)
    fs, full = registry.artifacts.fs, registry.artifacts.path(stored.key)
    # what a writer that died while copying leaves: some bytes, no word that it finished
    if kind == "directory":
        fs.rm(f"{full}/part1.bin")
    else:
        fs.pipe_file(full, fs.cat_file(full)[:100])
    for left in fs.ls(posixpath.dirname(full), detail=False):
        if posixpath.basename(left).startswith("."):
            fs.rm(left)
    v = registry.register("m", src)
    assert sha256_of(registry.fetch(v.ref)) == v.sha256 == stored.sha256


def test_update_metrics_merges_into_one_version(registry: Registry, tmp_path: Path) -> None:
    registry.register("m", _file(tmp_path, "a.bin"), metrics={"accuracy": 0.9, "throughput_per_s": 10.0})
    registry.register("m", _file(tmp_path, "b.bin"), metrics={"accuracy": 0.8})
    info = registry.update_metrics("m:1", {"throughput_per_s": 12.5, "serve_throughput_per_s": 11.0})
    assert info.ref == "m:1"
    assert info.metrics == {"accuracy": 0.9, "throughput_per_s": 12.5, "serve_throughput_per_s": 11.0}
    assert registry.get("m:1").metrics == info.metrics
    # the other version and the artifact are untouched
    assert registry.get("m:2").metrics == {"accuracy": 0.8}
    assert registry.fetch("m:1").read_bytes() == (tmp_path / "a.bin").read_bytes()
    # a bare NAME is the latest version
    assert registry.update_metrics("m", {"note": "x"}).metrics == {"accuracy": 0.8, "note": "x"}


def test_update_metrics_refuses_what_register_refuses(registry: Registry, tmp_path: Path) -> None:
    registry.register("m", _file(tmp_path), metrics={"accuracy": 0.9})
    for bad, says in [({"loss": math.nan}, "NaN"), ([1, 2], "JSON object"), ({"x": object()}, "JSON data")]:
        with pytest.raises(InvalidInputError, match=says):
            registry.update_metrics("m:1", bad)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="no version 3"):
        registry.update_metrics("m:3", {"a": 1})
    with pytest.raises(NotFoundError, match="unknown model 'ghost'"):
        registry.update_metrics("ghost:1", {"a": 1})
    assert registry.get("m:1").metrics == {"accuracy": 0.9}


def test_concurrent_metric_updates_all_land(registry: Registry, tmp_path: Path) -> None:
    registry.register("m", _file(tmp_path))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: registry.update_metrics("m:1", {f"k{i}": i}), range(16)))
    assert registry.get("m:1").metrics == {f"k{i}": i for i in range(16)}


def test_postgres_urls_map_to_psycopg3() -> None:
    from lepton_ai.store.db import normalize_url, safe_url

    assert normalize_url("postgresql://u:pw@h/db").startswith("postgresql+psycopg://u:pw@h")
    assert "pw" not in safe_url("postgresql+psycopg://u:pw@h/db")
    with pytest.raises(InvalidInputError, match="not a database URL"):
        normalize_url("not a url")
