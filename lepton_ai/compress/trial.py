"""A candidate of the search with its figures (`Trial`), and the search's outcome (`OptimizeResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lepton_ai.compress.report import write_report
from lepton_ai.compress.settle import Ratio


@dataclass
class Trial:
    """One candidate with its recipe, its figures and the verdict."""

    name: str
    recipe: dict[str, Any]
    # "accuracy" or "fidelity"
    metric: str
    quality: float
    size_bytes: int
    latency_ms_p50: float
    latency_ms_p99: float
    throughput_per_s: float
    accepted: bool = True
    reason: str = ""
    # the runnable candidate
    model: Any = field(default=None, repr=False)
    # the float LeptonModel it was made from
    source: Any = field(default=None, repr=False)
    # rank correlation of its attributions with the baseline's (image and table classifiers)
    attribution_agreement: float | None = None
    # its throughput and batch-1 latency against the baseline's, measured interleaved (those that could win)
    speedup: Ratio | None = None
    latency_speedup: Ratio | None = None

    def figures(self) -> dict[str, Any]:
        """Return the JSON-ready figures (without the models), quality under its metric's name."""
        doc = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("model", "source", "metric", "quality")
        }
        doc = {k: v.to_dict() if isinstance(v, Ratio) else v for k, v in doc.items()}
        return {"name": self.name, self.metric: self.quality, **doc}


@dataclass
class OptimizeResult:
    """The search's outcome: `best` is runnable; `report` is what `save` writes."""

    best: Any
    best_trial: Trial
    baseline: Trial
    trials: list[Trial]
    report: dict[str, Any]

    def save_model(self, directory: str | Path) -> Path:
        """Write the best candidate as a registrable directory (see `load_runnable`); return it."""
        from lepton_ai.compress.artifact import save_runnable

        t = self.best_trial
        return save_runnable(t.model, t.source, t.recipe, directory)

    def save(self, directory: str | Path) -> Path:
        """Write report.json, report.md and report.png into `directory`; return it."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        write_report(self.report, out)
        return out
