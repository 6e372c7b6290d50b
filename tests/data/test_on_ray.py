"""A folder added through a real local Ray cluster (Ray Data) registers the same manifest as on threads."""

from __future__ import annotations

from pathlib import Path

from lepton_ai.data.ingest import AddOptions, add
from lepton_ai.data.manifest import read_manifest
from lepton_ai.store.datasets import Datasets
from tests.conftest import RayCluster


def manifest(ref: str):
    datasets = Datasets()
    return read_manifest(datasets.manifest(datasets.get(ref)))


def test_ray_data_reads_checks_and_hashes_like_the_threads(
    digit_folder: Path, ray_cluster: RayCluster
) -> None:
    (digit_folder / "3" / "broken.png").write_bytes(b"not an image")
    here = add("here", str(digit_folder))
    there = add("there", str(digit_folder), AddOptions(ray_address=ray_cluster.address))
    assert there.records == here.records == 300
    assert (
        there.stats["quarantine"]
        == here.stats["quarantine"]
        == [{"record": "3/broken.png", "reason": "not an image Pillow can read"}]
    )
    # the same records, keys, labels, packs, image facts and splits
    assert manifest("there:1").equals(manifest("here:1"))
