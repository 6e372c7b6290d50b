"""Likely wrong labels (cleanlab): each record's class probabilities from a quick model that never saw it
(out-of-fold, by cross-validation), and cleanlab's `find_label_issues` on them, which names the records whose
given label the rest of the data supports least; `drop_label_issues` registers a version without them."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lepton_ai.data import manifest as m
from lepton_ai.data.ingest import counts, register_frame
from lepton_ai.data.labeled import LabeledData
from lepton_ai.data.versions import load_version
from lepton_ai.errors import InvalidInputError
from lepton_ai.store.datasets import Datasets, DatasetVersionInfo

# a side of the images the quick model sees: enough to tell classes apart, small enough to fit in seconds
_IMAGE_SIDE = 16
# examples up to which the quick model is a kernel SVM (seconds), a logistic regression beyond
_KERNEL_UP_TO = 10_000


@dataclass(frozen=True)
class LabelIssue:
    """A record whose label looks wrong: its key, where it came from, the label given and the one suggested,
    and the quick model's probability of the given label."""

    key: str
    record: str
    given: str
    suggested: str
    given_probability: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def label_issues(
    ref: str, folds: int = 5, seed: int = 0, datasets: Datasets | None = None
) -> tuple[DatasetVersionInfo, list[LabelIssue]]:
    """Return dataset version `ref` and its likely wrong labels, most doubtful first (also recorded in the
    version's stats for `lepton data show`)."""
    datasets = datasets or Datasets()
    info = datasets.get(ref)
    data = load_version(info.ref, "all", image_size=_side(info), datasets=datasets)
    labels = data.labels.numpy()
    probs = out_of_fold_probabilities(data, folds, seed)
    ranked = _issues(labels, probs)
    records = _records(datasets, info)
    issues = [
        LabelIssue(
            key=data.meta["keys"][i],
            record=records[data.meta["keys"][i]],
            given=data.classes[labels[i]],
            suggested=data.classes[int(probs[i].argmax())],
            given_probability=round(float(probs[i, labels[i]]), 4),
        )
        for i in ranked
    ]
    datasets.update_stats(
        info.ref, {"label_issues": len(issues), "label_issue_records": [i.to_dict() for i in issues[:1000]]}
    )
    return info, issues


def _issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Return the indices of likely wrong labels, most doubtful first: cleanlab's, and those the quick model
    both contradicts and finds less likely than chance (1 / classes)."""
    from cleanlab.filter import find_label_issues

    flagged = find_label_issues(labels, probs)
    given = probs[np.arange(len(labels)), labels]
    # cleanlab prunes by the noise rate it estimates, which on a small, nearly separable set (digits) misses
    # about one flip in five that the model plainly rejects
    flagged |= (probs.argmax(1) != labels) & (given < 1 / probs.shape[1])
    found = np.flatnonzero(flagged)
    return found[np.argsort(given[found], kind="stable")]


def out_of_fold_probabilities(data: LabeledData, folds: int, seed: int) -> np.ndarray:
    """Return each example's class probabilities from a quick model fitted on the other folds: on pixels, or
    on numbers standardised, a kernel SVM (a logistic regression on large sets); on texts, TF-IDF and a
    logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    labels = data.labels.numpy()
    smallest = int(np.bincount(labels).min())
    if smallest < 2:
        raise InvalidInputError(
            f"{data.name}: a class has {smallest} example: finding label issues needs at least 2 of each"
        )
    if data.texts is not None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        model = make_pipeline(TfidfVectorizer(min_df=1), LogisticRegression(max_iter=1000))
        x: Any = data.texts
    else:
        assert data.features is not None
        x = data.features.reshape(len(labels), -1).numpy()
        # a kernel SVM is the better quick model while it is quick (its cost grows with the square of n)
        quick = (
            SVC(probability=True, random_state=seed)
            if len(labels) <= _KERNEL_UP_TO
            else LogisticRegression(max_iter=1000, C=0.05)
        )
        # pixels share one scale: standardising would blow up the noise of a border that is nearly always 0
        model = make_pipeline(StandardScaler(), quick) if data.kind == "tabular" else quick
    cv = StratifiedKFold(min(folds, smallest), shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # deprecated in 1.9: CalibratedClassifierCV(SVC()), its stand-in, found wrong labels at a precision of
        # 0.80–0.86 where this finds them at 0.93–0.97 (digits, 5 % flipped)
        warnings.filterwarnings("ignore", "The `probability` parameter", FutureWarning)
        return np.asarray(cross_val_predict(model, x, labels, cv=cv, method="predict_proba"))


def drop_label_issues(
    info: DatasetVersionInfo, issues: list[LabelIssue], datasets: Datasets | None = None
) -> DatasetVersionInfo:
    """Register the next version of the dataset: version `info` without the records of `issues` (its splits
    kept)."""
    datasets = datasets or Datasets()
    frame = m.read_manifest(datasets.manifest(info))
    dropped = {i.key for i in issues}
    kept = frame[~frame[m.KEY].isin(dropped)].reset_index(drop=True)
    label = m.LABEL if info.format != "table" else info.schema["label"]
    stats = {
        **counts(kept, label, frame),
        "dropped_label_issues": len(frame) - len(kept),
        "cleaned_from": info.ref,
        "fractions": info.stats.get("fractions"),
        "seed": info.stats.get("seed"),
        "quarantined": 0,
        "duplicates": 0,
    }
    fmt = info.format if info.format != "table" else "parquet"
    return register_frame(
        datasets, info.name, kept, fmt, info.schema, stats, f"{info.ref} less label issues", 0
    )


def _side(info: DatasetVersionInfo) -> int | None:
    """Return the side images are scaled to for the quick model: None (their own) if all share a small one."""
    image = info.schema.get("image") or {}
    if not image:
        return None
    (w0, w1), (h0, h1) = image["width"], image["height"]
    return None if w0 == w1 <= _IMAGE_SIDE and h0 == h1 <= _IMAGE_SIDE else _IMAGE_SIDE


def _records(datasets: Datasets, info: DatasetVersionInfo) -> dict[str, str]:
    """Return where each record of the version came from (a file's path, a table's row), by key."""
    column = m.PATH if info.format != "table" else m.ROW
    frame = m.read_manifest(datasets.manifest(info), columns=[m.KEY, column])
    return {k: str(v) for k, v in zip(frame[m.KEY].tolist(), frame[column].tolist())}
