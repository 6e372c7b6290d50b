"""`deploy_ray` on a real local Ray cluster: our Photon service as a Ray Serve application, its
answers, batching, metrics and health kept, replicas and autoscaling set, bad input refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from lepton_ai.deploy.ray import deploy_ray, undeploy_ray
from lepton_ai.errors import InvalidInputError, LeptonError, NotFoundError
from lepton_ai.store import Services

if TYPE_CHECKING:
    from tests.conftest import RayCluster

pytest.importorskip("ray", reason="Ray is not installed: pip install 'lepton-ai[ray]'")
pytestmark = pytest.mark.slow


@contextlib.contextmanager
def driver(address: str) -> Iterator[None]:
    """This process connected to the cluster, for `serve.status()`."""
    import ray

    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def replica_states(address: str) -> dict[str, dict]:
    from ray import serve

    with driver(address):
        return {
            name: {d: dict(s.replica_states) for d, s in app.deployments.items()}
            for name, app in serve.status().applications.items()
        }


async def one_example_each(url: str, examples: list) -> list:
    """POST every example in a request of its own, all at once (so that the replicas can batch them)."""
    async with httpx.AsyncClient(timeout=60) as client:
        answers = await asyncio.gather(
            *(client.post(f"{url}/predict", json={"inputs": [x]}) for x in examples)
        )
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers if a.status_code != 200][:3]
    return [a.json()["outputs"][0] for a in answers]


def batch_sizes(url: str, scrapes: int = 12) -> set[tuple[float, float]]:
    """Return predict's (model calls, examples) pairs seen on `/metrics` (each scrape reaches one of the
    replicas)."""
    seen = set()
    for _ in range(scrapes):
        text = httpx.get(f"{url}/metrics", timeout=10).text
        values = {
            line.split("{")[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(("lepton_batch_size_count", "lepton_batch_size_sum"))
            and 'handler="predict"' in line
        }
        seen.add((values["lepton_batch_size_count"], values["lepton_batch_size_sum"]))
    return seen


def redeploy_with_the_cli(ref: str, address: str, port: int) -> dict[str, Any]:
    """Run `lepton deploy REF --target ray` with autoscaling between 1 and 2 replicas; return its JSON."""
    out = subprocess.run(
        [
            *(sys.executable, "-m", "lepton_ai.cli.main", "deploy", ref),
            *"--target ray --replicas 1 --autoscale 1,2 --address".split(),
            *(address, "--port", str(port), "-o", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def autoscaling_config(cluster: RayCluster, app: str) -> dict[str, Any]:
    """Return the autoscaling config Serve holds for the deployment `app` of the application `app`."""
    details = httpx.get(
        f"{cluster.dashboard_url}/api/serve/applications/",
        timeout=30,
        headers={"Authorization": f"Bearer {cluster.token}"},
    ).json()
    return details["applications"][app]["deployments"][app]["deployment_config"]["autoscaling_config"]


def test_a_model_served_on_ray_serve_answers_batches_and_scales(
    ray_cluster: RayCluster, digits_ref: str
) -> None:
    from lepton_ai.data import load
    from lepton_ai.serve.server import free_port
    from lepton_ai.serve.target import load_photon

    x = load("digits", "test").features[:96]
    photon = load_photon(digits_ref)
    photon.init()
    expected = photon.predict(photon.examples(x.tolist()), False).tolist()

    port = free_port()
    result = deploy_ray(digits_ref, replicas=2, address=ray_cluster.address, http_port=port)
    url = f"http://127.0.0.1:{port}/digits-cnn"
    try:
        assert result == {"name": "digits-cnn", "url": url, "replicas": 2, "autoscale": None, "open": False}
        assert replica_states(ray_cluster.address) == {"digits-cnn": {"digits-cnn": {"RUNNING": 2}}}
        # our service, behind Serve's route prefix: health, readiness, OpenAPI and the model's answers
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
        assert "/predict" in httpx.get(f"{url}/openapi.json").json()["paths"]
        assert asyncio.run(one_example_each(url, x.tolist())) == expected
        answer = httpx.post(
            f"{url}/predict", json={"inputs": x[:5].tolist(), "return_probs": True}, timeout=30
        )
        assert len(answer.json()["outputs"]) == 5
        bad = httpx.post(f"{url}/predict", json={"inputs": [[1.0, 2.0]]}, timeout=30)
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_input"
        # concurrent single-example requests were joined into model calls of several examples
        seen = batch_sizes(url)
        assert any(examples > calls > 0 for calls, examples in seen), seen

        # The CLI redeploys the same model with autoscaling: Serve holds the new config and still answers.
        redeployed = redeploy_with_the_cli(digits_ref, ray_cluster.address, port)
        assert redeployed == {
            "name": "digits-cnn",
            "url": url,
            "replicas": 1,
            "autoscale": [1, 2],
            "open": False,
        }
        # the CLI recorded it for the services page (deploy_ray, the function, records nothing)
        (recorded,) = Services().list()
        assert (recorded.kind, recorded.name, recorded.url) == ("deploy", "digits-cnn", url)
        assert (recorded.model_ref, recorded.deployment) == (digits_ref, "ray:digits-cnn")
        scaling = autoscaling_config(ray_cluster, "digits-cnn")
        # between 1 and 2 replicas, "busy" at the handler's max batch size
        assert (scaling["min_replicas"], scaling["max_replicas"], scaling["target_ongoing_requests"]) == (
            1,
            2,
            64,
        )
        assert httpx.post(f"{url}/predict", json={"inputs": x[:3].tolist()}, timeout=30).json() == {
            "outputs": expected[:3]
        }
    finally:
        with contextlib.suppress(NotFoundError):
            undeploy_ray("digits-cnn", ray_cluster.address)
    assert replica_states(ray_cluster.address) == {}
    assert httpx.post(f"{url}/predict", json={"inputs": x[:1].tolist()}, timeout=30).status_code == 404
    with pytest.raises(NotFoundError, match="digits-cnn"):
        undeploy_ray("digits-cnn", ray_cluster.address)


PHOTON = """
from lepton_ai.serve import Photon, handler

class Echo(Photon):
    @handler(max_batch_size=8)
    def echo(self, inputs: list[float]) -> list[float]:
        return inputs

class Broken(Photon):
    def init(self):
        raise RuntimeError("weights missing")

    @handler
    def ping(self) -> int:
        return 1
"""


def test_bad_input_is_one_line_and_touches_nothing(
    ray_cluster: RayCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lepton_ai.serve.server import free_port

    service = tmp_path / "service.py"
    service.write_text(PHOTON)
    target, address = f"{service}:Echo", ray_cluster.address
    with pytest.raises(InvalidInputError, match="--replicas must be at least 1"):
        deploy_ray(target, replicas=0, address=address)
    with pytest.raises(InvalidInputError, match="1 <= MIN <= MAX, got 3,1"):
        deploy_ray(target, autoscale=(3, 1), address=address)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(InvalidInputError, match="RAY_ADDRESS"):
        deploy_ray(target)
    started, nobody = time.monotonic(), f"127.0.0.1:{free_port()}"
    with pytest.raises(InvalidInputError, match=f"cannot reach the Ray cluster at {nobody}") as e:
        # at once: ray.init would retry for minutes
        deploy_ray(target, address=nobody)
    assert time.monotonic() - started < 10 and "\n" not in str(e.value)
    with pytest.raises(InvalidInputError, match="dashboard URL"):
        deploy_ray(target, address=ray_cluster.dashboard_url)
    with pytest.raises(InvalidInputError, match="unknown serve setting"):
        deploy_ray(target, address=address, settings={"max_batch": 3})
    with pytest.raises(InvalidInputError, match="model_process is not supported on Ray Serve"):
        deploy_ray(target, address=address, settings={"model_process": True})
    with pytest.raises(NotFoundError, match="no-such-model"):
        deploy_ray("no-such-model", address=address)
    # a Photon whose init fails on the replicas: Ray gives up after a few tries; the error names it, nothing
    # is left
    with pytest.raises(LeptonError, match="could not start broken: .*Broken: RuntimeError in init") as e:
        deploy_ray(f"{service}:Broken", address=address, http_port=free_port())
    assert "\n" not in str(e.value) and "broken" not in replica_states(address)
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(NotFoundError, match="no Ray Serve application 'nothing'"):
        undeploy_ray("nothing")
