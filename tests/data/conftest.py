"""Real files to add as datasets: scikit-learn's digits as PNGs written with Pillow, wine as tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits, load_wine


def write_digits(root: Path, count: int = 300) -> Path:
    """Write the first `count` digits as 8×8 greyscale PNGs in root/<digit>/<n>.png; return root."""
    digits = load_digits()
    for n, (image, label) in enumerate(zip(digits.images[:count], digits.target[:count])):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8), "L").save(folder / f"{n:05d}.png")
    return root


@pytest.fixture
def digit_folder(tmp_path: Path) -> Path:
    """300 digits as PNG files in class folders."""
    return write_digits(tmp_path / "digits")


@pytest.fixture
def wine_frame() -> pd.DataFrame:
    """The wine set as a frame with a `label` column."""
    return load_wine(as_frame=True).frame.rename(columns={"target": "label"})
