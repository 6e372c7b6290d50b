"""Checks the Kubernetes tests of jobs and of deployments share: rendered manifests are compared byte for
byte with golden files and validated against the official Kubernetes schemas (kubernetes-validate, strict),
and a broken manifest must be refused in one line naming it and the field.

After an intended change to the manifests, regenerate the golden files and review their diff:

    LEPTON_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/jobs/test_kubernetes_backend.py \\
        tests/deploy/test_kubernetes.py
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lepton_ai.errors import InvalidInputError
from lepton_ai.jobs.k8s import to_yaml, validate

Manifests = list[dict[str, Any]]


def assert_matches_golden(golden: Path, manifests: Manifests) -> None:
    """Assert that `manifests`, as YAML, are the golden file's text (LEPTON_UPDATE_GOLDEN=1 rewrites it)."""
    text = to_yaml(manifests)
    if os.environ.get("LEPTON_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"no {golden}: run with LEPTON_UPDATE_GOLDEN=1"
    assert text == golden.read_text(), (
        f"the manifests differ from {golden} (LEPTON_UPDATE_GOLDEN=1 to accept)"
    )


def assert_golden_is_valid(golden: Path, manifests: Manifests) -> None:
    """Assert that the golden file holds `manifests` and passes the schemas of two Kubernetes versions."""
    docs = list(yaml.safe_load_all(golden.read_text()))
    # what is applied is what the golden file shows
    assert docs == manifests
    validate(docs)
    validate(docs, kubernetes_version="1.35")


def refusal(manifests: Manifests, change: Callable[[Manifests], object]) -> str:
    """Return the one-line error `validate` raises once `change` has edited a copy of `manifests`."""
    docs = copy.deepcopy(manifests)
    change(docs)
    with pytest.raises(InvalidInputError) as e:
        validate(docs)
    assert "\n" not in str(e.value)
    return str(e.value)
