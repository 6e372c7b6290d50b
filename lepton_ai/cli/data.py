"""`lepton data`: add a source as the next version of a dataset, list datasets, show a version."""

from __future__ import annotations

import os
from pathlib import Path
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
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Workers reading and checking files (default: a process a core for a local folder, 16 "
            "threads for a remote one).",
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="Where a folder's files are read: local (threads) or ray.")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="The Ray cluster for --backend ray: HEAD:6379 (default: RAY_ADDRESS).")
    ] = None,
    json: Json = False,
) -> None:
    """Read SOURCE, check and clean every record, and register it as the next version of dataset NAME."""
    from lepton_ai.data.ingest import AddOptions
    from lepton_ai.data.ingest import add as add_version
    from lepton_ai.data.splits import parse_fractions
    from lepton_ai.errors import InvalidInputError

    if backend not in ("local", "ray"):
        raise InvalidInputError(f"--backend must be local or ray, not {backend!r}")
    on_ray = (address or os.environ.get("RAY_ADDRESS") or "") if backend == "ray" else None
    if on_ray == "":
        raise InvalidInputError("--backend ray needs the cluster: --address HEAD:6379 or RAY_ADDRESS")
    fractions = parse_fractions(split)
    options = AddOptions(format, label, text, fractions, seed, strict, workers, not json, on_ray)
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
    ref: Annotated[str, typer.Argument(help="NAME (the latest version) or NAME:VERSION.")],
    card: Annotated[
        Path | None, typer.Option(help="Also write the dataset card here (card.md and its PNGs).")
    ] = None,
    json: Json = False,
) -> None:
    """Show a dataset version: counts, classes, splits, what was left out and why, and its schema."""
    from lepton_ai.store.datasets import Datasets

    info = Datasets().get(ref)
    if card is not None:
        from lepton_ai.data.card import write_card

        written = write_card(info.ref, card)
        if not json:
            console.print(f"wrote {', '.join(str(p) for p in written)}")
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
            "near duplicates": stats.get("near_duplicates"),
            "label issues": stats.get("label_issues", "not looked for (lepton data clean --label-issues)"),
            "schema": info.schema,
            "source": info.source,
            "created": info.created_at,
        },
    )
    for q in stats.get("quarantine", [])[:20]:
        console.print(f"  quarantined {q['record']}: {q['reason']}", highlight=False)


@app.command()
def clean(
    ref: Annotated[str, typer.Argument(help="NAME (the latest version) or NAME:VERSION.")],
    label_issues: Annotated[
        bool, typer.Option("--label-issues", help="Find likely wrong labels (cleanlab, out-of-fold).")
    ] = False,
    drop: Annotated[bool, typer.Option(help="Register a new version without them.")] = False,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds of the quick model.")] = 5,
    seed: Annotated[int, typer.Option(help="The folds' seed.")] = 0,
    json: Json = False,
) -> None:
    """Find likely wrong labels in a dataset version; with --drop, register the next version without them."""
    from lepton_ai.data.clean import drop_label_issues
    from lepton_ai.data.clean import label_issues as find
    from lepton_ai.errors import InvalidInputError

    if not label_issues:
        raise InvalidInputError(
            "say what to clean: --label-issues (duplicates and bad files go at `data add`)"
        )
    info, issues = find(ref, folds, seed)
    cleaned = drop_label_issues(info, issues) if drop else None
    if json:
        print_json(
            {
                "ref": info.ref,
                "issues": [i.to_dict() for i in issues],
                "cleaned": cleaned.ref if cleaned else None,
            }
        )
        return
    rows = ((i.record, i.given, i.suggested, f"{i.given_probability:.3f}") for i in issues[:50])
    print_table(
        f"{len(issues)} likely wrong labels in {info.ref}", ("record", "given", "suggested", "p(given)"), rows
    )
    if cleaned is not None:
        console.print(
            f"registered [bold]{cleaned.ref}[/]: {cleaned.records:,} records, {len(issues)} dropped"
        )
