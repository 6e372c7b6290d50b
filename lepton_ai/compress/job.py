"""A whole optimization job: load a model and data → `optimize` → report → registry, recorded
as a run. `lepton optimize` and `lepton quickstart` are this function."""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lepton_ai.compress.optimize import OptimizeResult, optimize
from lepton_ai.compress.options import TECHNIQUES, check_metric, check_options
from lepton_ai.errors import InvalidInputError, NotFoundError


@dataclass
class OptimizeJob:
    """What an optimization job produced: the registered best, its parent and the report."""

    ref: str
    parent: str
    result: OptimizeResult
    report_dir: Path
    run_id: int


def _source(model: str, embedding: bool) -> tuple[Any, str | None]:
    """The model to optimize and, when it is registered, its exact `NAME:VERSION`."""
    from lepton_ai.models import ARCHITECTURES, LeptonModel
    from lepton_ai.models.text import is_hf_dir
    from lepton_ai.store import Registry

    if model in ARCHITECTURES:
        raise InvalidInputError(
            f"{model} is an untrained architecture: train it first (lepton train) and "
            "optimize the registered model"
        )
    if model == "minilm" or is_hf_dir(Path(model).expanduser()):
        if not embedding:
            raise InvalidInputError(
                f"{model} is optimized as an embedding model: give a text file of sentences "
                "(one per line) or python-docs as --data"
            )
        return LeptonModel(num_classes=0).load_pretrained_model(model), None
    if Path(model).expanduser().exists():
        return LeptonModel.load(model), None
    try:
        # pinned, so a version registered meanwhile is not mixed in
        ref = Registry().get(model).ref
        return LeptonModel.load(ref), ref
    except NotFoundError as e:
        raise NotFoundError(
            f"no model {model!r}: not minilm, a Hugging Face directory, a saved model nor in the "
            f"registry ({e})"
        ) from e


def optimize_and_register(
    model: str,
    data: str,
    *,
    name: str | None = None,
    report_dir: str | Path | None = None,
    data_options: dict[str, Any] | None = None,
    progress: bool = True,
    **options: Any,
) -> OptimizeJob:
    """Optimize `model` (a registry ref, saved dir, HF dir or `minilm`) on `data`, write the report
    and register the best as the next version of `name` with its parent and recipe."""
    from lepton_ai.data import load
    from lepton_ai.store import Registry
    from lepton_ai.store.refs import check_name, parse_ref

    splits = {s: load(data, s, **(data_options or {})) for s in ("train", "val", "test")}
    check_options(
        splits["test"].num_classes == 0,
        options.get("max_accuracy_drop"),
        options.get("max_fidelity_drop"),
        options.get("objective", "throughput"),
        options.get("techniques", TECHNIQUES),
        # before anything is written
        options.get("batch_size", 1),
        options.get("time_budget_s", 1),
    )
    check_metric(splits["test"].num_classes == 0, options.get("metric"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, parent = _source(model, splits["test"].num_classes == 0)
    name = check_name(name or (parse_ref(parent).name if parent else Path(model).name or "model"))
    registry = Registry()
    # register what we start from, so the optimized version has a parent
    if parent is None:
        with tempfile.TemporaryDirectory() as tmp:
            parent = registry.register(
                name,
                net.save_dir(Path(tmp) / "source"),
                format="lepton",
                description=f"{model}, as given to lepton optimize",
            ).ref
    # a registered dataset: the version it resolved to, which the optimized version records
    dataset = splits["test"].meta.get("dataset")
    run = registry.start_run("optimize", {"model": parent, "data": dataset or data, **options}, name=name)
    try:
        result = optimize(
            net,
            splits["test"],
            calib_data=splits["val"],
            train_data=splits["train"],
            progress=progress,
            **options,
        )
        out = result.save(report_dir or Path(tempfile.mkdtemp(prefix="lepton-report-")))
        r = result.report
        figures = {k: r[k] for k in ("speedup", "latency_speedup", "size_reduction", f"{r['metric']}_drop")}
        registry.log_metrics(run.id, figures)
        best = r["best"]
        with tempfile.TemporaryDirectory() as tmp:
            folder = result.save_model(Path(tmp) / "best")
            # the report travels with the version, so the dashboard can show it wherever the registry is
            result.save(folder / "report")
            ref = registry.register(
                name,
                folder,
                format="onnx" if best["recipe"].get("runtime") == "onnxruntime" else "lepton",
                metrics={
                    r["metric"]: best[r["metric"]],
                    "size_bytes": best["size_bytes"],
                    "latency_ms_p50": best["latency_ms_p50"],
                    "throughput_per_s": best["throughput_per_s"],
                    **figures,
                },
                parent=parent,
                recipe={"candidate": best["name"], **best["recipe"]},
                run_id=run.id,
                dataset=dataset,
            ).ref
    except BaseException as e:
        registry.end_run(run.id, "cancelled" if isinstance(e, KeyboardInterrupt) else "failed")
        raise
    registry.end_run(run.id, "completed")
    return OptimizeJob(ref, parent, result, out, run.id)
