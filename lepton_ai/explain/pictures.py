"""Attributions as pictures: an image's signed heat map blended over it and beside it; a table's top features
by name as bars. PNG bytes, drawn off-screen (matplotlib's Agg)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch


def image_overlay(image: torch.Tensor, attribution: torch.Tensor, title: str = "") -> bytes:
    """Return a PNG of an image (C × H × W) beside its attribution's signed heat map blended over it (red:
    raised the explained class's score, blue: lowered it)."""
    plt = _pyplot()
    picture = _displayable(image)
    heat = attribution.float().sum(0).numpy()
    bound = float(np.abs(heat).max()) or 1.0
    fig, (left, right) = plt.subplots(1, 2, figsize=(5, 2.6))
    left.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
    left.set_title("input", fontsize=9)
    right.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
    shown = right.imshow(heat, cmap="bwr", vmin=-bound, vmax=bound, alpha=0.6)
    right.set_title(title or "attribution", fontsize=9)
    fig.colorbar(shown, ax=right, fraction=0.046)
    return _png(fig)


def feature_bars(attribution: torch.Tensor, names: Sequence[str], top: int = 10, title: str = "") -> bytes:
    """Return a PNG of a table row's `top` features by attribution magnitude, signed, with their names."""
    plt = _pyplot()
    values = attribution.float().reshape(-1).numpy()
    order = np.argsort(-np.abs(values))[:top][::-1]
    fig, ax = plt.subplots(figsize=(5, 0.3 * len(order) + 1))
    ax.barh(
        [names[i] for i in order],
        values[order],
        color=["tab:red" if values[i] > 0 else "tab:blue" for i in order],
    )
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_title(title or "attribution", fontsize=9)
    return _png(fig)


def _displayable(image: torch.Tensor) -> np.ndarray:
    """Return an image as a picture array in [0, 1]: H × W for one channel, H × W × C for more."""
    x = image.float()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
