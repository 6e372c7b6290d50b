"""`lepton pretrain`: a backbone learns from a data set without its labels (VICReg or SimCLR) and is
registered; `lepton train --init NAME` then fine-tunes it, or trains a head on it, with few labels."""

from __future__ import annotations

import subprocess
import sys
import warnings
from typing import Annotated

import typer

from lepton_ai.cli.output import console, print_error, print_json
from lepton_ai.errors import InvalidInputError


def pretrain(
    model: Annotated[
        str, typer.Option(help="mlp (tables), cnn-small or resnet18 (images), or NAME[:VERSION].")
    ],
    data: Annotated[
        str, typer.Option(help="digits, breast_cancer, NAME[:VERSION] of `lepton data add`, an image folder…")
    ],
    name: Annotated[str, typer.Option(help="Registry name for the pretrained backbone.")],
    method: Annotated[str, typer.Option(help="vicreg or simclr.")] = "vicreg",
    epochs: Annotated[int, typer.Option(min=1)] = 100,
    batch_size: Annotated[int, typer.Option(help="Examples per step in each process (at least 2).")] = 256,
    lr: Annotated[
        float,
        typer.Option(
            min=0.0, help="Peak learning rate (a tenth of the steps warm up to it, then a cosine down)."
        ),
    ] = 2e-3,
    temperature: Annotated[float, typer.Option(help="SimCLR's softmax temperature.")] = 0.2,
    flip: Annotated[
        bool, typer.Option("--flip", help="Mirror images in the views too (not for digits or text).")
    ] = False,
    seed: int = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    checkpoint_dir: Annotated[
        str | None, typer.Option(help="Default: $LEPTON_HOME/checkpoints/NAME.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
    nproc: Annotated[
        int, typer.Option(min=1, help="Data-parallel processes on this machine (negatives from every rank).")
    ] = 1,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Pretrain MODEL on DATA without its labels and register the backbone as NAME."""
    from lepton_ai.ssl.job import pretrain_and_register
    from lepton_ai.ssl.monitor import CollapseWarning
    from lepton_ai.train import distributed

    if batch_size < 2:
        raise InvalidInputError(
            f"--batch-size {batch_size}: a self-supervised batch needs at least 2 examples (the others are "
            "each one's negatives); use 64 or more"
        )
    if nproc > 1 and not distributed.launched():
        raise typer.Exit(_launch(nproc))
    with warnings.catch_warnings():
        warnings.simplefilter("always", CollapseWarning)
        result = pretrain_and_register(
            model,
            data,
            name,
            method=method,
            seed=seed,
            checkpoint_dir=checkpoint_dir,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            temperature=temperature,
            flip=flip,
            device=device,
            resume=resume,
            progress=not json,
        )
    if result.ref is None:
        return
    history, last = result.history, result.history["epochs"][-1]
    if json:
        print_json(
            {
                "name": name,
                "version": int(result.ref.rsplit(":", 1)[1]),
                "run_id": result.run_id,
                "method": history["method"],
                "pretrain_seconds": history["pretrain_seconds"],
                "world_size": history["world_size"],
                "epochs": history["epochs"],
                "views": history["views"],
            }
        )
        return
    knn = f"kNN accuracy {last['knn_accuracy']:.4f}, " if "knn_accuracy" in last else ""
    console.print(
        f"[green]✓[/] {result.ref}: {history['method']} · {knn}spread {last['spread']:.3f}, effective rank "
        f"{last['effective_rank']:.1f} · {history['pretrain_seconds']:.1f} s × {history['world_size']} "
        f"process(es) · next: lepton train --init {result.ref} --data DATA --name NAME [--head-only]"
    )


def _launch(nproc: int) -> int:
    """Run this same `lepton pretrain` (less --nproc) in `nproc` torchrun processes; return its exit code."""
    from lepton_ai.train import distributed

    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    code = subprocess.run(distributed.torchrun_argv(nproc, 1, None, None, args), check=False).returncode
    if code:
        print_error(f"data-parallel pretraining failed: torchrun exited with code {code}")
    return code
