"""`pretrain`: a backbone trained without labels, by SimCLR or VICReg, on two random views of each example —
watched each epoch (kNN accuracy on a labelled split, collapse signals), checkpointed, and data-parallel under
torchrun (each rank a shard of every epoch; the loss sees every rank's embeddings)."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lepton_ai.data import LabeledData
from lepton_ai.data.inputs import as_inputs
from lepton_ai.device import resolve_device
from lepton_ai.errors import InvalidInputError
from lepton_ai.models import LeptonModel
from lepton_ai.models.architectures import unit_features
from lepton_ai.ssl import monitor
from lepton_ai.ssl.losses import NTXentLoss, VICRegLoss
from lepton_ai.ssl.views import Views, views_for
from lepton_ai.train import distributed
from lepton_ai.train.checkpoint import load_checkpoint, save_checkpoint

METHODS = ("simclr", "vicreg")
# examples the collapse signals and the kNN monitor's training side look at: enough, and quick each epoch
_WATCHED = 4096
# Called on rank 0 after each epoch with its number and figures (loss, knn_accuracy, spread, effective_rank).
EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class PretrainOptions:
    """How a backbone pretrains: the method, its epochs, batch size (per process), learning rate, weight decay
    and temperature (SimCLR's), the seed, the device, whether images may be mirrored, progress, and where
    checkpoints go (and whether to resume from the last)."""

    method: str = "vicreg"
    epochs: int = 100
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    seed: int = 0
    device: str = "auto"
    flip: bool = False
    progress: bool = True
    checkpoint_dir: str | None = None
    resume: bool = False


def pretrain(
    model: LeptonModel,
    data: LabeledData,
    method: str = "vicreg",
    *,
    val_data: LabeledData | None = None,
    on_epoch: EpochCallback | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train `model`'s backbone on `data` by `method` (its labels unused), making `model` an embedding model
    (its head removed); return the history. With a labelled `val_data`, each epoch's kNN is watched."""
    o = PretrainOptions(method=method, **options)
    _check(model, data, o)
    views = views_for(data, o.flip)
    _as_backbone(model)
    torch.manual_seed(o.seed)
    _fit_normalizer(model, data)
    run = _setup(model, data, o, views)
    best, t0 = {"spread": 0.0, "effective_rank": 0.0}, time.perf_counter()
    with _progress_bar(o.progress and run.rank == 0) as bar:
        task = bar.add_task(
            f"pretraining ({o.method})", total=(o.epochs - run.start) * run.steps, loss=0, knn=0
        )
        for epoch in range(run.start, o.epochs):
            loss = _epoch(run, o, epoch, lambda: bar.advance(task))
            figures = {"loss": loss, **_watch(model, data, val_data, run.device)}
            monitor.warn_if_collapsing(epoch + 1, figures, best)
            best = {k: max(v, figures[k]) for k, v in best.items()}
            run.history.append({"epoch": epoch + 1, **figures})
            bar.update(task, loss=loss, knn=figures.get("knn_accuracy", 0.0))
            if run.rank == 0 and on_epoch is not None:
                on_epoch(epoch + 1, figures)
            if run.rank == 0 and o.checkpoint_dir:
                _save(o, run, epoch + 1)
    # what reads the features from now on (a head, the kNN monitor, embed()) reads them at unit length
    assert model.net is not None
    unit_features(model.net)
    model.preprocess["unit_features"] = True
    model.to("cpu").eval()
    model.updates += 1
    return {
        "method": o.method,
        "epochs": run.history,
        "views": views.describe(),
        "options": {k: v for k, v in asdict(o).items() if k not in ("progress", "checkpoint_dir", "resume")},
        "pretrain_seconds": time.perf_counter() - t0,
        "world_size": run.world_size,
    }


@dataclass
class _Run:
    """A pretraining under way: the backbone and projector (DDP-wrapped in a process group), the loss, the
    views, the optimizer and schedule, the examples, this rank's place, and the epochs done."""

    pair: _Pair
    step_model: nn.Module
    loss_fn: nn.Module
    views: Views
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    inputs: torch.Tensor
    device: torch.device
    rank: int
    world_size: int
    steps: int
    start: int
    history: list[dict[str, float]]


def _setup(model: LeptonModel, data: LabeledData, o: PretrainOptions, views: Views) -> _Run:
    """Return the run: the backbone under its projector on the device, the loss, the optimizer and its
    schedule (warmup, then a cosine), restored from the last checkpoint with --resume."""
    assert model.net is not None
    rank, world_size = distributed.rank_and_size()
    device = resolve_device(o.device)
    pair = _Pair(model.net, _projector(o.method, _width(model, data))).to(device)
    loss_fn: nn.Module = NTXentLoss(o.temperature) if o.method == "simclr" else VICRegLoss()
    steps = math.ceil(math.ceil(len(data) / world_size) / o.batch_size)
    optimizer = torch.optim.AdamW(pair.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_then_cosine(o.epochs * steps))
    start, history = _restore(o, pair, optimizer, schedule)
    step_model = DistributedDataParallel(pair) if world_size > 1 else pair
    inputs = as_inputs(model, data)
    assert isinstance(inputs, torch.Tensor)
    return _Run(
        pair,
        step_model,
        loss_fn,
        views,
        optimizer,
        schedule,
        inputs,
        device,
        rank,
        world_size,
        steps,
        start,
        history,
    )


class _Pair(nn.Module):
    """The backbone and its projection head, run on both views at once (one forward for DDP; batch norm sees
    the two views together, as SimCLR's does)."""

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


def _warmup_then_cosine(total: int) -> Callable[[int], float]:
    """Return the learning rate's factor at each step: up linearly for a tenth of them, then a cosine down."""
    warm = max(1, total // 10)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return factor


def _epoch(run: _Run, o: PretrainOptions, epoch: int, advance: Callable[[], None]) -> float:
    """Train one epoch over this rank's share of the examples; return the mean loss."""
    # one permutation on every rank, split between them; each rank its own views
    shuffle = torch.Generator().manual_seed(o.seed * 100_003 + epoch)
    order = distributed.shard(torch.randperm(len(run.inputs), generator=shuffle), run.rank, run.world_size)
    draws = torch.Generator().manual_seed(o.seed * 100_003 + epoch * 101 + run.rank + 1)
    # dropout's draws too: a resumed run trains on exactly as the uninterrupted one would have
    torch.manual_seed(o.seed * 100_003 + epoch * 101 + run.rank + 2)
    run.step_model.train()
    losses = []
    for idx in order.split(o.batch_size):
        # a last batch of one has no negatives (and batch norm cannot train on it)
        if len(idx) >= 2:
            x = run.inputs[idx]
            both = torch.cat([run.views(x, draws), run.views(x, draws)]).to(run.device)
            z1, z2 = run.step_model(both).chunk(2)
            loss = run.loss_fn(z1, z2)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            run.schedule.step()
            losses.append(float(loss.detach()))
        advance()
    return sum(losses) / max(1, len(losses))


@torch.no_grad()
def _watch(
    model: LeptonModel, data: LabeledData, val_data: LabeledData | None, device: torch.device
) -> dict[str, float]:
    """Return the epoch's collapse signals, and its kNN accuracy when a labelled validation split is given."""
    model.eval()
    watched = data.subset(
        torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:_WATCHED].numpy()
    )
    train = _embed(model, watched, device)
    figures = {"spread": monitor.spread(train), "effective_rank": monitor.effective_rank(train)}
    if val_data is not None and data.num_classes >= 2:
        val = _embed(model, val_data, device)
        figures["knn_accuracy"] = monitor.knn_accuracy(train, watched.labels, val, val_data.labels)
    return figures


def _embed(model: LeptonModel, data: LabeledData, device: torch.device) -> torch.Tensor:
    assert model.net is not None
    inputs = as_inputs(model, data)
    assert isinstance(inputs, torch.Tensor)
    return torch.cat([model.net(x.to(device)).float().cpu() for x in inputs.split(512)])


def _check(model: LeptonModel, data: LabeledData, o: PretrainOptions) -> None:
    """Refuse what cannot pretrain, each with how to fix it."""
    if o.method not in METHODS:
        raise InvalidInputError(f"unknown method {o.method!r}: use one of {', '.join(METHODS)}")
    if o.batch_size < 2:
        raise InvalidInputError(
            f"batch size {o.batch_size}: a self-supervised batch needs at least 2 examples (the others are "
            "each one's negatives); use 64 or more"
        )
    if o.epochs < 1:
        raise InvalidInputError(f"epochs must be at least 1, got {o.epochs}")
    if model.net is None or model.is_text or not hasattr(model.net, "features"):
        raise InvalidInputError(
            f"{model.arch or 'this model'} cannot pretrain here: use mlp (tables), cnn-small or resnet18 "
            "(images), or a backbone of an earlier `lepton pretrain`"
        )


def _as_backbone(model: LeptonModel) -> None:
    """Drop the model's classification head: it becomes an embedding model of its features."""
    assert model.net is not None
    model.net.head = nn.Identity()
    model.num_classes, model.classes = 0, []


def _fit_normalizer(model: LeptonModel, data: LabeledData) -> None:
    norm = model.normalizer
    if norm is not None and not bool(norm.fitted):
        assert data.features is not None
        norm.fit(data.features[:20000])


def _width(model: LeptonModel, data: LabeledData) -> int:
    assert model.net is not None and data.features is not None
    with torch.no_grad():
        model.net.eval()
        return int(model.net(data.features[:2]).shape[1])


def _projector(method: str, width: int) -> nn.Module:
    """Return the projection head the loss sees through: SimCLR's two layers down to 128, VICReg's expander of
    three layers of 512 (the backbone's features are what is kept)."""
    if method == "simclr":
        return nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, 128))
    layers: list[nn.Module] = []
    for n, (cin, cout) in enumerate([(width, 512), (512, 512), (512, 512)]):
        layers.append(nn.Linear(cin, cout))
        if n < 2:
            layers += [nn.BatchNorm1d(cout), nn.ReLU()]
    return nn.Sequential(*layers)


def _restore(
    o: PretrainOptions,
    pair: _Pair,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[int, list[dict[str, float]]]:
    """Return the epoch to start from and the history so far: from the last checkpoint with --resume."""
    state = load_checkpoint(o.checkpoint_dir) if o.resume and o.checkpoint_dir else None
    if state is None:
        if o.resume:
            warnings.warn(f"no checkpoint in {o.checkpoint_dir}: pretraining from the start", stacklevel=3)
        return 0, []
    if int(state["planned"]) != o.epochs:
        raise InvalidInputError(
            f"the checkpoint in {o.checkpoint_dir} is of a {state['planned']}-epoch pretraining (its "
            f"learning rate schedule spans them): resume with --epochs {state['planned']}"
        )
    pair.load_state_dict(state["pair"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return int(state["epoch"]), list(state["history"])


def _save(o: PretrainOptions, run: _Run, epoch: int) -> None:
    assert o.checkpoint_dir is not None
    state = {
        "pair": run.pair.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(),
        "epoch": epoch,
        "planned": o.epochs,
        "history": run.history,
    }
    save_checkpoint(o.checkpoint_dir, state)


def _progress_bar(show: bool) -> Progress:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f} · kNN {task.fields[knn]:.3f}"),
        TimeElapsedColumn(),
    )
    return Progress(*columns, disable=not show)
