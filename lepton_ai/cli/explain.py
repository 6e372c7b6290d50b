"""`lepton explain`: why a registered model decided what it did on some examples, as pictures and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

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
    from lepton_ai.explain.report import pick, write_explanations, write_text_explanations

    if split not in ("train", "val", "test"):
        raise InvalidInputError(f"--split must be train, val or test, not {split!r}")
    loaded, text = _explained(model, method, faithfulness)
    examples = load(data, cast(Split, split), seed=seed)
    chosen = pick(examples, index)
    written = (
        write_text_explanations(loaded, examples, chosen, out, target, steps)
        if text
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


def _explained(ref: str, method: str, faithfulness: bool) -> tuple[Any, bool]:
    """Return what computes the version's outputs — its PyTorch model, or the runtime it was optimised into
    (ONNX Runtime, int8 PyTorch), which only gradient-free methods can explain — and whether it reads text."""
    from lepton_ai.compress import load_runnable
    from lepton_ai.errors import InvalidInputError
    from lepton_ai.explain.methods import check_explainable, has_gradients, saved_meta
    from lepton_ai.models import LeptonModel
    from lepton_ai.store import local_path

    # fetched and verified once, then read from the folder
    folder = local_path(ref)
    meta = saved_meta(folder)
    check_explainable(meta, method)
    text = meta.get("arch") == "hf"
    if text and faithfulness:
        raise InvalidInputError(f"{ref} is a text classifier: --faithfulness scores image and table models")
    if has_gradients(meta):
        return LeptonModel.load(folder), text
    if faithfulness:
        raise InvalidInputError(
            f"{ref} has no gradients: --faithfulness compares it with itself at random weights, which needs "
            "the PyTorch model; explain the version it was optimised from"
        )
    return load_runnable(folder), text
