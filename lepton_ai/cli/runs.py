"""`lepton runs`: the record of training, optimisation and other runs."""

from __future__ import annotations

from typing import Annotated

import typer

from lepton_ai.cli.output import print_fields, print_json, print_table
from lepton_ai.store import Registry

app = typer.Typer(help="List and show runs (training, optimisation…).", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]


@app.command("list")
def list_(
    kind: Annotated[str | None, typer.Option(help="Only runs of this kind (train, optimize…).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    json: Json = False,
) -> None:
    """List runs, newest first."""
    runs = Registry().list_runs(kind=kind, limit=limit)
    if json:
        print_json([r.to_dict() for r in runs])
        return
    print_table(
        "runs",
        ("id", "kind", "name", "status", "metrics", "created", "ended"),
        (
            (
                r.id,
                r.kind,
                r.name,
                r.status,
                ", ".join(f"{k}={v:.4g}" for k, v in r.metrics.items()),
                r.created_at,
                r.ended_at,
            )
            for r in runs
        ),
    )


@app.command()
def show(
    run_id: Annotated[int, typer.Argument(min=1, max=2**31 - 1, help="The run's id.")], json: Json = False
) -> None:
    """Show one run with its parameters and metrics over steps."""
    run = Registry().get_run(run_id)
    if json:
        print_json(run.to_dict())
    else:
        print_fields(f"run {run.id}", {k: v for k, v in run.to_dict().items() if k != "history"})
