"""`lepton train`: fine-tune a model on a data set and register it with its metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lepton_ai.cli.output import console, print_json


def train(
    model: Annotated[str, typer.Option(help="mlp, cnn-small, resnet18, minilm, a Hugging Face dir or NAME[:VERSION].")],
    data: Annotated[str, typer.Option(help="digits, breast_cancer, wine, iris, a CSV/JSONL file or an image folder.")],
    name: Annotated[str, typer.Option(help="Registry name for the trained model.")],
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    lr: Annotated[float, typer.Option(min=0.0)] = 3e-3,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = "auto",
    schedule: Annotated[str, typer.Option(help="cosine, onecycle or none.")] = "cosine",
    early_stopping: Annotated[Optional[int], typer.Option(help="Stop after N epochs without a better val loss.")] = None,
    checkpoint_dir: Annotated[Optional[Path], typer.Option(help="Default: $LEPTON_HOME/checkpoints/NAME.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last complete checkpoint.")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (GPU).")] = False,
    seed: int = 0,
    label: Annotated[str, typer.Option(help="Label column of a CSV/JSONL file.")] = "label",
    text: Annotated[Optional[str], typer.Option(help="Text column of a CSV/JSONL file.")] = None,
    image_size: Annotated[int, typer.Option(help="Side in pixels images are resized to.")] = 64,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Train MODEL on DATA, evaluate on the test split and register the result as NAME."""
    from lepton_ai.train.job import train_and_register

    result = train_and_register(
        model, data, name, seed=seed, checkpoint_dir=checkpoint_dir,
        data_options={"label": label, "text": text, "image_size": image_size},
        epochs=epochs, lr=lr, batch_size=batch_size, device=device, precision=precision, schedule=schedule,
        early_stopping=early_stopping, resume=resume, compile=compile, progress=not json)
    ref, metrics, history = result.ref, result.metrics, result.history
    version = int(ref.rsplit(":", 1)[1])
    doc = {"name": name, "version": version, "metrics": metrics, "train_seconds": history["train_seconds"],
           "device": history["device"], "precision": history["precision"], "run_id": result.run_id,
           "resumed_from_epoch": history["resumed_from_epoch"]}
    if json:
        print_json(doc)
        return
    resumed = f" (resumed at epoch {history['resumed_from_epoch'] + 1})" if history["resumed_from_epoch"] else ""
    console.print(f"[green]✓[/] {ref}: test accuracy {metrics['accuracy']:.4f}, f1 {metrics['f1_macro']:.4f}, "
                  f"loss {metrics['loss']:.4f} · {history['train_seconds']:.1f} s on {history['device']} "
                  f"({history['precision']}){resumed}")
