"""`lepton explain`: why a registered model decided what it did on some examples, as pictures and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer

from lepton_ai.cli.output import console, print_json


def explain(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION] in the registry, or a saved-model dir.")],
    data: Annotated[str, typer.Option(help="digits, breast_cancer, NAME[:VERSION] of `lepton data add`…")],
    out: Annotated[Path, typer.Option(help="Folder for each example's PNG and explanations.json.")],
    index: Annotated[str, typer.Option(help="Examples of the split: N or START:STOP.")] = "0:16",
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    method: Annotated[
        str,
        typer.Option(
            help="integrated_gradients (ig), saliency, occlusion, gradient_shap or feature_ablation."
        ),
    ] = "integrated_gradients",
    target: Annotated[int | None, typer.Option(help="Class to explain (default: each prediction).")] = None,
    steps: Annotated[int, typer.Option(help="Integration steps (IG) or samples (GradientShap).")] = 32,
    faithfulness: Annotated[
        bool, typer.Option("--faithfulness", help="Score the explanations: deletion, infidelity, sanity.")
    ] = False,
    seed: int = 0,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Explain MODEL's decisions on examples of DATA: a picture each and their attributions."""
    from lepton_ai.data import load
    from lepton_ai.data.datasets import Split
    from lepton_ai.errors import InvalidInputError
    from lepton_ai.explain.methods import method_name
    from lepton_ai.explain.report import pick, write_explanations, write_text_explanations
    from lepton_ai.models import LeptonModel

    if split not in ("train", "val", "test"):
        raise InvalidInputError(f"--split must be train, val or test, not {split!r}")
    loaded = LeptonModel.load(model)
    if loaded.is_embedding:
        raise InvalidInputError(
            f"{model} is an embedding model, with no class to explain: explain a classifier"
        )
    if loaded.is_text and (method_name(method) != "integrated_gradients" or faithfulness):
        raise InvalidInputError(
            f"{model} is a text classifier: it is explained by integrated_gradients through its token "
            "embeddings, without --faithfulness (scored for image and table models)"
        )
    examples = load(data, cast(Split, split), seed=seed)
    chosen = pick(examples, index)
    written = (
        write_text_explanations(loaded, examples, chosen, out, target, steps)
        if loaded.is_text
        else write_explanations(loaded, examples, chosen, out, method, target, faithfulness, steps)
    )
    if json:
        print_json({"model": model, "data": data, "split": split, "out": str(out), **written.doc})
        return
    console.print(f"[green]✓[/] {len(written.pictures)} explanations ({written.doc['method']}) in {out}")
    if faithfulness:
        f = written.doc["faithfulness"]
        console.print(
            f"  deletion AUC {f['deletion_auc']:.3f} against {f['random_auc']:.3f} in a random order "
            f"(ratio {f['deletion_ratio']:.2f}); infidelity {f['infidelity']:.4g}; correlation with a "
            f"randomised model {f['randomised_correlation']:.2f}"
        )
