"""A federated run's record: the global model's test figures per round in the registry (kind
"federated"), the report (JSON and PNG), and the final model registered with its metrics and privacy."""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from lepton_ai.data import LabeledData
from lepton_ai.errors import InvalidInputError
from lepton_ai.models import LeptonModel
from lepton_ai.train.loop import evaluate


@dataclass
class FederatedResult:
    """What a federated run produced: the registered global model, its test figures per round and its
    privacy."""

    ref: str
    model: nn.Module
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    clients: int
    privacy: dict[str, Any] | None
    report_dir: Path
    run_id: int
    seconds: float

    @property
    def name(self) -> str:
        """Return the registered model's name."""
        return self.ref.rsplit(":", 1)[0]

    @property
    def version(self) -> int:
        """Return the registered model's version."""
        return int(self.ref.rsplit(":", 1)[1])

    def to_json(self) -> dict[str, Any]:
        """Return the document `lepton fl run --json` prints."""
        return {
            "name": self.name,
            "version": self.version,
            "metrics": {"accuracy": self.metrics["accuracy"], "loss": self.metrics["loss"]},
            "rounds": len(self.history),
            "clients": self.clients,
            "privacy": {k: self.privacy[k] for k in ("epsilon", "delta", "mechanism")}
            if self.privacy
            else None,
        }


class RunRecord:
    """A federated run in the registry (kind "federated"): the test figures of each round as they come,
    then the report (JSON, PNG) and the final global model registered with its metrics and privacy.
    Used as a context manager, it marks the run failed (or cancelled) when the block raises."""

    def __init__(self, name: str, params: dict[str, Any], report_dir: str | Path | None = None) -> None:
        from lepton_ai import config
        from lepton_ai.store import Registry
        from lepton_ai.store.refs import check_name

        self.name, self.params = check_name(name), params
        self.registry = Registry()
        self.run_id = self.registry.start_run("federated", params, name=name).id
        self.report_dir = Path(
            report_dir or config.home() / "reports" / "federated" / f"{name}-run{self.run_id}"
        )
        self.history: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: Any) -> None:
        if e is not None:
            # the original error is the one to report
            with contextlib.suppress(Exception):
                self.registry.end_run(
                    self.run_id, "cancelled" if isinstance(e, KeyboardInterrupt) else "failed"
                )

    def log_round(self, model: nn.Module, test: LabeledData, **row: Any) -> dict[str, Any]:
        """Evaluate the global `model` on `test`, record the round's figures (plus `row`) and return them."""

        figures = evaluate(model, test)
        if not all(math.isfinite(figures[k]) for k in ("loss", "accuracy")):
            raise InvalidInputError(
                f"the global model diverged in round {len(self.history) + 1} (test loss "
                f"{figures['loss']}): lower the clients' lr or the server's step/momentum"
            )
        row = {
            "round": len(self.history) + 1,
            "accuracy": figures["accuracy"],
            "loss": figures["loss"],
            "f1_macro": figures["f1_macro"],
            **row,
        }
        self.history.append(row)
        self.registry.log_metrics(
            self.run_id, {k: v for k, v in row.items() if k != "round"}, step=row["round"]
        )
        return row

    def finish(
        self, model: LeptonModel, clients: int, privacy: dict[str, Any] | None, description: str | None = None
    ) -> FederatedResult:
        """Write the report, register `model` with the last round's figures, end the run; return the
        result."""
        if not self.history:
            raise InvalidInputError("no round completed: nothing to register")
        seconds = time.perf_counter() - self.t0
        last = self.history[-1]
        metrics = {
            "accuracy": last["accuracy"],
            "loss": last["loss"],
            "f1_macro": last["f1_macro"],
            "rounds": len(self.history),
            "clients": clients,
            "train_seconds": seconds,
        }
        if privacy:
            metrics["epsilon"] = privacy["epsilon"]
        recipe: dict[str, Any] = {"federated": {k: v for k, v in self.params.items() if k != "dp"}}
        if privacy:
            recipe["privacy"] = privacy
        write_report(
            self.report_dir,
            {
                "name": self.name,
                "params": self.params,
                "metrics": metrics,
                "rounds": self.history,
                "privacy": privacy,
            },
        )
        p = self.params
        ref = model.save(
            self.name,
            metrics=metrics,
            run_id=self.run_id,
            recipe=recipe,
            description=description
            or (
                f"{p['model']} trained federated on {p['data']}: "
                f"{clients} clients, {p['partition']}, {p['strategy']}"
            ),
        )
        self.registry.end_run(self.run_id, "completed")
        model.eval()
        return FederatedResult(
            ref, model, metrics, self.history, clients, privacy, self.report_dir, self.run_id, seconds
        )


def write_report(folder: Path, report: dict[str, Any]) -> Path:
    """Write report.json and accuracy.png (test accuracy and loss per round) into `folder`; return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=str))
    rounds = [row["round"] for row in report["rounds"]]
    fig, acc = plt.subplots(figsize=(7, 4))
    acc.plot(rounds, [row["accuracy"] for row in report["rounds"]], color="tab:blue", marker=".")
    acc.set_xlabel("round")
    acc.set_ylabel("test accuracy", color="tab:blue")
    loss = acc.twinx()
    loss.plot(rounds, [row["loss"] for row in report["rounds"]], color="tab:red", marker=".")
    loss.set_ylabel("test loss", color="tab:red")
    p = report["params"]
    acc.set_title(f"{report['name']}: {p['clients']} clients, {p['partition']}, {p['strategy']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(folder / "accuracy.png", dpi=110)
    plt.close(fig)
    return folder


def model_name(model: str | nn.Module) -> str:
    """Return how a run names its model: the name given, or the architecture of a model object."""
    return model if isinstance(model, str) else getattr(model, "arch", None) or "model"


def run_params(model: str | nn.Module, data: str | LabeledData, **options: Any) -> dict[str, Any]:
    """Return a run's parameters as the registry records them (names, not objects)."""
    return {
        "model": model_name(model),
        "data": str(data) if not isinstance(data, LabeledData) else data.name,
        **options,
    }


def default_name(model: str | nn.Module, data: str | LabeledData) -> str:
    """Return the registry name a run gets when none is given, e.g. fl-mlp-digits."""
    m = model_name(model)
    d = data.name.split("[")[0] if isinstance(data, LabeledData) else Path(str(data)).stem
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in f"fl-{m}-{d or 'data'}")[:128]
