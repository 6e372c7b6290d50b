"""`lepton privacy`: check what a registered model leaks by attacking it (membership inference)."""

from __future__ import annotations

from typing import Annotated

import typer

from lepton_ai.cli.output import console, print_json, print_table

app = typer.Typer(help="Check what a registered model leaks about its training data.", no_args_is_help=True)


@app.command()
def audit(
    ref: Annotated[str, typer.Argument(help="NAME[:VERSION] in the registry.")],
    data: Annotated[
        str,
        typer.Option(
            help="The data it was trained on: digits, breast_cancer, NAME[:VERSION] of `lepton data add`, a "
            "CSV/JSONL file or an image folder."
        ),
    ],
    shadow_models: Annotated[
        int, typer.Option(help="Shadow models trained by its recipe for LiRA (1: offline LiRA).")
    ] = 4,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Offline LiRA: shadow models trained without the audited examples."),
    ] = False,
    examples: Annotated[
        int | None,
        typer.Option(
            help="Members (and as many non-members) attacked at most. Default: all of the smaller side."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Draws the examples, the shadows' halves and the bootstrap.")] = 0,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Attack REF by membership inference (loss threshold, and LiRA with shadow models trained by its own
    recipe); print each attack's AUC and true-positive rate at 1 % false positives with 95 % intervals, and
    store the audit with the version."""
    from lepton_ai.privacy.audit import audit as run_audit

    result = run_audit(
        ref,
        data,
        shadow_models=shadow_models,
        offline=True if offline else None,
        examples=examples,
        seed=seed,
        progress=not json,
    )
    if json:
        print_json(result.to_dict())
        return
    fpr = f"{result.fpr:.0%}"
    print_table(
        f"membership inference on {result.ref}: {result.members} members of {result.data} against "
        f"{result.non_members} held-out examples ({result.confidence:.0%} intervals, {result.resamples} "
        "bootstrap resamples)",
        ("attack", "AUC", "interval", f"TPR at {fpr} FPR", "interval"),
        (
            (
                name,
                f"{f.auc:.3f}",
                f"[{f.auc_ci.low:.3f}, {f.auc_ci.high:.3f}]",
                f"{f.tpr:.1%}",
                f"[{f.tpr_ci.low:.1%}, {f.tpr_ci.high:.1%}]",
            )
            for name, f in (
                (f"LiRA ({result.variant}, {result.shadow_models} shadow models)", result.lira),
                ("loss threshold", result.loss),
            )
        ),
    )
    epsilon = "" if result.epsilon is None else f"; trained with DP-SGD at ε = {result.epsilon:.3g}"
    console.print(
        f"accuracy on members {result.member_accuracy:.3f}, on non-members {result.non_member_accuracy:.3f}"
        f"{epsilon} · {result.seconds:.1f} s · stored with {result.ref} (`lepton models show {result.ref}`)",
        highlight=False,
    )
