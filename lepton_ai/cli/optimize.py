"""`lepton optimize`: the fastest (or smallest) version of a model within a quality bar, registered."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lepton_ai.cli.output import console, human_bytes, print_json, print_table


def optimize(
    model: Annotated[
        str,
        typer.Argument(
            help="NAME[:VERSION] in the registry, a saved-model dir, a Hugging Face dir or minilm."
        ),
    ],
    data: Annotated[
        str, typer.Option(help="Labelled data (digits, a CSV…), or sentences (a .txt file, python-docs).")
    ],
    max_accuracy_drop: Annotated[
        float | None, typer.Option(help="Classifiers: allowed drop of --metric.")
    ] = None,
    max_fidelity_drop: Annotated[
        float | None, typer.Option(help="Embedding models: allowed drop of mean cosine.")
    ] = None,
    min_attribution_agreement: Annotated[
        float | None,
        typer.Option(
            min=-1.0,
            max=1.0,
            help="Image and table classifiers: reject candidates whose attributions' rank correlation with "
            "the baseline's is below this.",
        ),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            help="What a classifier is held to: accuracy (default) or f1_macro (imbalanced classes)."
        ),
    ] = None,
    objective: Annotated[str, typer.Option(help="throughput, latency or size.")] = "throughput",
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size throughput is measured at.")] = 64,
    time_budget: Annotated[float, typer.Option(min=1, help="Seconds the search may take.")] = 600,
    techniques: Annotated[
        str, typer.Option(help="Comma-separated: onnx,int8,pytorch-int8,bf16,prune,by-length,compile,gpu.")
    ] = "onnx,int8,pytorch-int8,bf16,prune,by-length,compile,gpu",
    name: Annotated[str | None, typer.Option(help="Registry name (default: the model's).")] = None,
    report: Annotated[Path, typer.Option(help="Directory for report.json, report.md and report.png.")] = Path(
        "report"
    ),
    label: Annotated[str, typer.Option(help="Label column of a CSV/JSONL file.")] = "label",
    text: Annotated[str | None, typer.Option(help="Text column of a CSV/JSONL file.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Search compression recipes for MODEL, measured here; register the best as a new version."""
    from lepton_ai.compress.job import optimize_and_register

    job = optimize_and_register(
        model,
        data,
        name=name,
        report_dir=report,
        data_options={"label": label, "text": text},
        progress=not json,
        max_accuracy_drop=max_accuracy_drop,
        max_fidelity_drop=max_fidelity_drop,
        min_attribution_agreement=min_attribution_agreement,
        metric=metric,
        objective=objective,
        batch_size=batch_size,
        time_budget_s=time_budget,
        techniques=tuple(t.strip() for t in techniques.split(",") if t.strip()),
    )
    r = job.result.report
    metric = r["metric"]
    if json:
        print_json(
            {
                "ref": job.ref,
                "parent": job.parent,
                "run_id": job.run_id,
                "report": str(job.report_dir),
                "best": r["best"],
                "baseline": r["baseline"],
                **{k: r[k] for k in ("speedup", "latency_speedup", "size_reduction", f"{metric}_drop")},
                **{k: r[k] for k in ("speedup_range", "choice", "settled")},
            }
        )
        return
    show(r)
    console.print(
        f"[green]✓[/] registered {job.ref} (parent {job.parent}); report in {job.report_dir}/report.md"
    )


def show(r: dict) -> None:
    """Print the baseline and the chosen candidate side by side, and how sure the choice is."""
    from lepton_ai.compress.report import sureness

    metric, base, best = r["metric"], r["baseline"], r["best"]
    rows = [
        (metric, f"{base[metric]:.4f}", f"{best[metric]:.4f}", f"{best[metric] - base[metric]:+.4f}"),
        (
            f"throughput/s (batch {r['batch_size']})",
            f"{base['throughput_per_s']:,.1f}",
            f"{best['throughput_per_s']:,.1f}",
            f"×{r['speedup']:.2f} ({r['speedup_range'][0]:.2f}–{r['speedup_range'][1]:.2f})",
        ),
        (
            "latency p50 (batch 1)",
            f"{base['latency_ms_p50']:.3f} ms",
            f"{best['latency_ms_p50']:.3f} ms",
            f"×{r['latency_speedup']:.2f}",
        ),
        (
            "size",
            human_bytes(base["size_bytes"]),
            human_bytes(best["size_bytes"]),
            f"÷{r['size_reduction']:.2f}",
        ),
    ]
    print_table(f"best: {best['name']}", ("", "baseline (eager fp32)", "optimized", "change"), rows)
    console.print(sureness(r).strip(), highlight=False, soft_wrap=True)
