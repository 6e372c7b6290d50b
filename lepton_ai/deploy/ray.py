"""`lepton deploy REF --target ray`: the same Photon service as a Ray Serve application.

Each replica builds our own `Service` ASGI app around `load_photon(REF)`, so batching, load
shedding, `/predict`, `/healthz`, `/readyz`, `/metrics` and OpenAPI are the ones `lepton serve`
has; Ray adds the replicas, the routing, the autoscaling and restarts. One Serve application
per model, named after it, at route prefix `/NAME`: several models share one Serve HTTP port
(`http://HOST:PORT/NAME/predict`, `/NAME/metrics`, `/NAME/docs`).

The replicas find the model through LEPTON_HOME, LEPTON_DB_URL and LEPTON_ARTIFACTS, copied
from the caller's environment into the deployment's runtime_env: on a real cluster they must
name storage every node reaches (PostgreSQL and s3://… or a shared filesystem), not a laptop's
home directory. `/NAME/metrics` is the Prometheus endpoint of whichever replica answers (scrape
each replica, or use Ray's own metrics export, which covers every replica and Serve itself)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lepton_ai.cluster import last_line as _last_line
from lepton_ai.cluster import ray_address as _address
from lepton_ai.cluster import ray_connected as _connected
from lepton_ai.errors import InvalidInputError, LeptonError, NotFoundError
from lepton_ai.store.services import service_name

if TYPE_CHECKING:
    from lepton_ai.serve.app import ServeSettings, Service

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class PhotonReplica:
    """One Serve replica: our `Service` around the Photon of `target`, built in the replica's process."""

    def __init__(self, target: str, settings: dict[str, Any]) -> None:
        self.target, self.settings = target, settings
        self.service: Service | None = None

    def __serve_build_asgi_app__(self) -> Service:
        """Return the ASGI app Serve runs (its lifespan starts our batchers and the Photon's `init`)."""
        import gc

        from lepton_ai.serve.app import ServeSettings, Service
        from lepton_ai.serve.target import load_photon, serving_gc

        # as in `lepton serve`: rarer collections, what init loaded frozen before ready
        serving_gc()
        self.service = Service(
            load_photon(self.target, threads=1), ServeSettings(**self.settings), on_ready=gc.freeze
        )
        return self.service

    async def check_health(self) -> None:
        """Ray's health check: passes once `init` has finished (no request meets a loading replica); fails
        if it did."""
        if self.service is None:
            raise RuntimeError("the service was not built")
        while self.service.state == "starting":
            await asyncio.sleep(0.05)
        if self.service.state == "failed":
            raise RuntimeError(f"{type(self.service.photon).__name__}: {self.service.error}")


def deploy_ray(
    ref: str,
    *,
    replicas: int = 1,
    autoscale: tuple[int, int] | None = None,
    address: str | None = None,
    http_port: int = 8000,
    settings: dict[str, Any] | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """Serve `ref` on the Ray cluster at `address` (or RAY_ADDRESS) with Ray Serve; return its name, URL,
    replicas, and whether anyone who reaches it may call it (`open`: no token, not on loopback). With
    `token`, handlers require it; Ray gets only its sha256 (an application's config shows on a dashboard)."""
    _check_options(replicas, autoscale, http_port)
    address = _address(address)
    target = _pin(ref)
    digest = {"token_sha256": hashlib.sha256(token.encode()).hexdigest()} if token else {}
    # a bad ref or setting fails here, in one line, before Ray is touched
    service = _service(target, {**(settings or {}), **digest})
    # the application's name and route prefix
    name = service_name(target)
    options = _deployment_options(name, service, replicas, autoscale)
    with _connected(address):
        port = _run_application(name, target, service.settings, options, address, http_port)
        url_host = _gcs_host() if address == "auto" else _host(address)
    return {
        "name": name,
        "url": f"http://{url_host}:{port}/{name}",
        "replicas": replicas if autoscale is None else options["autoscaling_config"]["initial_replicas"],
        "autoscale": list(autoscale) if autoscale else None,
        "open": not token and _host(address) not in _LOOPBACK,
    }


def _check_options(replicas: int, autoscale: tuple[int, int] | None, http_port: int) -> None:
    """Raise, naming the option, when the replicas, the autoscaling bounds or the port cannot be used."""
    if replicas < 1:
        raise InvalidInputError(f"--replicas must be at least 1, got {replicas}")
    if autoscale is not None:
        low, high = autoscale
        if not 1 <= low <= high:
            raise InvalidInputError(f"--autoscale MIN,MAX needs 1 <= MIN <= MAX, got {low},{high}")
    if not 1 <= http_port <= 65535:
        raise InvalidInputError(f"--port must be between 1 and 65535, got {http_port}")


def _deployment_options(
    name: str, service: Service, replicas: int, autoscale: tuple[int, int] | None
) -> dict[str, Any]:
    """Return the Serve deployment's options: the service's limits, and a fixed count or autoscaling."""
    from lepton_ai.jobs.ray import job_env

    s = service.settings
    options: dict[str, Any] = {
        "name": name,
        "max_ongoing_requests": s.max_concurrency,
        "graceful_shutdown_timeout_s": s.timeout_s + 5,
        "max_constructor_retry_count": 3,
        "ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": job_env()}},
    }
    if autoscale is None:
        return {**options, "num_replicas": replicas}
    low, high = autoscale
    # a replica is "busy" at a full batch of concurrent requests (a batched handler has a max batch size)
    sizes = [h.max_batch_size for h in service.handlers.values() if h.max_batch_size is not None]
    batch = max(sizes, default=2)
    scaling = {
        "min_replicas": low,
        "max_replicas": high,
        "initial_replicas": min(max(replicas, low), high),
        "target_ongoing_requests": batch,
    }
    return {**options, "autoscaling_config": scaling}


def _run_application(
    name: str, target: str, settings: ServeSettings, options: dict[str, Any], address: str, http_port: int
) -> int:
    """Start Serve if needed and run the application `name` at route prefix /NAME; return Serve's HTTP port.

    A new application that cannot start is deleted again (a redeploy keeps the old one)."""
    from ray import serve
    from ray.serve.context import _get_global_client

    host = "127.0.0.1" if _host(address) in _LOOPBACK else "0.0.0.0"
    serve.start(http_options={"host": host, "port": http_port})
    # Serve may already run on this cluster with its own port
    client = _get_global_client()
    assert client is not None
    port = client.http_config.port
    app = serve.deployment(**options)(serve.ingress()(PhotonReplica)).bind(
        target, dataclasses.asdict(settings)
    )
    existed = name in serve.status().applications
    try:
        serve.run(app, name=name, route_prefix=f"/{name}")
    except Exception as e:
        why = _failure(name) or _last_line(e)
        if not existed:
            serve.delete(name)
        raise LeptonError(
            f"Ray Serve could not start {name}: {why}; the replicas' logs are on the Ray dashboard's "
            "Serve page"
        ) from None
    return port


def undeploy_ray(name: str, address: str | None = None) -> None:
    """Delete the Serve application `name` from the Ray cluster at `address` (or RAY_ADDRESS)."""
    with _connected(_address(address)):
        from ray import serve
        from ray.serve.exceptions import RayServeException

        try:
            apps = serve.status().applications
        except RayServeException:
            apps = {}
        if name not in apps:
            raise NotFoundError(
                f"no Ray Serve application {name!r} on this cluster (running: {', '.join(apps) or 'none'})"
            )
        serve.delete(name)


def _pin(ref: str) -> str:
    """Return `ref` as every replica must read it: files and folders absolute, a model's latest version
    resolved."""
    from lepton_ai.store.refs import parse_ref

    module, sep, cls = ref.rpartition(":")
    if sep and module.endswith(".py"):
        return f"{Path(module).resolve()}:{cls}"
    if Path(ref).expanduser().exists():
        return str(Path(ref).expanduser().resolve())
    try:
        parse_ref(ref)
    except InvalidInputError:
        # package.module:Class, importable on the cluster
        return ref
    from lepton_ai.store import Registry

    return Registry().get(ref).ref


def _service(target: str, settings: dict[str, Any]) -> Service:
    """Return the `Service` for `target`, not started: the replicas' own check of the target and settings,
    done here."""
    from lepton_ai.serve.app import ServeSettings, Service
    from lepton_ai.serve.target import load_photon

    try:
        serve_settings = ServeSettings(**settings)
    except TypeError as e:
        raise InvalidInputError(f"unknown serve setting: {e}") from None
    if serve_settings.model_process:
        raise InvalidInputError(
            "model_process is not supported on Ray Serve: a replica runs its handlers in "
            "its own Ray process (scale with --replicas)"
        )
    return Service(load_photon(target), serve_settings)


def _host(address: str) -> str:
    """Return the host part of a Ray address ('auto' for 'auto')."""
    return address.removeprefix("ray://").rpartition(":")[0].strip("[]") if address != "auto" else "auto"


def _gcs_host() -> str:
    """Return the IP of the cluster's head, as the connected driver sees it."""
    import ray

    return ray.get_runtime_context().gcs_address.rpartition(":")[0]


def _failure(name: str) -> str:
    """Return the last line of the failed deployment's message (the replica's traceback ends with the
    cause)."""
    from ray import serve

    try:
        messages = [d.message for d in serve.status().applications[name].deployments.values() if d.message]
    except Exception:
        # the cause is secondary: never hide the failure behind another
        return ""
    return _last_line(messages[-1]) if messages else ""
