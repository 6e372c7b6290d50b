"""Random views of the same examples, the data a self-supervised method learns from: images shifted,
rotated, scaled, re-contrasted and noised (flipped only where a flip keeps the meaning: not for digits);
table rows with a random subset of their features replaced from those features' empirical marginals (SCARF,
Bahri et al. 2022)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from lepton_ai.data import LabeledData
from lepton_ai.errors import InvalidInputError


class Views(Protocol):
    """Makes one random view of each example of a batch."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ImageViews:
    """A view of images (N × C × H × W): each shifted by up to `shift` of its side, rotated by up to `rotate`
    degrees, scaled by a factor in `scale`, its contrast scaled by up to ±`contrast`, plus Gaussian noise of
    `noise` standard deviations of the batch; mirrored half the time if `flip`."""

    shift: float = 0.125
    rotate: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    contrast: float = 0.2
    noise: float = 0.1
    flip: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = len(x)

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, *shape, generator=generator)

        angle = uniform(-self.rotate, self.rotate) * math.pi / 180
        zoom = uniform(*self.scale)
        # affine_grid's coordinates span [-1, 1]: a side is 2
        shift = uniform(-2 * self.shift, 2 * self.shift, 2)
        mirror = (
            torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if self.flip else torch.ones(n)
        )
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [
                torch.stack([cos * mirror, -sin, shift[:, 0]], 1),
                torch.stack([sin * mirror, cos, shift[:, 1]], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = mean + (out - mean) * uniform(1 - self.contrast, 1 + self.contrast, 1, 1, 1).to(x)
        return out + self.noise * x.std() * torch.randn(x.shape, generator=generator).to(x)

    def describe(self) -> dict[str, Any]:
        """Return what the registry records of these views."""
        return {"images": asdict(self)}


@dataclass(frozen=True)
class TableViews:
    """A view of table rows (N × F): each feature, with probability `rate`, replaced by its value in a random
    row of `marginals` (the training rows), so that a view keeps the feature's distribution (SCARF)."""

    marginals: torch.Tensor = field(repr=False)
    rate: float = 0.6

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, features = x.shape
        corrupt = torch.rand(n, features, generator=generator) < self.rate
        donors = torch.randint(len(self.marginals), (n, features), generator=generator)
        replaced = self.marginals[donors, torch.arange(features)]
        return torch.where(corrupt.to(x.device), replaced.to(x), x)

    def describe(self) -> dict[str, Any]:
        """Return what the registry records of these views."""
        return {"tables": {"method": "scarf", "rate": self.rate}}


def views_for(data: LabeledData, flip: bool = False) -> Views:
    """Return the views suited to `data`: images' (mirrored only if `flip`), or SCARF's for a table."""
    if data.kind == "image":
        return ImageViews(flip=flip)
    if data.kind == "tabular":
        assert data.features is not None
        if flip:
            raise InvalidInputError(f"{data.name} is a table: a flip is an image's view; drop --flip")
        return TableViews(data.features.reshape(len(data), -1))
    raise InvalidInputError(
        f"{data.name} is {data.kind}: self-supervised pretraining here takes images or tables (for text, "
        "fine-tune minilm on its labels, or train a head on its frozen embeddings with --head-only)"
    )
