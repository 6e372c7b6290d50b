"""The accuracy-aware search: build candidates, measure each on this machine, reject those
over the allowed accuracy drop or slower than the baseline, return the best that passes."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from torch import nn

from lepton_ai.compress.measure import measure, size_bytes
from lepton_ai.compress.onnx import OnnxModel, export_onnx
from lepton_ai.compress.prune import prune_structured
from lepton_ai.compress.quantize import quantize_onnx
from lepton_ai.errors import InvalidInputError
from lepton_ai.machine import machine_info

Objective = Literal["throughput", "latency", "size"]


@dataclass
class Trial:
    """One candidate with its recipe, its figures and the verdict."""

    name: str
    recipe: dict[str, Any]
    accuracy: float
    size_bytes: int
    latency_ms_p50: float
    latency_ms_p99: float
    throughput_per_s: float
    accepted: bool = True
    reason: str = ""
    model: Any = field(default=None, repr=False)

    def figures(self) -> dict[str, Any]:
        """Return the JSON-ready figures (without the runnable model)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}


@dataclass
class OptimizeResult:
    """The search's outcome: `best` is runnable; `report` is what `save` writes."""

    best: Any
    best_trial: Trial
    baseline: Trial
    trials: list[Trial]
    report: dict[str, Any]

    def save(self, directory: str | Path) -> Path:
        """Write report.json, report.md and report.png into `directory`; return it."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write(out / "report.json", json.dumps(self.report, indent=2))
        _atomic_write(out / "report.md", _markdown(self.report))
        _plot(self.report, out / "report.png")
        return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _accuracy(predict: Callable[[torch.Tensor], torch.Tensor], data: Any) -> float:
    preds = torch.cat([predict(data.features[i:i + 256]).argmax(-1) for i in range(0, len(data), 256)])
    return float((preds == data.labels).float().mean())


def optimize(model: nn.Module, eval_data: Any, calib_data: Any = None, train_data: Any = None, *,
             max_accuracy_drop: float = 0.01, objective: Objective = "throughput", batch_size: int = 64,
             time_budget_s: float = 600, prune_amounts: tuple[float, ...] = (0.5,), workdir: str | Path | None = None,
             progress: bool = True) -> OptimizeResult:
    """Return the fastest (or smallest, per `objective`) candidate of `model` whose accuracy on
    `eval_data` is within `max_accuracy_drop` of the eager fp32 baseline and that is not slower."""
    if objective not in ("throughput", "latency", "size"):
        raise InvalidInputError(f"objective must be throughput, latency or size, not {objective!r}")
    if not 0 <= max_accuracy_drop < 1:
        raise InvalidInputError(f"max_accuracy_drop must be in [0, 1), got {max_accuracy_drop}")
    if getattr(model, "is_text", False):
        raise InvalidInputError("text models are optimized by fidelity, which is not built yet (issue 4)")
    from lepton_ai.train.loop import check_data

    check_data(model, eval_data)
    model = model.eval().cpu()
    calib = calib_data if calib_data is not None else (train_data if train_data is not None else eval_data)
    work = Path(workdir or tempfile.mkdtemp(prefix="lepton-optimize-"))
    start = time.perf_counter()
    x = eval_data.features
    trials: list[Trial] = []

    def trial(name: str, recipe: dict[str, Any], runnable: Any) -> None:
        with torch.inference_mode():
            speed = measure(runnable, x, batch_size=batch_size, min_seconds=0.5)
            acc = _accuracy(runnable, eval_data)
        t = Trial(name, recipe, acc, size_bytes(runnable), speed["latency_ms_p50"], speed["latency_ms_p99"],
                  speed["throughput_per_s"], model=runnable)
        trials.append(t)
        if progress:
            print(f"  {name:<28} acc {acc:.4f}  {t.throughput_per_s:>10,.0f}/s  p50 {t.latency_ms_p50:.3f} ms  "
                  f"{t.size_bytes / 1e3:,.0f} kB")

    def onnx_family(prefix: str, net: nn.Module, recipe: dict[str, Any]) -> None:
        fp32 = export_onnx(net, work / f"{prefix}fp32.onnx")
        trial(f"{prefix}onnx-fp32", {**recipe, "runtime": "onnxruntime", "precision": "fp32"}, OnnxModel(fp32))
        for method in ("dynamic", "static"):
            if time.perf_counter() - start > time_budget_s:
                return
            batches = [calib.features[i:i + 64].numpy() for i in range(0, min(len(calib), 512), 64)]
            q = quantize_onnx(fp32, work / f"{prefix}int8-{method}.onnx", method,
                              calib=batches if method == "static" else None)
            trial(f"{prefix}onnx-int8-{method}", {**recipe, "runtime": "onnxruntime", "precision": "int8",
                                                   "quantization": method, "per_channel": True}, OnnxModel(q))

    trial("baseline (eager fp32)", {"runtime": "pytorch", "precision": "fp32"}, model)
    onnx_family("", model, {})
    if train_data is not None and getattr(model, "arch", None) in ("mlp", "cnn-small", "resnet18"):
        from lepton_ai.compress.distill import distill

        for amount in prune_amounts:
            if time.perf_counter() - start > time_budget_s:
                break
            student = prune_structured(model, amount)
            distill(model, student, train_data, epochs=4, lr=2e-3, device="cpu", progress=False)
            recipe = {"prune": {"structured": amount}, "distill": {"epochs": 4, "temperature": 4.0}}
            trial(f"pruned{amount:g}+distilled", {**recipe, "runtime": "pytorch", "precision": "fp32"}, student.eval())
            onnx_family(f"pruned{amount:g}-", student.eval(), recipe)

    base = trials[0]
    for t in trials[1:]:
        drop = base.accuracy - t.accuracy
        if drop > max_accuracy_drop:
            t.accepted, t.reason = False, f"accuracy drop {drop:.4f} > allowed {max_accuracy_drop}"
        elif t.throughput_per_s < base.throughput_per_s and objective != "size":
            t.accepted, t.reason = False, "slower than the baseline"
    key = {"throughput": lambda t: t.throughput_per_s, "latency": lambda t: -t.latency_ms_p50,
           "size": lambda t: -t.size_bytes}[objective]
    best = max((t for t in trials if t.accepted), key=key)
    report = {
        "machine": machine_info(), "objective": objective, "batch_size": batch_size,
        "max_accuracy_drop": max_accuracy_drop, "baseline": base.figures(), "best": best.figures(),
        "speedup": best.throughput_per_s / base.throughput_per_s,
        "size_reduction": base.size_bytes / best.size_bytes, "accuracy_drop": base.accuracy - best.accuracy,
        "trials": [t.figures() for t in trials], "search_seconds": time.perf_counter() - start,
    }
    return OptimizeResult(best=best.model, best_trial=best, baseline=base, trials=trials, report=report)


def _markdown(r: dict[str, Any]) -> str:
    cpu = r["machine"]["cpu"]
    lines = ["# Optimization report\n",
             f"Machine: {cpu['model']} ({cpu['cores']} cores, {' '.join(cpu['flags'])}); "
             f"GPUs: {', '.join(g['name'] for g in r['machine']['gpus']) or 'none'}\n",
             f"Best: **{r['best']['name']}** — speedup ×{r['speedup']:.2f} (throughput at batch {r['batch_size']}), "
             f"size ÷{r['size_reduction']:.2f}, accuracy drop {r['accuracy_drop']:+.4f}\n",
             "| candidate | accuracy | throughput/s | p50 ms | p99 ms | size kB | verdict |",
             "|---|---|---|---|---|---|---|"]
    for t in r["trials"]:
        verdict = "best" if t["name"] == r["best"]["name"] else ("ok" if t["accepted"] else t["reason"])
        lines.append(f"| {t['name']} | {t['accuracy']:.4f} | {t['throughput_per_s']:,.0f} | {t['latency_ms_p50']:.3f} | "
                     f"{t['latency_ms_p99']:.3f} | {t['size_bytes'] / 1e3:,.0f} | {verdict} |")
    return "\n".join(lines) + "\n"


def _plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in r["trials"]:
        colour = "tab:green" if t["name"] == r["best"]["name"] else ("tab:blue" if t["accepted"] else "tab:red")
        ax.scatter(t["throughput_per_s"], t["accuracy"], color=colour)
        ax.annotate(t["name"], (t["throughput_per_s"], t["accuracy"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.axhline(r["baseline"]["accuracy"] - r["max_accuracy_drop"], color="grey", ls="--", lw=1, label="allowed drop")
    ax.set_xscale("log")
    ax.set_xlabel(f"throughput (examples/s, batch {r['batch_size']})")
    ax.set_ylabel("accuracy")
    ax.set_title("candidates: green = chosen, red = rejected")
    ax.legend(loc="lower left")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
