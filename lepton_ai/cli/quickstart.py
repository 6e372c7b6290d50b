"""`lepton quickstart`: the end-to-end main job, run by `make run`.

Check the machine, train cnn-small on digits, register it, load it back from the registry
(sha256 verified) and check it predicts the same, optimize it (measured search over ONNX,
int8, pruning + distillation) and register the best, then serve that version over HTTP
(`lepton serve`, in a child process), check its answers through the Python client and
load-test it."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from lepton_ai.cli.doctor import doctor
from lepton_ai.cli.output import console, human_bytes, print_table


def quickstart(
    name: str = typer.Option("digits-cnn", help="Registry name for the trained model."),
    epochs: int = typer.Option(10, min=1, help="Training epochs."),
    report: Path = typer.Option(Path("report"), help="Directory for the optimization report."),
    load_seconds: float = typer.Option(5.0, min=0.5, help="Seconds of load test on the served model."),
) -> None:
    """Run the main job end to end on the embedded defaults."""
    import torch

    from lepton_ai.compress import load_runnable
    from lepton_ai.models import LeptonModel
    from lepton_ai.store import Registry
    from lepton_ai.train.job import train_and_register

    console.rule("[bold]1. this machine")
    doctor(json=False)

    console.rule("[bold]2. train cnn-small on digits, register it")
    result = train_and_register(
        "cnn-small",
        "digits",
        name,
        epochs=epochs,
        lr=3e-3,
        batch_size=64,
        description="quickstart: cnn-small trained on digits",
    )
    ref, metrics, history, test = result.ref, result.metrics, result.history, result.test_data

    console.rule("[bold]3. reload from the registry")
    t0 = time.perf_counter()
    info = Registry().get(ref)
    # fetched from the artifact store, sha256 checked
    same = LeptonModel.load(ref)
    if not torch.equal(same.predict(test), result.model.predict(test)):
        raise RuntimeError("the model read back from the registry predicts differently from the one saved")
    print_table(
        f"{ref}",
        ("what", "value"),
        [
            ("test accuracy", f"{metrics['accuracy']:.4f}"),
            ("test f1 (macro)", f"{metrics['f1_macro']:.4f}"),
            (
                "train time",
                f"{history['train_seconds']:.1f} s on {history['device']} ({history['precision']})",
            ),
            ("size", human_bytes(info.size_bytes)),
            ("sha256", info.sha256),
            ("stored at", info.uri),
            ("run", f"{result.run_id} (lepton runs show {result.run_id})"),
        ],
    )
    console.print(
        f"[green]✓[/] trained, registered, verified and reloaded {ref} "
        f"(round trip {time.perf_counter() - t0:.2f} s)"
    )
    console.rule("[bold]4. optimize it: fastest version within 1 point of accuracy")
    from lepton_ai.cli.optimize import show
    from lepton_ai.compress.job import optimize_and_register

    job = optimize_and_register(
        ref,
        "digits",
        report_dir=report,
        max_accuracy_drop=0.01,
        batch_size=64,
        techniques=("onnx", "int8", "prune"),
        time_budget_s=300,
    )
    show(job.result.report)
    # read back from the registry, as a server would
    runnable = load_runnable(job.ref)
    agree = float(
        (runnable(test.features).argmax(-1) == job.result.best(test.features).argmax(-1)).float().mean()
    )
    if agree < 1.0:
        raise RuntimeError(
            f"the optimized model read back from the registry disagrees on {1 - agree:.1%} of inputs"
        )
    console.print(
        f"[green]✓[/] registered {job.ref} (parent {job.parent}); report: {job.report_dir}/report.md, "
        f"report.png"
    )

    console.rule(f"[bold]5. serve {job.ref} over HTTP and load-test it")
    from lepton_ai.cli.serve import show_load
    from lepton_ai.client import Client
    from lepton_ai.serve.loadtest import load_test
    from lepton_ai.serve.server import ServerProcess

    with ServerProcess([job.ref]) as server, Client(server.url) as client:
        served = client.predict(inputs=test.features[:64].tolist())["outputs"]
        if served != runnable(test.features[:64]).argmax(-1).tolist():
            raise RuntimeError("the served model answers differently from the same model in process")
        console.print(
            f"[green]✓[/] {server.url}/predict answers like the model in process "
            f"(docs: {server.url}/docs, metrics: {server.url}/metrics)"
        )
        show_load(
            load_test(
                server.url, {"inputs": [test.features[0].tolist()]}, concurrency=32, duration=load_seconds
            )
        )
    console.rule("[bold]next")
    console.print(
        f"  lepton serve {job.ref} --port 8080    # then: lepton bench serve http://127.0.0.1:8080 "
        f"--payload body.json\n"
        f"  lepton models show {job.ref} --json\n  lepton runs show {result.run_id}\n"
        f"  lepton optimize minilm --data python-docs --max-fidelity-drop 0.01 --batch-size 32\n"
        f"  lepton train --model mlp --data breast_cancer --name cancer-mlp"
    )
