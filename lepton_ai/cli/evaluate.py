"""`lepton evaluate`: a registered model's accuracy, loss and F1 on a split of a data set."""

from __future__ import annotations

from typing import Annotated, cast

import typer

from lepton_ai.cli.output import console, print_json


def evaluate(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION] in the registry, or a saved-model dir.")],
    data: Annotated[
        str, typer.Option(help="digits, breast_cancer, wine, iris, a CSV/JSONL file or an image folder.")
    ],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    seed: int = 0,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Evaluate MODEL on a split of DATA: accuracy, loss and macro F1."""
    from lepton_ai.data import load
    from lepton_ai.data.datasets import Split
    from lepton_ai.errors import InvalidInputError
    from lepton_ai.models import LeptonModel

    if split not in ("train", "val", "test"):
        raise InvalidInputError(f"--split must be train, val or test, not {split!r}")
    metrics = LeptonModel.load(model).evaluate(load(data, cast(Split, split), seed=seed))
    if json:
        print_json({"model": model, "data": data, "split": split, "metrics": metrics})
    else:
        console.print(
            f"{model} on {data} ({split}): " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        )
