"""Models: `LeptonModel` and the built-in backbones."""

from lepton_ai.models.architectures import ARCHITECTURES, MLP, ResNet18, SmallCNN, build
from lepton_ai.models.lepton_model import LeptonModel

__all__ = ["ARCHITECTURES", "MLP", "LeptonModel", "ResNet18", "SmallCNN", "build"]
