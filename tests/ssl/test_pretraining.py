"""Pretraining on real data (digits, breast cancer): the views, the monitor's signals, a backbone that learned
without labels, checkpoints that resume."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from lepton_ai.data import load
from lepton_ai.errors import InvalidInputError
from lepton_ai.models import LeptonModel
from lepton_ai.ssl import monitor, pretrain
from lepton_ai.ssl.views import ImageViews, TableViews, views_for


def backbone(arch: str, input_size: tuple[int, ...]) -> LeptonModel:
    # the same initial weights each time: runs compare
    torch.manual_seed(0)
    model = LeptonModel(num_classes=0, input_size=input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.load_pretrained_model(arch)


def test_scarf_views_keep_each_features_values() -> None:
    table = load("breast_cancer", "train")
    views = views_for(table)
    assert isinstance(views, TableViews)
    x = table.features[:64]
    view = views(x, torch.Generator().manual_seed(0))
    changed = (view != x).float().mean()
    assert 0.4 < changed < 0.7
    # every value a view holds is one its column holds somewhere in the training rows
    for f in range(x.shape[1]):
        assert torch.isin(view[:, f], table.features[:, f]).all()


def test_image_views_move_digits_without_mirroring_them() -> None:
    digits = load("digits", "train")
    views = views_for(digits)
    assert isinstance(views, ImageViews) and not views.flip
    x = digits.features[:32]
    a, b = views(x, torch.Generator().manual_seed(0)), views(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and not torch.allclose(a, b)
    with pytest.raises(InvalidInputError, match="images or tables"):
        views_for(load("python-docs", "train"))


def test_the_monitor_reads_clusters_and_collapse() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g) * 5
    labels = torch.arange(60) % 3
    points = centres[labels] + torch.randn(60, 16, generator=g) * 0.1
    assert monitor.knn_accuracy(points[:30], labels[:30], points[30:], labels[30:]) == 1.0
    assert monitor.spread(torch.ones(50, 16)) == pytest.approx(0.0, abs=1e-6)
    assert monitor.spread(torch.randn(500, 16, generator=g)) > 0.9
    assert 1.5 < monitor.effective_rank(points) < 3.5
    with pytest.warns(monitor.CollapseWarning, match="collapsing"):
        monitor.warn_if_collapsing(
            5, {"spread": 0.05, "effective_rank": 30}, {"spread": 0.6, "effective_rank": 30}
        )


def test_a_backbone_learns_digits_without_labels_and_resumes(tmp_path: Path) -> None:
    train, val = load("digits", "train"), load("digits", "val")
    model = backbone("cnn-small", train.input_size)
    seen: list[int] = []
    history = pretrain(
        model,
        train,
        "simclr",
        val_data=val,
        epochs=3,
        progress=False,
        checkpoint_dir=str(tmp_path / "whole"),
        on_epoch=lambda epoch, figures: seen.append(epoch),
    )
    assert seen == [1, 2, 3] and model.is_embedding and model.num_classes == 0
    last = history["epochs"][-1]
    # chance is 0.1: three epochs without a label already sort digits by their neighbours
    assert last["knn_accuracy"] > 0.8 and last["spread"] > 0.3
    embeddings = model.embed(val)
    assert embeddings.shape == (len(val), 64) and torch.allclose(embeddings.norm(dim=1), torch.ones(len(val)))

    def stop_after_two(epoch: int, figures: dict[str, float]) -> None:
        if epoch == 3:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        pretrain(
            backbone("cnn-small", train.input_size),
            train,
            "simclr",
            val_data=val,
            epochs=3,
            progress=False,
            checkpoint_dir=str(cut),
            on_epoch=stop_after_two,
        )
    resumed = pretrain(
        backbone("cnn-small", train.input_size),
        train,
        "simclr",
        val_data=val,
        epochs=3,
        progress=False,
        checkpoint_dir=str(cut),
        resume=True,
    )
    # the same run as the uninterrupted one: epochs 1–2 from the checkpoint, the third trained again
    assert [row["epoch"] for row in resumed["epochs"]] == [1, 2, 3]
    assert resumed["epochs"][:2] == history["epochs"][:2]
    assert resumed["epochs"][2]["loss"] == pytest.approx(history["epochs"][2]["loss"], rel=1e-4)
    with pytest.raises(InvalidInputError, match="resume with --epochs 3"):
        pretrain(
            backbone("cnn-small", train.input_size),
            train,
            epochs=5,
            progress=False,
            checkpoint_dir=str(cut),
            resume=True,
        )


def test_what_cannot_pretrain_is_refused_clearly() -> None:
    digits = load("digits", "train")
    with pytest.raises(InvalidInputError, match="at least 2"):
        pretrain(backbone("cnn-small", digits.input_size), digits, batch_size=1)
    with pytest.raises(InvalidInputError, match="unknown method"):
        pretrain(backbone("cnn-small", digits.input_size), digits, "byol")
    table = load("wine", "train")
    with pytest.raises(InvalidInputError, match="a flip is an image's"):
        pretrain(backbone("mlp", table.input_size), table, flip=True)


def test_a_classifier_from_a_backbone_reads_unit_features_and_saves_them(tmp_path: Path) -> None:
    from lepton_ai.models.architectures import UnitNorm

    train, val, test = (load("digits", s) for s in ("train", "val", "test"))
    model = backbone("cnn-small", train.input_size)
    pretrain(model, train, epochs=1, progress=False)
    assert model.preprocess["unit_features"] and isinstance(model.net.features[-1], UnitNorm)
    classifier = LeptonModel(num_classes=10, input_size=train.input_size)
    classifier.load_pretrained_model(str(model.save_dir(tmp_path / "backbone")))
    assert isinstance(classifier.net.features[-1], UnitNorm) and isinstance(
        classifier.net.head, torch.nn.Linear
    )
    # the backbone's weights under a fresh head
    for name, weight in model.net.state_dict().items():
        assert torch.equal(classifier.net.state_dict()[name], weight), name
    classifier.fit(train.labelled_share(0.05), val, head_only=True, progress=False)
    again = LeptonModel.load(classifier.save_dir(tmp_path / "classifier"))
    assert torch.equal(again.predict(test.features), classifier.predict(test.features))
