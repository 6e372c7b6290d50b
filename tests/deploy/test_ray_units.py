"""`deploy_ray` without a cluster: what it hands Ray Serve (Ray's own calls replaced by recorders)."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pytest

from lepton_ai.deploy import ray as ray_deploy


@pytest.fixture
def handed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record the settings `deploy_ray` would give Serve, on a cluster at 10.0.0.5:6379."""
    seen: dict[str, Any] = {}

    def run(name: str, target: str, settings: Any, options: Any, address: str, http_port: int) -> int:
        seen["settings"] = settings
        return http_port

    monkeypatch.setattr(ray_deploy, "_address", lambda address: "10.0.0.5:6379")
    monkeypatch.setattr(ray_deploy, "_connected", lambda address: contextlib.nullcontext())
    monkeypatch.setattr(ray_deploy, "_run_application", run)
    return seen


def test_ray_is_given_the_tokens_sha256_never_the_token(handed: dict[str, Any], digits_ref: str) -> None:
    result = ray_deploy.deploy_ray(digits_ref, token="s3cret")
    settings = handed["settings"]
    assert settings.token is None and settings.token_sha256 == hashlib.sha256(b"s3cret").hexdigest()
    assert "s3cret" not in repr(settings) and result["open"] is False


def test_an_open_endpoint_is_said_to_be_open(handed: dict[str, Any], digits_ref: str) -> None:
    result = ray_deploy.deploy_ray(digits_ref)
    assert result["open"] is True and handed["settings"].token_sha256 is None
