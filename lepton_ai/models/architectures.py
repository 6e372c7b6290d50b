"""Built-in backbones, defined here (no torchvision): an MLP, a small CNN and ResNet-18."""

from __future__ import annotations

import math

import torch
from torch import nn

ARCHITECTURES = ("mlp", "cnn-small", "resnet18")


class Standardize(nn.Module):
    """(x - mean) / std with statistics taken from the training data, so a saved model
    works on raw inputs. Per feature for vectors, per channel for images."""

    mean: torch.Tensor
    std: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        stat_shape = (shape[0], 1, 1) if len(shape) == 3 else shape
        self.register_buffer("mean", torch.zeros(stat_shape))
        self.register_buffer("std", torch.ones(stat_shape))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Set mean and std from a batch of training inputs (N, *shape)."""
        dims = (0, 2, 3) if x.dim() == 4 else (0,)
        self.mean.copy_(x.mean(dims).reshape(self.mean.shape))
        self.std.copy_(x.std(dims).reshape(self.std.shape).clamp_min(1e-6))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class UnitNorm(nn.Module):
    """Scales each feature vector to length 1: what a backbone pretrained without labels ends with, so that a
    head reads its features as the kNN monitor and `embed()` do (a linear probe on them classifies better)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=1)


def unit_features(net: nn.Module) -> None:
    """End `net`'s features with a UnitNorm (once); it holds no weights, so saved weights load either way."""
    features = net.features
    if isinstance(features, nn.Sequential) and not isinstance(features[-1], UnitNorm):
        features.append(UnitNorm())


class MLP(nn.Module):
    """Fully connected classifier over flattened inputs."""

    def __init__(
        self,
        input_size: tuple[int, ...],
        num_classes: int,
        hidden: tuple[int, ...] = (256, 128),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.normalize = Standardize(input_size)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_size)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.features = nn.Sequential(*layers)
        self.head = _head(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


def _head(width: int, num_classes: int) -> nn.Module:
    """Return the classification head: a linear layer, or none (the features themselves) for a backbone
    (num_classes=0, as self-supervised pretraining makes)."""
    return nn.Linear(width, num_classes) if num_classes else nn.Identity()


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head: enough for digits-sized images, fast on CPU."""

    def __init__(self, input_size: tuple[int, ...], num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.normalize = Standardize(input_size)
        self.features = nn.Sequential(
            _conv_bn(input_size[0], width),
            _conv_bn(width, width),
            nn.MaxPool2d(2),
            _conv_bn(width, 2 * width),
            _conv_bn(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.2),
        )
        self.head = _head(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.downsample(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016). Inputs of 64 px and more get the ImageNet stem (7×7/2 and
    max-pool); smaller ones (CIFAR, digits) a 3×3/1 stem so the feature maps do not vanish."""

    def __init__(self, input_size: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.normalize = Standardize(input_size)
        cin, side = input_size[0], min(input_size[1:])
        if side >= 64:
            stem = [
                nn.Conv2d(cin, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            ]
        else:
            stem = [nn.Conv2d(cin, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
        layers, width = [], 64
        for i, out in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(width, out, stride), BasicBlock(out, out, 1)]
            width = out
        self.features = nn.Sequential(*stem, *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = _head(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # zero-init the last BN of each block: starts as identity
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


def build(arch: str, input_size: tuple[int, ...], num_classes: int) -> nn.Module:
    """Return a freshly initialised built-in network for `input_size` and `num_classes`."""
    from lepton_ai.errors import InvalidInputError

    if arch == "mlp":
        return MLP(input_size, num_classes)
    if len(input_size) != 3:
        raise InvalidInputError(
            f"{arch} needs image inputs (C, H, W), got input_size={input_size}; use 'mlp'"
        )
    if arch == "cnn-small":
        return SmallCNN(input_size, num_classes)
    if arch == "resnet18":
        return ResNet18(input_size, num_classes)
    raise InvalidInputError(
        f"unknown architecture {arch!r}: use one of {', '.join(ARCHITECTURES)}, "
        "'minilm', a Hugging Face model directory, a .safetensors file or a registry reference"
    )
