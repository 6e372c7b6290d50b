"""The accuracy-aware search: build candidates, measure each on this machine, reject those
over the allowed quality drop or slower than the baseline, return the best that passes.

Quality is accuracy for classifiers and fidelity for embedding models: the mean cosine
similarity of a candidate's embeddings to the baseline's on the same sentences."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from lepton_ai.compress.agreement import agreements
from lepton_ai.compress.artifact import OnDevice, computes_bf16, int8_stored
from lepton_ai.compress.lengths import ByLength
from lepton_ai.compress.measure import measure, size_bytes
from lepton_ai.compress.onnx import OnnxModel, export_onnx
from lepton_ai.compress.options import TECHNIQUES, check_metric, check_options
from lepton_ai.compress.prune import prune_structured
from lepton_ai.compress.quantize import quantizable_nodes, quantize_onnx, quantize_torch
from lepton_ai.compress.settle import Choice, Ratio, Settled, choose, settle
from lepton_ai.compress.trial import OptimizeResult, Trial
from lepton_ai.machine import machine_info
from lepton_ai.models import LeptonModel
from lepton_ai.models.text import TextClassifier

Objective = Literal["throughput", "latency", "size"]
_EVAL_BATCH = 64
# candidates measured interleaved with the baseline: those within this share of the best single measurement
CONTENDER, MAX_CONTENDERS = 0.7, 4


class _Search:
    """The state of one search: inputs, the baseline's outputs, the trials so far, the clock."""

    def __init__(
        self,
        model: LeptonModel,
        eval_data: Any,
        calib: Any,
        batch_size: int,
        seq_len: int,
        max_drop: float,
        time_budget_s: float,
        work: Path,
        progress: bool,
        metric: str,
    ) -> None:
        from lepton_ai.data.inputs import as_inputs, batches

        self.model, self.batch_size, self.work, self.progress = model, batch_size, work, progress
        self.max_drop, self.metric = max_drop, metric
        self.deadline = time.perf_counter() + time_budget_s
        xs = as_inputs(model, eval_data)
        self.labels = eval_data.labels
        self.eval_batches = list(batches(model, xs, _EVAL_BATCH, torch.device("cpu")))
        # speed is measured at a fixed sequence length, quality on the real lengths
        if isinstance(model.net, TextClassifier):
            self.speed_inputs = model.net.tokenizer(
                list(eval_data.texts[:batch_size]),
                padding="max_length",
                truncation=True,
                max_length=seq_len,
                return_tensors="pt",
            ).data
            self.calib: list[Any] = []
        else:
            self.speed_inputs = xs
            self.calib = [calib.features[i : i + 64].numpy() for i in range(0, min(len(calib), 512), 64)]
        self.reference: torch.Tensor | None = None
        self.trials: list[Trial] = []

    def time_left(self) -> bool:
        return time.perf_counter() < self.deadline

    def seconds_left(self) -> float:
        return self.deadline - time.perf_counter()

    def drop(self, t: Trial) -> float:
        """How much quality `t` lost against the baseline (the first trial)."""
        return self.trials[0].quality - t.quality

    def holds(self, t: Trial) -> bool:
        """Whether `t` is within the quality bar: a NaN (a runtime that computed garbage) is not."""
        return self.drop(t) <= self.max_drop

    @torch.inference_mode()
    def quality(self, runnable: Callable[[Any], torch.Tensor]) -> float:
        """Accuracy or macro-F1 against the labels, or mean cosine similarity to the baseline's embeddings."""
        out = torch.cat([runnable(b).float() for b in self.eval_batches])
        if self.metric == "accuracy":
            return float((out.argmax(-1) == self.labels).float().mean())
        if self.metric == "f1_macro":
            from sklearn.metrics import f1_score

            classes = list(range(out.shape[-1]))
            pred = out.argmax(-1).numpy()
            return float(
                f1_score(self.labels.numpy(), pred, average="macro", labels=classes, zero_division=0)
            )
        if self.reference is None:
            self.reference = out
        return float(nn.functional.cosine_similarity(out, self.reference, dim=-1).mean())

    def trial(self, name: str, recipe: dict[str, Any], runnable: Any, source: nn.Module) -> Trial:
        with torch.inference_mode():
            q = self.quality(runnable)
            speed = measure(runnable, self.speed_inputs, batch_size=self.batch_size, min_seconds=1.0)
        t = Trial(
            name,
            recipe,
            self.metric,
            q,
            size_bytes(runnable),
            speed["latency_ms_p50"],
            speed["latency_ms_p99"],
            speed["throughput_per_s"],
            model=runnable,
            source=source,
        )
        self.trials.append(t)
        if self.progress:
            print(
                f"  {name:<36} {self.metric} {q:.4f}  {t.throughput_per_s:>10,.1f}/s  "
                f"p50 {t.latency_ms_p50:8.3f} ms  {t.size_bytes / 1e6:8.2f} MB",
                flush=True,
            )
        return t

    def onnx_family(self, prefix: str, net: LeptonModel, recipe: dict[str, Any], int8: bool) -> None:
        """ONNX Runtime fp32 (graph-optimised; weights stored in int8 where that costs no quality), then int8
        dynamic and static, falling back to fp32 layer by layer where int8 costs more quality than allowed."""
        fp32 = export_onnx(net, self.work / f"{prefix}fp32.onnx")
        tokenizer = getattr(getattr(net, "net", None), "tokenizer", None)
        plain = {**recipe, "runtime": "onnxruntime", "precision": "fp32"}
        t = None
        # Int8-stored weights load as the same fp32 program from a quarter of the file: one candidate, not two
        # timings of one program that noise could split. Transformers store int8 weights in int8 dynamic.
        if int8 and not net.is_text:
            w8 = quantize_onnx(fp32, self.work / f"{prefix}int8-weights.onnx", "weights")
            t = self.trial(f"{prefix}onnx-int8-weights", {**plain, "weights": "int8"}, OnnxModel(w8), net)
        if t is None or not self.holds(t):
            t = self.trial(f"{prefix}onnx-fp32", plain, OnnxModel(fp32, tokenizer=tokenizer), net)
        if not int8 or not self.holds(t):
            # int8 only loses quality: not worth trying below the bar already
            return
        methods: tuple[Literal["dynamic", "static"], ...] = (
            ("dynamic",) if net.is_text else ("dynamic", "static")
        )
        for method in methods:
            if not self.time_left():
                return
            name, path = f"{prefix}onnx-int8-{method}", self.work / f"{prefix}int8-{method}.onnx"
            rec = {
                **recipe,
                "runtime": "onnxruntime",
                "precision": "int8",
                "quantization": method,
                "per_channel": True,
            }

            def build(
                exclude: list[str], out: Path = path, method: Literal["dynamic", "static"] = method
            ) -> OnnxModel:
                q = quantize_onnx(
                    fp32, out, method, calib=self.calib if method == "static" else None, exclude=exclude
                )
                return OnnxModel(q, tokenizer=tokenizer)

            t = self.trial(name, rec, build([]), net)
            if not self.holds(t):
                self.fallback(name, rec, build, t.quality, fp32, net)

    def fallback(
        self,
        name: str,
        recipe: dict[str, Any],
        build: Callable[..., Any],
        quality: float,
        fp32: Path,
        source: nn.Module,
    ) -> None:
        """Keep in fp32 the layers whose int8 hurts quality most, one more at a time, until it passes."""
        groups = quantizable_nodes(fp32)
        if len(groups) < 2:
            return
        scratch = self.work / "sensitivity.onnx"
        gains = []
        # what keeping this one layer in fp32 buys back
        for group in groups:
            if not self.time_left():
                return
            gains.append(self.quality(build(group, scratch)) - quality)
        order = sorted(range(len(groups)), key=lambda i: -gains[i])
        kept: list[int] = []
        for i in order[: max(1, len(groups) // 2)]:
            if not self.time_left():
                return
            kept.append(i)
            exclude = [n for k in kept for n in groups[k]]
            path = self.work / f"{name}-fallback{len(kept)}.onnx"
            t = self.trial(
                f"{name} +{len(kept)} fp32 layer{'s' if len(kept) > 1 else ''}",
                {**recipe, "fp32_fallback": exclude},
                build(exclude, path),
                source,
            )
            if self.holds(t):
                return

    def torch_family(
        self, prefix: str, net: LeptonModel, recipe: dict[str, Any], techniques: set[str]
    ) -> None:
        """PyTorch int8 (dynamic linears and embeddings), torch.compile, and fp16/bf16 on a GPU."""
        linear = sum(m.weight.numel() for m in net.modules() if isinstance(m, (nn.Linear, nn.Embedding)))
        if (
            "pytorch-int8" in techniques
            and linear > 0.5 * sum(p.numel() for p in net.parameters())
            and self.time_left()
        ):
            self.trial(
                f"{prefix}pytorch-int8-dynamic",
                {
                    **recipe,
                    "runtime": "pytorch",
                    "precision": "int8",
                    "quantization": "dynamic",
                    "per_channel": True,
                },
                quantize_torch(net),
                net,
            )
        if "bf16" in techniques and computes_bf16() and self.time_left():
            self.trial(
                f"{prefix}pytorch-bf16",
                {**recipe, "runtime": "pytorch", "precision": "bf16", "weights": "int8"},
                int8_stored(net, torch.bfloat16, self.work / f"{prefix}bf16-int8.safetensors"),
                net,
            )
        if "compile" in techniques and self.time_left():
            compiled = torch.compile(net)
            self.trial(
                f"{prefix}torch.compile",
                {**recipe, "runtime": "pytorch", "precision": "fp32", "compile": True},
                compiled,
                net,
            )
        if "gpu" in techniques and torch.cuda.is_available():
            import copy

            dev = torch.device("cuda")
            half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            for dtype in (torch.float32, half):
                if self.time_left():
                    precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
                    self.trial(
                        f"{prefix}cuda-{precision}",
                        {**recipe, "runtime": "pytorch", "device": "cuda", "precision": precision},
                        OnDevice(copy.deepcopy(net).eval(), dtype, dev),
                        net,
                    )

    def pruned_family(
        self, model: LeptonModel, train_data: Any, amounts: tuple[float, ...], epochs: int, chosen: set[str]
    ) -> None:
        """Try students of `model` pruned by each of `amounts` and distilled from it, in each runtime."""
        from lepton_ai.compress.distill import distill

        lr = 1e-4 if model.is_text else 2e-3
        for amount in amounts:
            if not self.time_left():
                return
            student = prune_structured(model, amount)
            batch_size = 32 if model.is_text else 64
            distill(
                model,
                student,
                train_data,
                epochs=epochs,
                lr=lr,
                batch_size=batch_size,
                device="cpu",
                progress=self.progress,
            )
            student.eval()
            recipe = {"prune": {"structured": amount}, "distill": {"epochs": epochs, "lr": lr}}
            prefix = f"pruned{amount:g}-"
            t = self.trial(
                f"{prefix}eager", {**recipe, "runtime": "pytorch", "precision": "fp32"}, student, student
            )
            if "onnx" in chosen:
                self.onnx_family(prefix, student, recipe, "int8" in chosen)
            if self.holds(t):
                self.torch_family(prefix, student, recipe, chosen - {"compile", "gpu"})

    def by_length_family(self) -> None:
        """The baseline, and each text candidate so far within the bar and not slower, run in groups of
        similar length cut to their longest (not torch.compile's: each new width would compile again)."""
        base = self.trials[0]
        for t in list(self.trials):
            slower = t is not base and t.throughput_per_s < base.throughput_per_s
            if not self.time_left() or t.recipe.get("compile") or slower or not self.holds(t):
                continue
            name = f"{'eager' if t is base else t.name} by-length"
            self.trial(name, {**t.recipe, "batching": "by-length"}, ByLength(t.model), t.source)


def optimize(
    model: LeptonModel,
    eval_data: Any,
    calib_data: Any = None,
    train_data: Any = None,
    *,
    max_accuracy_drop: float | None = None,
    max_fidelity_drop: float | None = None,
    min_attribution_agreement: float | None = None,
    metric: str | None = None,
    objective: Objective = "throughput",
    batch_size: int = 64,
    time_budget_s: float = 600,
    techniques: tuple[str, ...] = TECHNIQUES,
    prune_amounts: tuple[float, ...] | None = None,
    distill_epochs: int | None = None,
    seq_len: int = 128,
    tie_tolerance: float = 0.05,
    workdir: str | Path | None = None,
    progress: bool = True,
) -> OptimizeResult:
    """Return the fastest (or lowest-latency, or smallest, per `objective`) candidate of `model`
    whose quality on `eval_data` is within the allowed drop of the eager fp32 baseline and that
    is not slower. Classifiers are held to `max_accuracy_drop` (default 0.01) of their `metric`: accuracy,
    or "f1_macro" (on imbalanced classes accuracy hides what compression costs the small ones); embedding
    models (num_classes=0) to `max_fidelity_drop` (default 0.01) in mean cosine similarity. Candidates
    within `tie_tolerance` of the best on the objective count as tied; the smallest of them wins. An image or
    table classifier's candidates report how their attributions agree with the baseline's, and
    `min_attribution_agreement` rejects those below it."""
    embedding = getattr(model, "is_embedding", False)
    max_drop, what = check_options(
        embedding, max_accuracy_drop, max_fidelity_drop, objective, techniques, batch_size, time_budget_s
    )
    metric = check_metric(embedding, metric)
    from lepton_ai.data.inputs import check_data

    check_data(model, eval_data)
    for data in (calib_data, train_data):
        if data is not None:
            check_data(model, data)
    model.eval().cpu()
    work = Path(workdir or tempfile.mkdtemp(prefix="lepton-optimize-"))
    work.mkdir(parents=True, exist_ok=True)
    calib = calib_data if calib_data is not None else (train_data if train_data is not None else eval_data)
    search = _Search(
        model, eval_data, calib, batch_size, seq_len, max_drop, time_budget_s, work, progress, metric
    )
    start, chosen = time.perf_counter(), set(techniques)

    search.trial("baseline (eager fp32)", {"runtime": "pytorch", "precision": "fp32"}, model, model)
    if "onnx" in chosen:
        search.onnx_family("", model, {}, "int8" in chosen)
    search.torch_family("", model, {}, chosen)
    prunable = model.is_text or model.arch in ("mlp", "cnn-small", "resnet18")
    if "prune" in chosen and train_data is not None and prunable:
        amounts = prune_amounts or ((0.25,) if model.is_text else (0.5,))
        search.pruned_family(
            model, train_data, amounts, distill_epochs or (3 if model.is_text else 4), chosen
        )
    if "by-length" in chosen and model.is_text:
        search.by_length_family()

    trials = search.trials
    base = trials[0]
    if not embedding and not model.is_text:
        agreements(trials, eval_data.features, min_attribution_agreement)
    for t in trials[1:]:
        if not t.accepted:
            continue
        if math.isnan(t.quality):
            t.accepted, t.reason = False, f"{search.metric} is NaN: this runtime computed garbage"
        elif not search.holds(t):
            t.accepted, t.reason = False, f"{search.metric} drop {search.drop(t):.4f} > allowed {max_drop}"
        elif t.throughput_per_s < base.throughput_per_s and objective != "size":
            t.accepted, t.reason = False, "slower than the baseline"
    best, choice, settled = _decide(search, objective, tie_tolerance)
    # chosen on size, nothing was measured interleaved: the search's one measurement of each
    speedup = best.speedup or Ratio.of([best.throughput_per_s / base.throughput_per_s])
    latency_speedup = best.latency_speedup or Ratio.of([base.latency_ms_p50 / best.latency_ms_p50])
    report = {
        "machine": machine_info(),
        "objective": objective,
        "metric": search.metric,
        "batch_size": batch_size,
        **({"sequence_length": seq_len} if model.is_text else {}),
        what: max_drop,
        "tie_tolerance": tie_tolerance,
        "baseline": base.figures(),
        "best": best.figures(),
        "speedup": speedup.median,
        "speedup_range": [speedup.low, speedup.high],
        "latency_speedup": latency_speedup.median,
        "choice": choice.to_dict(),
        "settled": None
        if settled is None
        else {k: getattr(settled, k) for k in ("rounds", "seconds", "threads")},
        "size_reduction": base.size_bytes / best.size_bytes,
        f"{search.metric}_drop": base.quality - best.quality,
        "trials": [t.figures() for t in trials],
        "search_seconds": time.perf_counter() - start,
    }
    return OptimizeResult(best=best.model, best_trial=best, baseline=base, trials=trials, report=report)


def _decide(search: _Search, objective: Objective, tolerance: float) -> tuple[Trial, Choice, Settled | None]:
    """Return the trial to choose, how sure the choice is and the interleaved measurement it rests on: the
    candidates that could win (by the search's single measurements) and the baseline, measured in rounds
    until their ratios settle; those it shows slower than the baseline are rejected. Size needs no timing."""
    trials, base = search.trials, search.trials[0]
    score: dict[str, Callable[[Trial], float]] = {
        "throughput": lambda t: t.throughput_per_s,
        "latency": lambda t: 1 / t.latency_ms_p50,
        "size": lambda t: 1 / t.size_bytes,
    }
    accepted = sorted((t for t in trials if t.accepted), key=score[objective], reverse=True)
    if objective == "size":
        ratios = {t.name: Ratio.of([score["size"](t)]) for t in accepted}
        name, tied = choose(ratios, {t.name: t.size_bytes for t in accepted}, tolerance)
        return next(t for t in accepted if t.name == name), Choice(name, tied, None), None
    top = score[objective](accepted[0])
    contenders = [t for t in accepted if t is not base and score[objective](t) >= CONTENDER * top]
    runnables = {base.name: base.model, **{t.name: t.model for t in contenders[:MAX_CONTENDERS]}}
    settled = settle(runnables, search.speed_inputs, search.batch_size, max(5.0, search.seconds_left()))
    for t in trials:
        t.speedup, t.latency_speedup = settled.throughput.get(t.name), settled.latency.get(t.name)
        if t is not base and t.speedup is not None and t.speedup.median < 1 and objective == "throughput":
            t.accepted, t.reason = False, f"slower than the baseline (×{t.speedup.median:.2f} interleaved)"
    ratios = settled.throughput if objective == "throughput" else settled.latency
    sizes = {t.name: t.size_bytes for t in trials if t.accepted and t.name in ratios}
    name, tied = choose({n: ratios[n] for n in sizes}, sizes, tolerance)
    share = settled.fastest_rounds[name] / settled.rounds
    return next(t for t in trials if t.name == name), Choice(name, tied, share), settled
