"""A fake Kubernetes API server on loopback, and helpers the Kubernetes tests share (a train spec, the
container of a pod template, manifests by kind)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from lepton_ai.jobs.spec import parse

IMAGE = "ghcr.io/example/lepton:0.1.0"


def train_spec(**over: Any) -> Any:
    doc = {
        "kind": "train",
        "name": "digits-nightly",
        "resources": {"cpus": 2, "memory": "4Gi"},
        "retries": 2,
        "spec": {"model": "cnn-small", "data": "digits", "epochs": 10, "name": "digits-cnn"},
    }
    for key, value in over.items():
        (doc["spec"] if key in ("nproc", "nnodes") else doc)[key] = value
    return parse(doc)


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in manifests}


def container(pod_template: dict[str, Any]) -> dict[str, Any]:
    return pod_template["spec"]["containers"][0]


def kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
                "users": [{"name": "me", "user": {"token": "t0ken"}}],
            }
        )
    )
    return path


class FakeAPI(BaseHTTPRequestHandler):
    """Just enough of the Kubernetes API: server-side apply, get, delete, pods and their logs."""

    objects: dict[str, dict[str, Any]] = {}
    requests: list[tuple[str, str, str, dict[str, list[str]]]] = []
    pods: list[dict[str, Any]] = []
    # a path prefix the fake cluster does not serve (a CRD not installed)
    unserved = "/apis/none/"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, kind: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, message: str) -> None:
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": 404,
            "reason": "NotFound",
        }
        self._send(404, {**status, "message": message})

    def _handle(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        self.requests.append((self.command, url.path, self.headers.get("Content-Type", ""), query))
        assert self.headers["Authorization"] == "Bearer t0ken"
        if url.path.endswith("/log"):
            return self._send(200, f"log of {url.path.split('/')[-2]}\n", "text/plain")
        if url.path.startswith(self.unserved):
            return self._not_found("the server could not find the requested resource")
        if url.path.endswith("/pods"):
            return self._send(
                200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": self.pods}
            )
        if self.command == "PATCH":
            self.objects[url.path] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            return self._send(200, self.objects[url.path])
        if url.path not in self.objects:
            return self._not_found(f"{url.path} not found")
        if self.command == "DELETE":
            del self.objects[url.path]
            return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
        self._send(200, self.objects[url.path])

    do_GET = do_PATCH = do_DELETE = _handle


def pod(name: str, exit_code: int | None, created: str) -> dict[str, Any]:
    state = {"terminated": {"exitCode": exit_code}} if exit_code is not None else {"running": {}}
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {
            "containerStatuses": [
                {
                    "name": "job",
                    "image": IMAGE,
                    "imageID": "",
                    "ready": exit_code is None,
                    "restartCount": 0,
                    "state": state,
                }
            ]
        },
    }
