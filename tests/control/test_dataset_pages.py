"""Datasets on the dashboard over a real registry: their list and versions in pages, one version's counts,
class balance, left-out records and schema, the models trained on it both ways, escaped; errors as JSON and
as pages."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lepton_ai.control.charts import MAX_BARS, bar_chart
from lepton_ai.data.ingest import add
from lepton_ai.store import Registry
from tests.control.conftest import artifact, dataset
from tests.data.conftest import write_digits

XSS = "<script>alert(1)</script>"


def test_datasets_and_their_versions_come_in_pages(api: TestClient, tmp_path: Path) -> None:
    for name in ("wine", "scans", "texts"):
        dataset(tmp_path, name)
    dataset(tmp_path, "scans", new_records=3, quarantined=0, quarantine=[])
    first = api.get("/api/v1/datasets", params={"limit": 2}).json()
    assert [d["name"] for d in first["items"]] == ["scans", "texts"] and first["next_cursor"]
    rest = api.get("/api/v1/datasets", params={"cursor": first["next_cursor"]}).json()
    assert [d["name"] for d in rest["items"]] == ["wine"] and rest["next_cursor"] is None
    scans = first["items"][0]
    assert (scans["format"], scans["latest_version"], scans["num_versions"], scans["records"]) == (
        "imagefolder",
        2,
        2,
        10,
    )
    versions = api.get("/api/v1/datasets/scans", params={"limit": 1}).json()
    [newest] = versions["items"]
    assert (newest["ref"], newest["new_records"], newest["quarantined"], newest["duplicates"]) == (
        "scans:2",
        3,
        0,
        1,
    )
    # a list carries counts, not the records a version's stats list
    assert newest["splits"] == {"train": 7, "val": 1, "test": 2} and "stats" not in newest
    older = api.get("/api/v1/datasets/scans", params={"cursor": versions["next_cursor"]}).json()
    assert [v["version"] for v in older["items"]] == [1] and older["next_cursor"] is None
    page = api.get("/datasets").text
    assert 'href="/datasets/scans/2"' in page and page.index("scans") < page.index("wine")
    assert re.search(
        r'href="/datasets/scans/1">v1</a></td><td>10</td>\s*<td>10</td><td>1</td>',
        api.get("/datasets/scans").text,
    )


def test_a_version_added_from_real_files_shows_what_was_left_out_and_the_models_trained_on_it(
    api: TestClient, registry: Registry, tmp_path: Path
) -> None:
    folder = write_digits(tmp_path / "scans", 40)
    (folder / "3" / "broken.png").write_bytes(b"not a png")
    shutil.copy(folder / "0" / "00000.png", folder / "0" / "copy.png")
    info = add("scans", str(folder))
    model = registry.register(
        "classifier", artifact(tmp_path, "w"), metrics={"accuracy": 0.9}, dataset=info.ref
    )
    registry.register("classifier", artifact(tmp_path, "int8"), parent=model.ref)
    body = api.get("/api/v1/datasets/scans/1").json()
    [left_out] = body["stats"]["quarantine"]
    assert left_out["record"].endswith("broken.png") and left_out["reason"]
    [copy] = body["stats"]["duplicate_records"]
    assert copy["record"].endswith("copy.png") and body["stats"]["duplicates"] == 1
    assert sum(body["stats"]["classes"].values()) == body["records"] == 40
    assert body["schema"] == info.schema and body["source"] == info.source
    assert [m["ref"] for m in body["models"]] == ["classifier:1"] and body["models"][0]["metrics"]
    page = api.get("/datasets/scans/1").text
    assert 'href="/models/classifier/1"' in page and "broken.png" in page and "copy.png" in page
    assert f'data-bars="{len(body["stats"]["classes"])}"' in page
    # the model version links back to its data, and so does the version optimised from it
    assert api.get("/api/v1/models/classifier/versions/1").json()["dataset"] == "scans:1"
    for version in (1, 2):
        assert 'id="trained-on" href="/datasets/scans/1"' in api.get(f"/models/classifier/{version}").text


def test_every_value_of_a_dataset_is_escaped(api: TestClient, registry: Registry, tmp_path: Path) -> None:
    dataset(
        tmp_path,
        source=f"s3://bucket/{XSS}",
        classes={XSS: 3},
        quarantine=[{"record": XSS, "reason": f"bad label {XSS}"}],
        duplicate_records=[{"record": XSS, "of": XSS}],
    )
    registry.register("classifier", artifact(tmp_path, "w"), dataset="scans:1")
    for path in ("/datasets", "/datasets/scans", "/datasets/scans/1", "/models/classifier/1"):
        page = api.get(path)
        assert page.status_code == 200 and "<script>" not in page.text, path
    page = api.get("/datasets/scans/1").text
    assert "s3://bucket/&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "bad label &lt;script&gt;" in page


def test_only_the_first_hundred_left_out_records_are_shown(api: TestClient, tmp_path: Path) -> None:
    listed = [{"record": f"row-{i}", "reason": "label out of range"} for i in range(150)]
    dataset(tmp_path, quarantined=1500, quarantine=listed)
    page = api.get("/datasets/scans/1").text
    assert "row-99<" in page and "row-100<" not in page and "the first 100 of 1,500" in page


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/datasets/nope", 404, "no dataset 'nope'"),
        ("/datasets/nope/1", 404, "no dataset 'nope'"),
        ("/datasets/scans/9", 404, "has no version 9"),
        ("/datasets/bad%20name", 422, "invalid dataset name"),
        ("/datasets/scans/0", 422, "version"),
        # a cursor of the versions (a number) is not one of the datasets (a name)
        ("/datasets?cursor=MQ", 422, "cursor"),
        ("/datasets/scans?cursor=InNjYW5zIg", 422, "cursor"),
    ],
)
def test_what_is_not_there_is_a_json_error_and_a_page(
    api: TestClient, tmp_path: Path, path: str, status: int, says: str
) -> None:
    dataset(tmp_path)
    answer = api.get(f"/api/v1{path}")
    assert answer.status_code == status and says in answer.json()["message"], answer.text
    page = api.get(path)
    assert page.status_code == status and page.headers["content-type"].startswith("text/html")
    assert says.replace("'", "&#39;") in page.text and "<h1>" in page.text


def test_the_api_documents_each_dataset_answer(api: TestClient) -> None:
    spec = api.get("/api/v1/openapi.json").json()
    paths = spec["paths"]
    assert {"/api/v1/datasets", "/api/v1/datasets/{name}", "/api/v1/datasets/{name}/{version}"} <= set(paths)
    detail = spec["components"]["schemas"]["DatasetVersionDetail"]["properties"]
    assert {"stats", "schema", "models", "source"} <= set(detail)
    assert set(paths["/api/v1/datasets/{name}/{version}"]["get"]["responses"]) >= {"200", "404", "422"}


def test_a_class_balance_chart_draws_the_largest_classes_escaped() -> None:
    counts = {f"class-{i}": i for i in range(MAX_BARS + 40)}
    chart = str(bar_chart("records per class", {**counts, XSS: 1000}))
    assert f'data-bars="{MAX_BARS}"' in chart and f"the {MAX_BARS} largest of {MAX_BARS + 41}" in chart
    assert "&lt;script&gt;" in chart and XSS not in chart and "class-0<" not in chart
    assert "nothing counted" in str(bar_chart("records per class", {}))
