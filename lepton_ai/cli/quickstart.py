"""`lepton quickstart`: the end-to-end main job, run by `make run`.

Today: check the machine, train cnn-small on digits, register it, load it back from the
registry (sha256 verified) and check it predicts the same. Each capability that lands
extends it (optimize → serve → load-test → report)."""

from __future__ import annotations

import time
import warnings

import typer

from lepton_ai.cli.doctor import doctor
from lepton_ai.cli.output import console, human_bytes, print_table


def quickstart(
    name: str = typer.Option("digits-cnn", help="Registry name for the trained model."),
    epochs: int = typer.Option(10, min=1, help="Training epochs."),
) -> None:
    """Run the main job end to end on the embedded defaults."""
    import torch

    from lepton_ai.data import load
    from lepton_ai.models import LeptonModel
    from lepton_ai.store import Registry

    console.rule("[bold]1. this machine")
    doctor(json=False)

    console.rule("[bold]2. train cnn-small on digits")
    torch.manual_seed(0)
    train, val, test = (load("digits", s) for s in ("train", "val", "test"))
    console.print(f"digits: {len(train)} train · {len(val)} val · {len(test)} test images of 8×8, 10 classes")
    model = LeptonModel(num_classes=10, input_size=train.input_size, classes=train.classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trained from scratch on purpose
        model.load_pretrained_model("cnn-small")
    registry = Registry()
    run = registry.start_run("train", {"model": "cnn-small", "data": "digits", "epochs": epochs}, name=name)
    history = model.fit(train, val, epochs=epochs, lr=3e-3, batch_size=64, run_id=run.id)
    metrics = model.evaluate(test)
    registry.end_run(run.id, "completed")

    console.rule("[bold]3. register and reload")
    t0 = time.perf_counter()
    ref = model.save(name, metrics={**metrics, "train_seconds": history["train_seconds"]}, run_id=run.id,
                     description="quickstart: cnn-small trained on digits")
    info = registry.get(ref)
    same = LeptonModel.load(ref)  # fetched from the artifact store, sha256 checked
    if not torch.equal(same.predict(test), model.predict(test)):
        raise RuntimeError("the model read back from the registry predicts differently from the one saved")
    print_table(f"{ref}", ("what", "value"), [
        ("test accuracy", f"{metrics['accuracy']:.4f}"), ("test f1 (macro)", f"{metrics['f1_macro']:.4f}"),
        ("train time", f"{history['train_seconds']:.1f} s on {history['device']} ({history['precision']})"),
        ("size", human_bytes(info.size_bytes)), ("sha256", info.sha256), ("stored at", info.uri),
        ("run", f"{run.id} (lepton runs show {run.id})"),
    ])
    console.print(f"[green]✓[/] trained, registered, verified and reloaded {ref} "
                  f"(round trip {time.perf_counter() - t0:.2f} s)")
    console.rule("[bold]next")
    console.print(f"  lepton models show {ref} --json\n  lepton runs show {run.id}\n"
                  f"  lepton train --model mlp --data breast_cancer --name cancer-mlp")
