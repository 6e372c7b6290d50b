"""`lepton data`: add a source as the next version of a dataset, list datasets, show a version."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from lepton_ai.cli.output import console, print_fields, print_json, print_table

app = typer.Typer(help="Datasets: add, check, clean and version your own data.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="The dataset's name (a new one, or the next version of one).")],
    source: Annotated[
        str, typer.Argument(help="A folder of class folders or a table: a path or fsspec URL.")
    ],
    format: Annotated[
        str | None,
        typer.Option("--format", help="imagefolder, text, csv, jsonl or parquet (default: guessed)."),
    ] = None,
    label: Annotated[str, typer.Option(help="A table's label column.")] = "label",
    text: Annotated[str | None, typer.Option(help="A table's text column (for text models).")] = None,
    split: Annotated[
        str, typer.Option(help="TRAIN,VAL,TEST fractions, stratified and seeded.")
    ] = "0.7,0.1,0.2",
    seed: Annotated[int, typer.Option(help="The seed of the splits.")] = 0,
    strict: Annotated[
        bool, typer.Option(help="Fail, registering nothing, if any record fails its checks.")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="Threads reading and checking files.")] = min(
        8, os.cpu_count() or 1
    ),
    json: Json = False,
) -> None:
    """Read SOURCE, check and clean every record, and register it as the next version of dataset NAME."""
    from lepton_ai.data.ingest import AddOptions
    from lepton_ai.data.ingest import add as add_version
    from lepton_ai.data.splits import parse_fractions

    options = AddOptions(
        format, label, text, parse_fractions(split), seed, strict, workers, progress=not json
    )
    info = add_version(name, source, options)
    if json:
        print_json(info.to_dict())
        return
    stats = info.stats
    console.print(
        f"registered [bold]{info.ref}[/]: {info.records:,} records ({stats['new_records']:,} new), "
        f"{stats['quarantined']:,} quarantined, {stats['duplicates']:,} duplicates removed; "
        f"splits {stats['splits']}; stored {info.stored_bytes:,} bytes"
    )
    for q in stats["quarantine"][:10]:
        console.print(f"  quarantined {q['record']}: {q['reason']}", highlight=False)


@app.command("list")
def list_(json: Json = False) -> None:
    """List datasets with their latest version."""
    from lepton_ai.store.datasets import Datasets

    found = Datasets().list_datasets()
    if json:
        print_json([d.to_dict() for d in found])
        return
    rows = (
        (d.name, d.format, d.latest_version, d.num_versions, f"{d.records:,}", d.updated_at) for d in found
    )
    print_table("datasets", ("name", "format", "latest", "versions", "records", "updated"), rows)


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAME (the latest version) or NAME:VERSION.")], json: Json = False
) -> None:
    """Show a dataset version: counts, classes, splits, what was left out and why, and its schema."""
    from lepton_ai.store.datasets import Datasets

    info = Datasets().get(ref)
    if json:
        print_json(info.to_dict())
        return
    stats = info.stats
    print_fields(
        f"dataset {info.ref}",
        {
            "format": info.format,
            "records": info.records,
            "new records": stats.get("new_records"),
            "bytes": info.size_bytes,
            "stored bytes": info.stored_bytes,
            "classes": stats.get("classes"),
            "splits": stats.get("splits"),
            "quarantined": stats.get("quarantined"),
            "duplicates removed": stats.get("duplicates"),
            "schema": info.schema,
            "source": info.source,
            "created": info.created_at,
        },
    )
    for q in stats.get("quarantine", [])[:20]:
        console.print(f"  quarantined {q['record']}: {q['reason']}", highlight=False)
