"""`lepton data add` on real files: image folders and tables checked, cleaned, versioned, loaded back."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from lepton_ai.data import load
from lepton_ai.data.ingest import AddOptions, add
from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.store.datasets import Datasets


def test_a_folder_of_images_becomes_a_version_with_its_bad_files_left_out(digit_folder: Path) -> None:
    (digit_folder / "3" / "not-a-png.png").write_bytes(b"plain text")
    (digit_folder / "3" / "cut.png").write_bytes((digit_folder / "3" / "00003.png").read_bytes()[:60])
    # a JPEG named as a PNG
    Image.new("L", (8, 8)).save(digit_folder / "3" / "jpeg.png", format="JPEG")
    shutil.copy(digit_folder / "4" / "00004.png", digit_folder / "4" / "again.png")
    info = add("digits-img", str(digit_folder))
    assert (info.ref, info.format, info.records) == ("digits-img:1", "imagefolder", 300)
    reasons = {q["record"]: q["reason"] for q in info.stats["quarantine"]}
    assert reasons == {
        "3/cut.png": "does not decode whole (image file is truncated)",
        "3/jpeg.png": "a JPEG file named as PNG",
        "3/not-a-png.png": "not an image Pillow can read",
    }
    assert info.stats["duplicate_records"] == [{"record": "4/again.png", "of": "4/00004.png"}]
    assert info.schema["image"] == {"modes": ["L"], "width": [8, 8], "height": [8, 8]}
    # every digit, as Pillow wrote it, comes back in its class
    data = load("digits-img")
    digits = load_digits()
    assert data.features.shape == (300, 1, 8, 8) and data.classes == [str(d) for d in range(10)]
    expected = torch.from_numpy((digits.images[:300] * 255 / 16).astype(np.uint8) / 255.0).float()
    order = np.argsort([int(Path(p).stem) for p in _paths(info.ref)])
    assert torch.allclose(data.features[order, 0], expected, atol=1e-6)
    assert data.labels[order].tolist() == digits.target[:300].tolist()


def _paths(ref: str) -> list[str]:
    from lepton_ai.data.manifest import PATH, read_manifest

    datasets = Datasets()
    return list(read_manifest(datasets.manifest(datasets.get(ref)))[PATH])


def test_the_next_version_stores_only_what_changed_and_keeps_every_split(digit_folder: Path) -> None:
    first = add("digits-img", str(digit_folder))
    before = {s: set(load("digits-img:1", s).meta["keys"]) for s in ("train", "val", "test")}
    for n in range(20):
        Image.fromarray(np.full((8, 8), n * 12, np.uint8), "L").save(digit_folder / "7" / f"new{n}.png")
    second = add("digits-img", str(digit_folder))
    assert second.records == 320 and second.stats["new_records"] == 20
    # beside its manifest, one small pack of the 20 new images
    packed = second.stored_bytes - Datasets().manifest(second).stat().st_size
    assert 0 < packed <= sum(f.stat().st_size for f in (digit_folder / "7").glob("new*.png"))
    assert first.stored_bytes - Datasets().manifest(first).stat().st_size > 10 * packed
    after = {s: set(load("digits-img:2", s).meta["keys"]) for s in ("train", "val", "test")}
    assert all(before[s] <= after[s] for s in before)
    assert sum(map(len, after.values())) == 320
    # version 1 is as it was
    assert load("digits-img:1").features.shape[0] == 300


def test_later_versions_are_checked_against_the_first_ones_schema(digit_folder: Path) -> None:
    add("digits-img", str(digit_folder))
    Image.new("RGB", (8, 8)).save(digit_folder / "7" / "colour.png")
    Image.new("L", (32, 32)).save(digit_folder / "7" / "large.png")
    (digit_folder / "letters").mkdir()
    Image.new("L", (8, 8)).save(digit_folder / "letters" / "a.png")
    info = add("digits-img", str(digit_folder))
    reasons = {q["record"]: q["reason"] for q in info.stats["quarantine"]}
    assert reasons == {
        "7/colour.png": "image mode RGB, expected L",
        "7/large.png": "a 32×32 image, expected 8–8 × 8–8",
        "letters/a.png": "label 'letters' is not one of the dataset's 10 classes",
    }
    with pytest.raises(InvalidInputError, match="3 records failed their checks.*nothing was registered"):
        add("digits-img", str(digit_folder), AddOptions(strict=True))
    assert [v.version for v in Datasets().list_versions("digits-img")] == [1, 2]


def test_a_table_in_any_format_is_typed_checked_and_deduplicated(
    tmp_path: Path, wine_frame: pd.DataFrame
) -> None:
    csv = tmp_path / "wine.csv"
    wine_frame.to_csv(csv, index=False)
    lines = csv.read_text().splitlines()
    lines.insert(3, "1,2,3")
    lines.insert(5, "abc" + lines[5][lines[5].index(",") :])
    lines.append(lines[1])
    csv.write_text("\n".join(lines) + "\n")
    info = add("wine-t", str(csv))
    assert info.records == 178 and info.format == "table"
    assert info.stats["quarantine"] == [
        {"record": 4, "reason": "expected 14 cells, got 3"},
        {"record": 6, "reason": "column 'alcohol': 'abc' is not a number"},
    ]
    assert info.stats["duplicates"] == 1
    assert info.schema["columns"]["alcohol"] == {"type": "number", "range": [11.03, 14.83]}
    data = load("wine-t")
    assert data.features.shape == (178, 13) and data.classes == ["0", "1", "2"]
    # the same rows as Parquet and JSONL: the same records, nothing new
    wine_frame.to_parquet(tmp_path / "wine.parquet")
    wine_frame.to_json(tmp_path / "wine.jsonl", orient="records", lines=True)
    assert add("wine-t", str(tmp_path / "wine.parquet")).stats["new_records"] == 0
    assert add("wine-t", str(tmp_path / "wine.jsonl")).stats["new_records"] == 0


def test_rows_that_break_the_schema_are_named(tmp_path: Path, wine_frame: pd.DataFrame) -> None:
    wine_frame.to_csv(tmp_path / "wine.csv", index=False)
    add("wine-t", str(tmp_path / "wine.csv"))
    changed = wine_frame.copy()
    changed.loc[0, "alcohol"] = 99.0
    changed.loc[1, "label"] = 7
    changed.to_csv(tmp_path / "wine2.csv", index=False)
    info = add("wine-t", str(tmp_path / "wine2.csv"))
    assert info.stats["quarantine"] == [
        {"record": 2, "reason": "column 'alcohol': 99.0 fails in_range(11.03, 14.83)"},
        {"record": 3, "reason": "column 'label': '7' fails isin(['0', '1', '2'])"},
    ]


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda root: root / "missing", NotFoundError),
        (lambda root: root, "holds no imagefolder files"),
        (lambda root: _loose(root), "in no class folder"),
        (lambda root: _escaping(root), "links outside the source"),
    ],
)
def test_bad_sources_register_nothing(tmp_path: Path, make, says) -> None:
    source = tmp_path / "source"
    source.mkdir()
    where = make(source)
    with pytest.raises(NotFoundError if says is NotFoundError else InvalidInputError) as e:
        add("broken", str(where), AddOptions(format="imagefolder"))
    assert says is NotFoundError or says in str(e.value)
    assert Datasets().find("broken") is None


def _loose(root: Path) -> Path:
    Image.new("L", (8, 8)).save(root / "alone.png")
    return root


def _escaping(root: Path) -> Path:
    outside = root.parent / "secret.png"
    Image.new("L", (8, 8)).save(outside)
    (root / "cls").mkdir()
    (root / "cls" / "link.png").symlink_to(outside)
    return root


def test_bad_names_and_columns_are_one_line_errors(tmp_path: Path, wine_frame: pd.DataFrame) -> None:
    wine_frame.to_csv(tmp_path / "wine.csv", index=False)
    with pytest.raises(InvalidInputError, match="no label column 'kind'.*--label"):
        add("wine-t", str(tmp_path / "wine.csv"), AddOptions(label="kind"))
    with pytest.raises(InvalidInputError, match="built-in dataset"):
        add("digits", str(tmp_path / "wine.csv"))
    with pytest.raises(InvalidInputError, match="invalid dataset name"):
        add("no/slashes", str(tmp_path / "wine.csv"))
    assert Datasets().list_datasets() == []


def test_near_duplicates_are_reported_and_share_a_split(digit_folder: Path) -> None:
    original = digit_folder / "2" / "00002.png"
    with Image.open(original) as image:
        # the same picture, other bytes: saved uncompressed
        image.save(digit_folder / "2" / "resaved.png", compress_level=0)
    info = add("digits-img", str(digit_folder))
    assert info.stats["near_duplicates"] == 1 and info.stats["duplicates"] == 0
    assert info.stats["near_duplicate_records"] == [{"record": "2/resaved.png", "of": "2/00002.png"}]
    splits = {p: s for p, s in _column(info.ref, "_split").items() if p in ("2/00002.png", "2/resaved.png")}
    assert len(set(splits.values())) == 1


def _column(ref: str, column: str) -> dict[str, str]:
    from lepton_ai.data.manifest import PATH, read_manifest

    datasets = Datasets()
    frame = read_manifest(datasets.manifest(datasets.get(ref)))
    return dict(zip(frame[PATH], frame[column]))


def test_an_unchanged_file_is_not_read_again(digit_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lepton_ai.data.sources import Source

    add("digits-img", str(digit_folder))
    changed = digit_folder / "0" / "00000.png"
    Image.new("L", (8, 8), 99).save(changed)
    read, real = [], Source.read
    monkeypatch.setattr(Source, "read", lambda self, rel: read.append(rel) or real(self, rel))
    info = add("digits-img", str(digit_folder))
    assert read == ["0/00000.png"] and info.stats["new_records"] == 1


def test_worker_processes_read_a_large_folder_as_threads_do(
    digit_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from lepton_ai.data import checks, folders
    from lepton_ai.data.manifest import read_manifest

    (digit_folder / "3" / "not-a-png.png").write_bytes(b"plain text")
    threads = add("by-threads", str(digit_folder))
    # every folder counts as large; each check notes the process that made it
    monkeypatch.setattr(folders, "_PROCESSES_FROM", 0)
    pids, real = tmp_path / "pids", checks.check_image
    monkeypatch.setattr(
        checks,
        "check_image",
        lambda path, raw: (pids.open("a").write(f"{os.getpid()}\n"), real(path, raw))[1],
    )
    processes = add("by-processes", str(digit_folder), AddOptions(workers=2))
    workers = set(pids.read_text().split())
    assert workers and str(os.getpid()) not in workers
    datasets = Datasets()
    by_threads, by_processes = (read_manifest(datasets.manifest(info)) for info in (threads, processes))
    pd.testing.assert_frame_equal(by_threads, by_processes)
    assert processes.stats["quarantine"] == threads.stats["quarantine"] != []
