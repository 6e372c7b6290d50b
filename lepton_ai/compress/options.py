"""What `optimize` (and `lepton optimize`) are asked for, checked before any work: the quality bar, the
objective, the techniques."""

from __future__ import annotations

from lepton_ai.errors import InvalidInputError

TECHNIQUES = ("onnx", "int8", "pytorch-int8", "bf16", "prune", "by-length", "compile", "gpu")


def check_options(
    embedding: bool,
    max_accuracy_drop: float | None,
    max_fidelity_drop: float | None,
    objective: str,
    techniques: tuple[str, ...],
    batch_size: int = 1,
    time_budget_s: float = 1,
) -> tuple[float, str]:
    """Return (allowed drop, its option's name) for `optimize`'s options; raise on any that is wrong."""
    if objective not in ("throughput", "latency", "size"):
        raise InvalidInputError(f"objective must be throughput, latency or size, not {objective!r}")
    unknown = set(techniques) - set(TECHNIQUES)
    if unknown:
        raise InvalidInputError(f"unknown techniques {sorted(unknown)}: choose from {', '.join(TECHNIQUES)}")
    if embedding and max_accuracy_drop is not None:
        raise InvalidInputError("an embedding model has no labels to score accuracy: give max_fidelity_drop")
    if not embedding and max_fidelity_drop is not None:
        raise InvalidInputError(
            "a classifier is held to accuracy: give max_accuracy_drop, not max_fidelity_drop"
        )
    what = "max_fidelity_drop" if embedding else "max_accuracy_drop"
    max_drop = max_fidelity_drop if embedding else max_accuracy_drop
    max_drop = 0.01 if max_drop is None else max_drop
    if not 0 <= max_drop < 1:
        raise InvalidInputError(f"{what} must be in [0, 1), got {max_drop}")
    if batch_size < 1 or time_budget_s <= 0:
        raise InvalidInputError(
            f"batch_size and time_budget_s must be positive, got {batch_size} and {time_budget_s}"
        )
    return max_drop, what


def check_metric(embedding: bool, metric: str | None) -> str:
    """Return the quality `optimize` holds a model to: a classifier's accuracy or macro-F1, an embedding
    model's fidelity; raise for any other."""
    allowed = ("fidelity",) if embedding else ("accuracy", "f1_macro")
    metric = metric or allowed[0]
    if metric not in allowed:
        kind = "an embedding model" if embedding else "a classifier"
        raise InvalidInputError(f"{kind} is held to {' or '.join(allowed)}, not {metric!r}")
    return metric
