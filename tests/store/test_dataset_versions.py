"""Datasets in the registry, on SQLite and PostgreSQL: versions numbered in order, one format per dataset."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.store.datasets import Datasets, NewVersion


def version(tmp_path: Path, records: int, fmt: str = "table") -> NewVersion:
    manifest = tmp_path / f"m{records}.parquet"
    manifest.write_bytes(b"manifest %d" % records)
    stats = {"classes": {"a": records}}
    return NewVersion(manifest, fmt, records, 10 * records, 0, stats, {"classes": ["a"]}, "s3://bucket/t.csv")


def test_versions_are_numbered_and_found(db_url: str, tmp_path: Path) -> None:
    datasets = Datasets(db_url)
    first = datasets.register("t", version(tmp_path, 5))
    second = datasets.register("t", version(tmp_path, 7))
    assert (first.ref, second.ref) == ("t:1", "t:2")
    assert datasets.get("t").ref == "t:2" and datasets.get("t:1").records == 5
    assert datasets.manifest(first).read_bytes() == b"manifest 5"
    # the manifest's bytes are what it stored beside the records' packs
    assert second.stored_bytes == len(b"manifest 7")
    [info] = datasets.list_datasets()
    assert (info.name, info.latest_version, info.num_versions, info.records) == ("t", 2, 2, 7)
    assert [v.version for v in datasets.list_versions("t")] == [1, 2]


def test_a_dataset_keeps_its_format_and_names_what_is_missing(db_url: str, tmp_path: Path) -> None:
    datasets = Datasets(db_url)
    datasets.register("t", version(tmp_path, 5))
    with pytest.raises(InvalidInputError, match="holds table records, not imagefolder"):
        datasets.register("t", version(tmp_path, 6, "imagefolder"))
    with pytest.raises(NotFoundError, match="no dataset 'u'"):
        datasets.get("u")
    with pytest.raises(NotFoundError, match="has no version 9"):
        datasets.get("t:9")
    assert [v.version for v in datasets.list_versions("t")] == [1]


def test_what_a_dataset_version_needs_is_never_deleted_as_unused(db_url: str, tmp_path: Path) -> None:
    from lepton_ai.store.sweep import delete_unused

    datasets = Datasets(db_url)
    pack, spare = tmp_path / "pack.bin", tmp_path / "spare.bin"
    pack.write_bytes(b"records")
    spare.write_bytes(b"nobody's")
    kept, unused = datasets.artifacts.put(pack).key, datasets.artifacts.put(spare).key
    info = datasets.register("t", replace(version(tmp_path, 3), objects=[kept]))
    deleted = datasets._tx(lambda s: delete_unused(s, datasets.artifacts, [kept, info.manifest_key, unused]))
    assert deleted == [unused]
    assert datasets.artifacts.has(kept) and datasets.artifacts.has(info.manifest_key)
