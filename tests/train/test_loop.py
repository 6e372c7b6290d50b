from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import lepton_ai.train.loop as loop
from lepton_ai import LeptonModel
from lepton_ai.data import load
from lepton_ai.errors import InvalidInputError
from lepton_ai.store import Registry
from lepton_ai.train import load_checkpoint, resolve_precision


def _model(arch: str = "mlp", input_size=(1, 8, 8), classes: int = 10) -> LeptonModel:
    # the same initial weights every time
    torch.manual_seed(0)
    m = LeptonModel(num_classes=classes, input_size=input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return m.load_pretrained_model(arch)


def test_fit_learns_digits_and_hands_each_epoch_to_the_caller() -> None:
    train, val = load("digits", "train"), load("digits", "val")
    run = Registry().start_run("train")

    def log(epoch: int, figures: dict[str, float]) -> None:
        Registry().log_metrics(run.id, figures, step=epoch)

    history = _model().fit(train, val, epochs=4, progress=False, on_epoch=log)
    assert history["device"] == "cpu" and history["precision"] == "fp32"
    assert len(history["epochs"]) == 4 and history["epochs"][-1]["val_accuracy"] > 0.9
    logged = Registry().get_run(run.id).history
    assert [step for step, _ in logged["val_accuracy"]] == [0, 1, 2, 3] and "epoch" not in logged
    assert logged["train_loss"][-1][1] == pytest.approx(history["epochs"][-1]["train_loss"])


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, monkeypatch) -> None:
    train, test = load("digits", "train"), load("digits", "test")
    straight = _model("cnn-small")
    straight.fit(train, epochs=4, progress=False, checkpoint_dir=str(tmp_path / "a"))

    saves = 0
    real_save = loop.save_checkpoint

    # Ctrl-C right after epoch 2's checkpoint
    def save_then_die(directory, state):
        nonlocal saves
        real_save(directory, state)
        saves += 1
        if saves == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _model("cnn-small").fit(train, epochs=4, progress=False, checkpoint_dir=str(tmp_path / "b"))
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert load_checkpoint(tmp_path / "b")["epoch"] == 1
    resumed = _model("cnn-small")
    history = resumed.fit(train, epochs=4, progress=False, checkpoint_dir=str(tmp_path / "b"), resume=True)
    assert history["resumed_from_epoch"] == 2 and len(history["epochs"]) == 4
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)
    assert torch.equal(straight.predict(test), resumed.predict(test))


def test_early_stopping_restores_the_best_epoch() -> None:
    train = load("digits", "train")
    val = load("digits", "val")
    val.labels = val.labels[torch.randperm(len(val.labels), generator=torch.Generator().manual_seed(0))]
    history = _model().fit(train, val, epochs=30, early_stopping=2, select_by="loss", progress=False)
    assert history["stopped_early"] and len(history["epochs"]) < 30
    assert history["best_epoch"] == min(
        range(len(history["epochs"])), key=lambda i: history["epochs"][i]["val_loss"]
    )


@pytest.mark.parametrize("schedule", ["onecycle", "none"])
def test_schedules_and_cpu_bf16(schedule: str) -> None:
    iris = load("iris", "train")
    history = _model("mlp", (4,), 3).fit(iris, epochs=2, schedule=schedule, precision="bf16", progress=False)
    assert history["precision"] == "bf16" and history["epochs"][-1]["train_loss"] < 2


def test_precision_and_option_errors() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(InvalidInputError, match="fp16 training needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(InvalidInputError, match="precision must be"):
        resolve_precision("int4", cpu)
    if torch.cuda.is_available():
        assert resolve_precision("auto", cuda) in ("bf16", "fp16")
    with pytest.raises(InvalidInputError, match="schedule must be"):
        _model().fit(load("digits", "train"), epochs=1, schedule="exponential", progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_mixed_precision_channels_last() -> None:
    train, test = load("digits", "train"), load("digits", "test")
    model = _model("cnn-small")
    history = model.fit(train, epochs=3, device="cuda", progress=False)
    assert history["precision"] in ("bf16", "fp16") and history["device"].startswith("cuda")
    assert model.evaluate(test)["accuracy"] > 0.9


def test_the_best_epoch_by_macro_f1_is_kept() -> None:
    train, val = load("digits", "train"), load("digits", "val")
    model = _model()
    history = model.fit(train, val, epochs=6, lr=0.05, progress=False)
    scores = [row["val_f1_macro"] for row in history["epochs"]]
    assert history["selected_by"] == "f1_macro" and history["best_epoch"] == scores.index(max(scores))
    # the weights are the kept epoch's, not the last one's
    assert model.evaluate(val)["f1_macro"] == pytest.approx(max(scores), abs=1e-6)


def test_gradient_accumulation_equals_one_larger_batch() -> None:
    from lepton_ai.train.head import Head

    data = load("breast_cancer", "train")
    data = data.subset(list(range(len(data) // 16 * 16)))
    heads = []
    for options in ({"batch_size": 16}, {"batch_size": 8, "grad_accum": 2}):
        torch.manual_seed(0)
        linear = torch.nn.Linear(30, 2)
        loop.fit(Head(linear), data, epochs=2, lr=1e-3, schedule="none", progress=False, **options)
        heads.append(linear.weight.detach().clone())
    assert torch.allclose(heads[0], heads[1], atol=1e-5)


def test_imbalanced_classes_can_be_weighed_or_drawn_evenly() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    from lepton_ai.train.trainer import balanced_weights

    data = load("breast_cancer", "train")
    labels = data.labels.numpy()
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    assert torch.allclose(balanced_weights(data.labels, 2), torch.tensor(expected, dtype=torch.float32))
    seen: list[torch.Tensor] = []

    def counting(logits: torch.Tensor, y: torch.Tensor, _x: object) -> torch.Tensor:
        seen.append(y.cpu())
        return torch.nn.functional.cross_entropy(logits, y)

    model = _model("mlp", (30,), 2)
    model.fit(data, epochs=4, sampling="balanced", loss_fn=counting, progress=False)
    drawn = torch.bincount(torch.cat(seen), minlength=2).float()
    # drawn evenly, though the data hold the classes about 37:63
    assert abs(drawn[0] / drawn.sum() - 0.5) < 0.05 and abs(labels.mean() - 0.5) > 0.1
    history = _model("mlp", (30,), 2).fit(data, epochs=2, class_weights="balanced", progress=False)
    assert history["epochs"][-1]["train_accuracy"] > 0.8


@pytest.mark.parametrize(
    "options, says",
    [
        ({"sampling": "stratified"}, "sampling is one of random, balanced"),
        ({"select_by": "recall"}, "select_by is one of f1_macro, accuracy, loss"),
        ({"class_weights": [1.0, 2.0]}, "one weight ≥ 0 per class"),
        ({"grad_accum": 0}, "grad_accum must be positive"),
        ({"max_length": 64}, "max_length cuts texts"),
        ({"class_weights": "balanced", "dp": {"epsilon": 3}}, "without class weights"),
    ],
)
def test_wrong_training_options_are_named(options: dict, says: str) -> None:
    with pytest.raises(InvalidInputError, match=says):
        _model().fit(load("digits", "train"), epochs=1, progress=False, **options)
