"""`lepton train`: fine-tune a model on a data set and register it with its metrics; with
`--nproc N` (and `--nnodes`/`--rdzv` across machines) data-parallel through torchrun."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from lepton_ai.cli.output import console, print_error, print_json
from lepton_ai.errors import InvalidInputError
from lepton_ai.privacy.defaults import DP_TRAINING_DEFAULTS
from lepton_ai.train.recipe import LORA, SCRATCH, SELECT_BY, TRANSFORMER

if TYPE_CHECKING:
    from lepton_ai.privacy.dp import DPConfig
    from lepton_ai.train.job import TrainResult

_DP_DEFAULTS = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in DP_TRAINING_DEFAULTS.items())
# what --help shows as each option's default: the model family's recipe
_FAMILY = {
    key: f"{getattr(SCRATCH, key)} (a pretrained transformer: {getattr(TRANSFORMER, key)}, "
    f"its LoRA adapter: {getattr(LORA, key)})"
    for key in ("epochs", "lr", "batch_size", "schedule")
}
# torchrun's, not the ranks'
LAUNCH_OPTIONS = ("nproc", "nnodes", "rdzv", "node_rank", "rdzv_id")


def train(
    ctx: typer.Context,
    data: Annotated[
        str,
        typer.Option(
            help="digits, breast_cancer, wine, iris, NAME[:VERSION] of `lepton data add`, a CSV/JSONL file "
            "or an image folder."
        ),
    ],
    name: Annotated[str, typer.Option(help="Registry name for the trained model.")],
    model: Annotated[
        str | None,
        typer.Option(help="mlp, cnn-small, resnet18, minilm, a Hugging Face dir or NAME[:VERSION]."),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(help="Start from a backbone of `lepton pretrain` (NAME[:VERSION]) under a fresh head."),
    ] = None,
    label_fraction: Annotated[
        float | None,
        typer.Option(help="Train on this seeded, stratified share of the training labels (e.g. 0.05)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help=f"Default: {_FAMILY['epochs']}.")] = None,
    lr: Annotated[
        float | None, typer.Option(min=0.0, help=f"Learning rate. Default: {_FAMILY['lr']}.")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Examples per step in each process (with --nproc 4, 4× as many per step). "
            f"Default: {_FAMILY['batch_size']}.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = "auto",
    schedule: Annotated[
        str | None,
        typer.Option(
            help=f"cosine, linear (after a warmup), onecycle or none. Default: {_FAMILY['schedule']}."
        ),
    ] = None,
    early_stopping: Annotated[
        int | None, typer.Option(help="Stop after N epochs without a better val loss.")
    ] = None,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Default: $LEPTON_HOME/checkpoints/NAME.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last complete checkpoint.")
    ] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (GPU).")] = False,
    seed: int = 0,
    label: Annotated[str, typer.Option(help="Label column of a CSV/JSONL file.")] = "label",
    text: Annotated[str | None, typer.Option(help="Text column of a CSV/JSONL file.")] = None,
    image_size: Annotated[
        int | None,
        typer.Option(help="Side in pixels images are resized to (default: a dataset's own size, else 64)."),
    ] = None,
    max_length: Annotated[
        int | None, typer.Option(min=2, help="Cut texts at this many tokens. Default: the model's (128).")
    ] = None,
    grad_accum: Annotated[
        int | None, typer.Option(min=1, help="Add up N batches' gradients per optimizer step.")
    ] = None,
    class_weights: Annotated[
        str | None, typer.Option(help="balanced: weigh each class's loss by n / (classes × its count).")
    ] = None,
    sampling: Annotated[
        str, typer.Option(help="random, or balanced: draw each class equally often.")
    ] = "random",
    select_by: Annotated[
        str | None,
        typer.Option(help=f"Keep the best epoch on the validation split by {', '.join(SELECT_BY)}."),
    ] = None,
    head_only: Annotated[
        bool,
        typer.Option(
            "--head-only", help="Train only the head, on the frozen encoder's features (computed once)."
        ),
    ] = False,
    lora: Annotated[
        str | None,
        typer.Option(help="Train a LoRA adapter: r=8[,alpha=16,dropout=0.1]; registered alone (small)."),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    dp_epsilon: Annotated[
        float | None,
        typer.Option(
            help="Train with DP-SGD (Opacus) to this privacy budget ε per "
            "training example; epochs, batch size and lr not given "
            "then take the DP defaults "
            f"({_DP_DEFAULTS})."
        ),
    ] = None,
    dp_delta: Annotated[
        float | None,
        typer.Option(
            help="δ of (ε, δ)-DP, with --dp-epsilon. Default: 1e-5 (keep it below 1 / training examples)."
        ),
    ] = None,
    max_grad_norm: Annotated[
        float | None,
        typer.Option(
            help="Clip gradients to this L2 norm: each example's "
            "with --dp-epsilon (default 1.0), else each batch's."
        ),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(help="Data-parallel processes on this machine (torchrun + DDP; one GPU each on GPU)."),
    ] = 1,
    nnodes: Annotated[int, typer.Option(help="Machines taking part; each runs this same command.")] = 1,
    rdzv: Annotated[
        str | None, typer.Option(help="HOST:PORT where the machines meet (needed with --nnodes > 1).")
    ] = None,
    node_rank: Annotated[
        int | None,
        typer.Option(
            help="This machine's number, 0..nnodes-1 (node 0 listens at "
            "--rdzv); without it machines join in any order."
        ),
    ] = None,
    rdzv_id: Annotated[
        str | None, typer.Option(help="Job id shared by the machines. Default: lepton-NAME.")
    ] = None,
) -> None:
    """Train MODEL on DATA, evaluate on the test split and register the result as NAME."""
    from lepton_ai.privacy.dp import PrivacyNotice
    from lepton_ai.train import distributed
    from lepton_ai.train.job import train_and_register
    from lepton_ai.train.recipe import TrainingNotice

    if (model is None) == (init is None):
        raise InvalidInputError(
            "give --model (an architecture or a model to fine-tune) or --init (a backbone of `lepton "
            "pretrain`), one of the two"
        )
    dp = _dp_config(dp_epsilon, dp_delta, max_grad_norm)
    distributed.check_launch(nproc, nnodes, rdzv, node_rank)
    if dp is not None and (nproc != 1 or nnodes != 1 or rdzv or distributed.world().world_size > 1):
        raise InvalidInputError(
            "DP-SGD (--dp-epsilon) with data-parallel training (--nproc/--nnodes) is not "
            "supported yet: train privately in one process"
        )
    if (nproc != 1 or nnodes != 1 or rdzv) and not distributed.launched():
        raise typer.Exit(_launch(ctx))
    # what the user left out takes the model family's recipe (or the DP defaults)
    given = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "schedule": schedule}
    if dp is None:
        given["max_grad_norm"] = max_grad_norm
    options: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("always", PrivacyNotice)
        warnings.simplefilter("always", TrainingNotice)
        warnings.showwarning = _notices(warnings.showwarning)
        result = train_and_register(
            model or str(init),
            data,
            name,
            seed=seed,
            label_fraction=label_fraction,
            checkpoint_dir=checkpoint_dir,
            data_options={"label": label, "text": text, "image_size": image_size},
            dp=dp,
            device=device,
            precision=precision,
            early_stopping=early_stopping,
            resume=resume,
            compile=compile,
            progress=not json,
            max_length=max_length,
            grad_accum=grad_accum,
            class_weights=class_weights,
            sampling=sampling,
            select_by=select_by,
            head_only=head_only,
            lora=lora,
            **options,
        )
    # another rank of a data-parallel job: rank 0 reports
    if result.ref is not None:
        _report(result, name, json)


def _report(result: TrainResult, name: str, json: bool) -> None:
    """Print what a training registered: one JSON document, or a line of figures (and the privacy spent)."""
    from lepton_ai.privacy.dp import describe

    ref, metrics, history = result.ref, result.metrics, result.history
    assert ref is not None
    doc = {
        "name": name,
        "version": int(ref.rsplit(":", 1)[1]),
        "metrics": metrics,
        "train_seconds": history["train_seconds"],
        "device": history["device"],
        "precision": history["precision"],
        "run_id": result.run_id,
        "resumed_from_epoch": history["resumed_from_epoch"],
        "world_size": history["world_size"],
        "epoch_seconds": [row["seconds"] for row in history["epochs"]],
        "method": history["method"],
        "best_epoch": history["best_epoch"],
        "selected_by": history["selected_by"],
        "privacy": history.get("privacy"),
    }
    if json:
        print_json(doc)
        return
    parallel = f" × {history['world_size']} processes" if history["world_size"] > 1 else ""
    resumed = (
        f" (resumed at epoch {history['resumed_from_epoch'] + 1})" if history["resumed_from_epoch"] else ""
    )
    console.print(
        f"[green]✓[/] {ref}: test accuracy {metrics['accuracy']:.4f}, f1 {metrics['f1_macro']:.4f}, "
        f"loss {metrics['loss']:.4f} · {history['train_seconds']:.1f} s on {history['device']} "
        f"({history['precision']}){parallel}{resumed} · {_method(history)}"
    )
    if doc["privacy"]:
        console.print(f"  privacy: {describe(doc['privacy'])}", highlight=False)


def _method(history: dict[str, Any]) -> str:
    """Return what trained and which epoch was kept, e.g. "lora, epoch 3 of 4 kept by f1_macro"."""
    kept = history["best_epoch"]
    if kept < 0 or not history["selected_by"]:
        return history["method"]
    return (
        f"{history['method']}, epoch {kept + 1} of {len(history['epochs'])} kept by {history['selected_by']}"
    )


def _dp_config(epsilon: float | None, delta: float | None, max_grad_norm: float | None) -> DPConfig | None:
    from lepton_ai.privacy.dp import DPConfig

    if epsilon is None:
        if delta is not None:
            raise InvalidInputError(
                "--dp-delta needs --dp-epsilon (the privacy budget), e.g. --dp-epsilon 3 --dp-delta 1e-5"
            )
        if max_grad_norm is not None and max_grad_norm <= 0:
            raise InvalidInputError(f"--max-grad-norm must be > 0, got {max_grad_norm}")
        return None
    return DPConfig.of({"epsilon": epsilon, "delta": delta, "max_grad_norm": max_grad_norm})


def _notices(show: Callable[..., None]) -> Callable[..., None]:
    """Return a `warnings.showwarning` that prints a PrivacyNotice or a TrainingNotice as one `note:` line on
    stderr and hands the other warnings to `show`."""
    from lepton_ai.privacy.dp import PrivacyNotice
    from lepton_ai.train.recipe import TrainingNotice

    def showwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, (PrivacyNotice, TrainingNotice)):
            print_error(message, "note")
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def _launch(ctx: typer.Context) -> int:
    """Run this same `lepton train` (less the launch options) in torchrun's processes; return its exit
    code."""
    import torch

    from lepton_ai.data import load
    from lepton_ai.device import resolve_device, resolve_precision
    from lepton_ai.machine import cpu_info
    from lepton_ai.train import distributed

    p = ctx.params
    nproc, nnodes, rdzv, node_rank = p["nproc"], p["nnodes"], p["rdzv"], p["node_rank"]
    # mistakes once here, not once per rank
    dev = resolve_device(p["device"])
    resolve_precision(p["precision"], dev)
    if dev.type == "cuda" and nproc > torch.cuda.device_count():
        raise InvalidInputError(
            f"--nproc {nproc} but this machine has {torch.cuda.device_count()} GPU(s): one GPU per "
            "process, so use fewer processes or --device cpu"
        )
    examples = len(
        load(p["data"], "train", seed=p["seed"], label=p["label"], text=p["text"], image_size=p["image_size"])
    )
    if nproc * nnodes > examples:
        raise InvalidInputError(
            f"{nproc * nnodes} processes but {p['data']} has {examples} training examples: "
            "each process needs at least one"
        )
    args = [ctx.info_name or "train"]
    # every option as given (or defaulted), so the ranks run the same job
    for param in ctx.command.params:
        value = p.get(param.name)
        if param.name in LAUNCH_OPTIONS or value is None:
            continue
        if getattr(param, "is_flag", False):
            args += [param.opts[0]] if value else []
        else:
            args += [param.opts[0], str(value)]
    argv = distributed.torchrun_argv(
        nproc, nnodes, rdzv, node_rank, args, p["rdzv_id"] or f"lepton-{p['name']}"
    )
    # what each rank will use
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cpu_info()["cores"] // nproc))}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
    try:
        assert proc.stderr is not None
        cause = _relay_stderr(proc.stderr)
        code = proc.wait()
    except KeyboardInterrupt:
        # torchrun got the same Ctrl-C: let it stop its processes
        proc.wait()
        raise
    if code:
        print_error(
            f"data-parallel training failed: {cause or 'a process failed'} (torchrun exit code {code})"
        )
    return code


_SUPERVISOR_LOG = re.compile(r"^[IWE]\d{4} [\d:.]+ +\d+ \S*torch/distributed/elastic/")


def _relay_stderr(stream: Iterator[str]) -> str | None:
    """Copy the ranks' stderr through as it comes, leaving out torchrun's own process supervision chatter
    and its closing traceback; return the root cause torchrun names ("rank 1 exited with code 2"), if any."""
    block: list[str] = []
    for line in stream:
        if block or line.startswith("Traceback (most recent call last):"):
            # held until we know whose traceback it is
            block.append(line)
            if line[:1].isspace() or line.startswith("Traceback"):
                continue
            # torchrun's own: its report ends the stream
            if any("torch/distributed/run.py" in b for b in block):
                report = "".join([*block, *stream]).split("Root Cause", 1)[-1]
                rank, code = (
                    re.search(r"rank\s*:\s*(\d+)", report),
                    re.search(r"exitcode\s*:\s*(-?\d+)", report),
                )
                if not (rank and code):
                    return None
                n = int(code[1])
                if n >= 0:
                    return f"rank {rank[1]} exited with code {n}"
                killer = signal.Signals(-n).name if -n in signal.valid_signals() else -n
                return f"rank {rank[1]} was killed by {killer}"
            sys.stderr.writelines(block)
            block = []
        elif not _SUPERVISOR_LOG.match(line):
            sys.stderr.write(line)
        sys.stderr.flush()
    sys.stderr.writelines(block)
    return None
