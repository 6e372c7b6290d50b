"""What private and federated runs use unless told otherwise: plain values, importable without PyTorch
(the CLI shows them in its help, and `lepton --help` should not wait for torch)."""

from __future__ import annotations

from typing import Any

# What `lepton train --dp-epsilon` and `train_and_register(dp=...)` use for the options the user did not
# give (chosen on digits, see benchmarks/RESULTS.md "Privacy"): many small noisy steps at a lower
# learning rate beat few large-batch ones on a training set of ~1,300 examples.
DP_TRAINING_DEFAULTS: dict[str, Any] = {"epochs": 40, "batch_size": 128, "lr": 1e-2}

# What `federated_train`, `lepton fl run` and `lepton fl server` use unless told otherwise, tuned on digits
# with 10 clients, Dirichlet α=0.1 (benchmarks/privacy.py): cnn-small for images (mlp otherwise), clients
# running 2 epochs of SGD with momentum (Adam's per-weight steps push down the classes a client lacks)
# at a learning rate decayed along a cosine over the rounds, which settles the global model at the end.
FEDERATED_DEFAULTS: dict[str, Any] = {
    "strategy": "fedavg",
    "local_epochs": 2,
    "lr": 0.05,
    "momentum": 0.9,
    "batch_size": 32,
    "schedule": "cosine",
    # The most examples a network client's update weighs (it reports its own count, which nobody checks):
    # a client that claims 10⁹ would otherwise be the whole average. Raise it for clients holding more.
    "max_client_examples": 10_000,
}
