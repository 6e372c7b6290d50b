"""Training benchmark (issue 3).

CPU: digits with cnn-small — test accuracy and wall time against the targets (≥ 0.98 in
under 60 s on 2 cores). GPU (when CUDA is present): ResNet-18 at 224 px, batch 128, and
MiniLM fine-tuning at sequence length 128, on synthetic data — training throughput of
fp32 (the baseline), bf16 AMP, +channels_last, +torch.compile, each as a ratio to fp32,
with model FLOP utilisation (FLOP/s achieved over the GPU's dense bf16 peak).

    python benchmarks/train.py [--skip-gpu] [--steps 30] [--out benchmarks/results/train.json]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from common import train_digits_cnn, write_json
from rich.console import Console
from rich.table import Table

from lepton_ai import LeptonModel
from lepton_ai.device import autocast
from lepton_ai.machine import describe, machine_info

# Dense bf16 tensor-core peaks (FLOP/s), from the vendors' datasheets.
BF16_PEAK = {
    "H100 SXM": 989e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H200": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "L40S": 362e12,
}


def bf16_peak(name: str) -> float | None:
    """Return the dense bf16 peak of a GPU by its name, None when unknown."""
    if "H100" in name:
        return (
            BF16_PEAK["H100 PCIe"]
            if "PCIe" in name
            else BF16_PEAK["H100 NVL"]
            if "NVL" in name
            else BF16_PEAK["H100 SXM"]
        )
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


def cpu_digits(epochs: int = 10) -> dict[str, Any]:
    """Train cnn-small on digits as `lepton train` does; return accuracy and time."""
    model, history, (_, _, test) = train_digits_cnn(epochs)
    metrics = model.evaluate(test)
    return {
        "model": "cnn-small",
        "data": "digits",
        "epochs": epochs,
        "threads": torch.get_num_threads(),
        "train_seconds": history["train_seconds"],
        "test_accuracy": metrics["accuracy"],
        "f1_macro": metrics["f1_macro"],
        "target_accuracy": 0.98,
        "target_seconds": 60.0,
        "time_vs_budget": history["train_seconds"] / 60.0,
    }


def train_throughput(
    make_model,
    make_batch,
    device: str,
    precision: str,
    channels_last: bool = False,
    compile: bool = False,
    steps: int = 30,
    warmup: int = 5,
) -> dict[str, Any]:
    """Return samples/s and FLOP/s of full training steps (forward, backward, AdamW)."""
    from torch.utils.flop_counter import FlopCounterMode

    dev = torch.device(device)
    model = make_model().to(dev).train()
    x, y = make_batch(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")
    run = torch.compile(model) if compile else model

    def step() -> None:
        with autocast(dev, precision):
            loss = torch.nn.functional.cross_entropy(run(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    with FlopCounterMode(display=False) as counter:
        with autocast(dev, precision):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
    flops_per_step = counter.get_total_flops()
    opt.zero_grad(set_to_none=True)
    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - t0) / steps
    batch = len(y)
    return {
        "precision": precision,
        "channels_last": channels_last,
        "compile": compile,
        "batch": batch,
        "samples_per_s": batch / seconds,
        "step_ms": seconds * 1e3,
        "flop_per_s": flops_per_step / seconds,
    }


def resnet18_factory(batch: int = 128, side: int = 224):
    """Return (make_model, make_batch) for ResNet-18 on synthetic 224 px images."""

    def make_model() -> torch.nn.Module:
        m = LeptonModel(num_classes=1000, input_size=(3, side, side))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return m.load_pretrained_model("resnet18")

    def make_batch(dev: torch.device):
        g = torch.Generator().manual_seed(0)
        return (
            torch.randn(batch, 3, side, side, generator=g).to(dev),
            torch.randint(0, 1000, (batch,), generator=g).to(dev),
        )

    return make_model, make_batch


def minilm_factory(batch: int = 64, seq: int = 128):
    """Return (make_model, make_batch) for MiniLM fine-tuning on synthetic tokens."""
    from lepton_ai.models.text import TextClassifier, minilm_dir

    # takes a token tensor so channels_last/compile paths stay uniform
    class Tokens(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = TextClassifier(minilm_dir(), num_classes=2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.net({"input_ids": ids, "attention_mask": torch.ones_like(ids)})

    def make_batch(dev: torch.device):
        g = torch.Generator().manual_seed(0)
        return torch.randint(1000, 30000, (batch, seq), generator=g).to(dev), torch.randint(
            0, 2, (batch,), generator=g
        ).to(dev)

    return Tokens, make_batch


def gpu_suite(steps: int) -> dict[str, Any]:
    """Run the ResNet-18 and MiniLM throughput comparisons on the first CUDA GPU."""
    name = torch.cuda.get_device_name(0)
    peak = bf16_peak(name)
    out: dict[str, Any] = {"gpu": name, "bf16_peak_flop_per_s": peak, "resnet18": [], "minilm": []}
    variants = [("fp32", False, False), ("bf16", False, False), ("bf16", True, False), ("bf16", True, True)]
    # fp32 means fp32: the baseline is not TF32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for key, factory, cl_ok in (("resnet18", resnet18_factory(), True), ("minilm", minilm_factory(), False)):
        rows = []
        for precision, channels_last, compile in variants:
            if channels_last and not cl_ok:
                channels_last = False
                if any(r["precision"] == precision and r["compile"] == compile for r in rows):
                    continue
            r = train_throughput(*factory, "cuda", precision, channels_last, compile, steps=steps)
            r["mfu"] = r["flop_per_s"] / peak if peak else None
            rows.append(r)
            torch.cuda.empty_cache()
        base = rows[0]["samples_per_s"]
        for r in rows:
            r["vs_fp32"] = r["samples_per_s"] / base
        out[key] = rows
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-gpu", action="store_true")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    args = parser.parse_args()
    console = Console()
    info = machine_info()
    console.print(f"[bold]machine:[/] {describe(info)}")
    result: dict[str, Any] = {"machine": info, "command": " ".join([Path(sys.executable).name, *sys.argv])}
    result["cpu_digits"] = cpu = cpu_digits()
    t = Table(title="CPU: digits, cnn-small, 10 epochs", title_justify="left")
    for c in ("threads", "train s", "time / 60 s budget", "test accuracy", "target"):
        t.add_column(c)
    ok = cpu["test_accuracy"] >= 0.98 and cpu["train_seconds"] < 60
    t.add_row(
        str(cpu["threads"]),
        f"{cpu['train_seconds']:.1f}",
        f"{cpu['time_vs_budget']:.2f}",
        f"{cpu['test_accuracy']:.4f}",
        "[green]met[/]" if ok else "[red]missed[/]",
    )
    console.print(t)
    if torch.cuda.is_available() and not args.skip_gpu:
        result["gpu"] = gpu = gpu_suite(args.steps)
        for key in ("resnet18", "minilm"):
            t = Table(
                title=f"GPU {gpu['gpu']}: {key} training throughput (fp32 = baseline)", title_justify="left"
            )
            for c in ("precision", "channels_last", "compile", "samples/s", "× fp32", "MFU"):
                t.add_column(c)
            for r in gpu[key]:
                t.add_row(
                    r["precision"],
                    str(r["channels_last"]),
                    str(r["compile"]),
                    f"{r['samples_per_s']:,.0f}",
                    f"{r['vs_fp32']:.2f}",
                    f"{r['mfu']:.1%}" if r["mfu"] else "?",
                )
            console.print(t)
    else:
        console.print("[yellow]no CUDA GPU here: the GPU comparison was not run[/]")
    write_json(args.out, result)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
