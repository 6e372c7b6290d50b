"""`lepton quickstart`: the end-to-end main job, run by `make run`.

Check the machine, train cnn-small on digits, register it, load it back from the registry
(sha256 verified) and check it predicts the same, optimize it (measured search over ONNX,
int8, pruning + distillation) and register the best, then serve that version over HTTP
(`lepton serve`, in a child process), check its answers through the Python client and
load-test it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from lepton_ai.cli.doctor import doctor
from lepton_ai.cli.output import console, human_bytes, print_table

if TYPE_CHECKING:
    from lepton_ai.compress.job import OptimizeJob
    from lepton_ai.data import LabeledData
    from lepton_ai.train.job import TrainResult


def quickstart(
    name: str = typer.Option("digits-cnn", help="Registry name for the trained model."),
    epochs: int = typer.Option(10, min=1, help="Training epochs."),
    report: Path = typer.Option(Path("report"), help="Directory for the optimization report."),
    load_seconds: float = typer.Option(5.0, min=0.5, help="Seconds of load test on the served model."),
) -> None:
    """Run the main job end to end on the embedded defaults."""
    console.rule("[bold]1. this machine")
    doctor(json=False)
    console.rule("[bold]2. train cnn-small on digits, register it")
    result = _train(name, epochs)
    console.rule("[bold]3. reload from the registry")
    _reload(result)
    console.rule("[bold]4. optimize it: fastest version within 1 point of accuracy")
    job, runnable = _optimize(result, report)
    console.rule(f"[bold]5. serve {job.ref} over HTTP and load-test it")
    _serve(job.ref, runnable, result.test_data, load_seconds)
    console.rule("[bold]next")
    console.print(
        f"  lepton serve {job.ref} --port 8080    # then: lepton bench serve http://127.0.0.1:8080 "
        f"--payload body.json\n"
        f"  lepton models show {job.ref} --json\n  lepton runs show {result.run_id}\n"
        f"  lepton optimize minilm --data python-docs --max-fidelity-drop 0.01 --batch-size 32\n"
        f"  lepton train --model mlp --data breast_cancer --name cancer-mlp\n"
        "  lepton dashboard    # all of this in a browser: http://127.0.0.1:8000/ (the API under /api/v1)"
    )


def _train(name: str, epochs: int) -> TrainResult:
    """Train cnn-small on digits and register it as `name`; return what the job produced."""
    from lepton_ai.train.job import train_and_register

    description = "quickstart: cnn-small trained on digits"
    return train_and_register(
        "cnn-small", "digits", name, epochs=epochs, lr=3e-3, batch_size=64, description=description
    )


def _reload(result: TrainResult) -> None:
    """Load the registered model back (fetched from the artifact store, sha256 checked) and check that it
    predicts as the trained one does; show its figures."""
    import torch

    from lepton_ai.models import LeptonModel
    from lepton_ai.store import Registry

    ref, metrics, history, test = _registered(result), result.metrics, result.history, result.test_data
    t0 = time.perf_counter()
    info = Registry().get(ref)
    same = LeptonModel.load(ref)
    if not torch.equal(same.predict(test), result.model.predict(test)):
        raise RuntimeError("the model read back from the registry predicts differently from the one saved")
    trained = f"{history['train_seconds']:.1f} s on {history['device']} ({history['precision']})"
    rows = [
        ("test accuracy", f"{metrics['accuracy']:.4f}"),
        ("test f1 (macro)", f"{metrics['f1_macro']:.4f}"),
        ("train time", trained),
        ("size", human_bytes(info.size_bytes)),
        ("sha256", info.sha256),
        ("stored at", info.uri),
        ("run", f"{result.run_id} (lepton runs show {result.run_id})"),
    ]
    print_table(f"{ref}", ("what", "value"), rows)
    seconds = time.perf_counter() - t0
    console.print(
        f"[green]✓[/] trained, registered, verified and reloaded {ref} (round trip {seconds:.2f} s)"
    )


def _optimize(result: TrainResult, report: Path) -> tuple[OptimizeJob, Callable[[Any], Any]]:
    """Register the fastest version within one point of accuracy; check that the registered copy answers
    as the search's winner does; return the job and that copy."""
    from lepton_ai.cli.optimize import show
    from lepton_ai.compress import load_runnable
    from lepton_ai.compress.job import optimize_and_register

    techniques = ("onnx", "int8", "prune")
    job = optimize_and_register(
        _registered(result),
        "digits",
        report_dir=report,
        max_accuracy_drop=0.01,
        batch_size=64,
        techniques=techniques,
        time_budget_s=300,
    )
    show(job.result.report)
    # read back from the registry, as a server would
    runnable = load_runnable(job.ref)
    features = result.test_data.features
    agree = float((runnable(features).argmax(-1) == job.result.best(features).argmax(-1)).float().mean())
    if agree < 1.0:
        raise RuntimeError(
            f"the optimized model read back from the registry disagrees on {1 - agree:.1%} of inputs"
        )
    where = f"{job.report_dir}/report.md, report.png"
    console.print(f"[green]✓[/] registered {job.ref} (parent {job.parent}); report: {where}")
    return job, runnable


def _serve(ref: str, runnable: Callable[[Any], Any], test: LabeledData, load_seconds: float) -> None:
    """Serve `ref` with `lepton serve` in a child process, check through the client that it answers as
    `runnable` does in process, and load-test it."""
    from lepton_ai.cli.serve import show_load
    from lepton_ai.client import Client
    from lepton_ai.serve.loadtest import load_test
    from lepton_ai.serve.server import ServerProcess

    assert test.features is not None
    with ServerProcess([ref]) as server, Client(server.url) as client:
        served = client.predict(inputs=test.features[:64].tolist())["outputs"]
        if served != runnable(test.features[:64]).argmax(-1).tolist():
            raise RuntimeError("the served model answers differently from the same model in process")
        console.print(
            f"[green]✓[/] {server.url}/predict answers like the model in process "
            f"(docs: {server.url}/docs, metrics: {server.url}/metrics)"
        )
        body = {"inputs": [test.features[0].tolist()]}
        show_load(load_test(server.url, body, concurrency=32, duration=load_seconds))


def _registered(result: TrainResult) -> str:
    """Return the reference the training registered (only rank 0 of a data-parallel job has one)."""
    if result.ref is None:
        raise RuntimeError("the training registered no version")
    return result.ref
