"""Control-plane benchmark (issue 23): the dashboard's pages and REST API over a registry at scale.

Seeds a fresh SQLite registry (100 models × 100 versions with lineage chains and recipes, 1,000 runs of
1,000 metric points each over 2–3 keys, 1,000 jobs with their attempts), starts the real `lepton dashboard`
process on a free loopback port, and times every API list and page with real HTTP (httpx, one keep-alive
connection): R rounds, each round every route once in a new shuffled order, so the machine's drift falls on
all routes alike. Per route: median, p95, min–max of the wall time the client saw (loopback: the server's
time plus a fraction of a millisecond), the server's own figure when it sends `Server-Timing`, and the weight
(the response as sent; for an HTML page, plus the same-origin scripts, styles and images it names). A route
that answers 404 (not written yet) is reported as missing. Then the dashboard process's memory (VmRSS, and
VmHWM its peak, from /proc).

Budgets: p95 < 150 ms for every page and API list, < 500 ms for the run comparison of 50 runs, weight
< 300 kB, the dashboard's memory < 300 MB. Exits 0 whatever it finds (a benchmark, not a test) and prints
FAIL lines for what misses.

    python benchmarks/dashboard.py [--small] [--rounds 30] [--out benchmarks/results/dashboard.json]

`--small` seeds a tenth of everything (a quick try; writes results/dashboard-small.json)."""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from common import write_json
from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection
from sqlalchemy import Table as SqlTable

RESULTS = Path(__file__).parent / "results"
console = Console(width=None if sys.stdout.isatty() else 160)

BUDGET_MS = 150.0
COMPARE_BUDGET_MS = 500.0
WEIGHT_BUDGET = 300_000
MEMORY_BUDGET = 300_000_000
COMPARE_RUNS = 50
T0 = datetime(2026, 11, 1)
RUN_KINDS = ("train", "optimize", "federated")
METRIC_KEYS = {
    "train": ("loss", "accuracy"),
    "optimize": ("latency_ms", "accuracy", "size_bytes"),
    "federated": ("loss", "accuracy", "epsilon"),
}
RECIPES: tuple[dict[str, Any], ...] = (
    {"technique": "prune", "amount": 0.5},
    {"technique": "quantize", "mode": "int8-static"},
    {"technique": "export", "format": "onnx", "opset": 17},
)
JOB_STATES = ("succeeded",) * 12 + ("failed",) * 4 + ("cancelled", "running", "queued", "queued")
METRIC_CHUNK = 50_000
Row = dict[str, Any]
ASSET = re.compile(r"""<(?:script|link|img)\b[^>]*?\b(?:src|href)=["'](/[^/"'][^"']*)["']""", re.I)


@dataclass(frozen=True)
class Scale:
    """How much the registry holds."""

    models: int
    versions: int
    runs: int
    points: int
    jobs: int


FULL = Scale(models=100, versions=100, runs=1000, points=1000, jobs=1000)
SMALL = Scale(models=10, versions=100, runs=100, points=1000, jobs=100)


@dataclass(frozen=True)
class Targets:
    """The rows the single-item routes ask for."""

    model: str
    version: int
    run_id: int
    job_id: int
    compare_ids: list[int]


@dataclass(frozen=True)
class Route:
    """One URL to time, what it is, and its time budget."""

    label: str
    path: str
    kind: str
    budget_ms: float = BUDGET_MS
    # a list whose next_cursor gives a page 2
    paged: bool = False


@dataclass(frozen=True)
class Sample:
    """One timed request."""

    ms: float
    server_ms: float | None
    status: int
    body_bytes: int
    wire_bytes: int


# -- seeding ------------------------------------------------------------------------------------------------


def table(name: str) -> SqlTable:
    """Return the registry's table `name` as SQLAlchemy Core sees it."""
    from lepton_ai.store.schema import Base

    found: SqlTable = Base.metadata.tables[name]
    return found


def run_rows(scale: Scale, rng: random.Random) -> list[dict[str, Any]]:
    """Return the runs: kinds in turn, ~10 parameters each, mostly completed."""
    rows = []
    for i in range(1, scale.runs + 1):
        kind = RUN_KINDS[i % 3]
        params = {
            "model": "cnn-small" if kind != "optimize" else f"model-{i % scale.models:03d}:1",
            "data": "digits",
            "epochs": rng.choice((5, 10, 20, 50)),
            "lr": rng.choice((1e-3, 3e-3, 1e-2)),
            "batch_size": rng.choice((32, 64, 128)),
            "seed": i,
            "device": "cpu",
            "precision": "fp32",
            "optimizer": "adamw",
            "weight_decay": 0.01,
        }
        status = rng.choice(("completed",) * 8 + ("failed", "running"))
        created = T0 + timedelta(minutes=10 * i)
        ended = None if status == "running" else created + timedelta(minutes=rng.randint(1, 60))
        rows.append(
            {"id": i, "kind": kind, "name": f"{kind}-{i}", "params": params, "status": status}
            | {"logs_uri": None, "created_at": created, "ended_at": ended}
        )
    return rows


def parent_id(scale: Scale, m: int, v: int) -> int | None:
    """Return the id version `v` of model `m` derives from: the one before it in its chain of four; for a
    chain's head in an even model, the same version of the model before (a fine-tune); else None."""
    vid = m * scale.versions + v
    if (v - 1) % 4:
        return vid - 1
    return vid - scale.versions if m % 2 == 0 and m > 0 else None


def version_rows(scale: Scale, rng: random.Random, real: list[Any]) -> list[dict[str, Any]]:
    """Return every model's versions: chains of four (base, pruned, quantized, exported), each derived one
    with its parent and recipe, an even model's base versions fine-tuned from the model before it; the first
    few point to the real artifacts in `real`."""
    rows = []
    for m in range(scale.models):
        for v in range(1, scale.versions + 1):
            vid = m * scale.versions + v
            sha = hashlib.sha256(f"{m}:{v}".encode()).hexdigest()
            stored = real[vid - 1] if vid <= len(real) else None
            step = (v - 1) % 4
            rows.append(
                {
                    "id": vid,
                    "model_id": m + 1,
                    "version": v,
                    "uri": stored.key if stored else f"objects/{sha[:2]}/{sha}/model.safetensors",
                    "format": stored.format if stored else ("onnx" if step == 3 else "safetensors"),
                    "size_bytes": stored.size_bytes if stored else rng.randint(10**5, 10**9),
                    "sha256": stored.sha256 if stored else sha,
                    "metrics": {
                        "accuracy": round(rng.uniform(0.8, 0.99), 4),
                        "throughput_per_s": round(rng.uniform(100, 50_000), 1),
                        "size_bytes": rng.randint(10**5, 10**9),
                    },
                    "parent_id": parent_id(scale, m, v),
                    "recipe": RECIPES[step - 1] if step else None,
                    "run_id": vid % scale.runs + 1,
                    "created_at": T0 + timedelta(minutes=vid),
                }
            )
    return rows


def model_rows(scale: Scale) -> list[dict[str, Any]]:
    """Return the models, each with all its versions numbered."""
    return [
        {
            "id": m + 1,
            "name": f"model-{m:03d}",
            "description": f"model {m}: a {('vision', 'text', 'tabular')[m % 3]} classifier",
            "tags": [("vision", "text", "tabular")[m % 3], "bench"],
            "last_version": scale.versions,
            "created_at": T0 + timedelta(hours=m),
            "updated_at": T0 + timedelta(hours=m + 1),
        }
        for m in range(scale.models)
    ]


def curve(key: str, x: float) -> float:
    """Return a metric's noiseless value at fraction `x` of a run: loss falls, accuracy and ε rise."""
    if key == "loss":
        return 2.3 * (1 - x) ** 2 + 0.05
    if key == "accuracy":
        return 0.1 + 0.88 * x
    return 0.1 + 7.9 * x if key == "epsilon" else 1 + 99 * (1 - x)


def metric_rows(run: Row, points: int, rng: random.Random) -> Iterator[Row]:
    """Yield one run's `points` metric points, its 2–3 keys in turn at each step."""
    keys = METRIC_KEYS[run["kind"]]
    for i in range(points):
        step, k = divmod(i, len(keys))
        value = curve(keys[k], step / max(1, points // len(keys))) + rng.gauss(0, 0.01)
        yield {
            "run_id": run["id"],
            "key": keys[k],
            "step": step,
            "value": value,
            "created_at": run["created_at"],
        }


def seed_metrics(conn: Connection, runs: list[dict[str, Any]], points: int) -> int:
    """Insert every run's metric points in chunks of executemany; return how many."""
    rng, insert, n = random.Random(1), table("run_metrics").insert(), 0
    chunk: list[Row] = []
    for run in runs:
        chunk.extend(metric_rows(run, points, rng))
        if len(chunk) >= METRIC_CHUNK:
            conn.execute(insert, chunk)
            n, chunk = n + len(chunk), []
    if chunk:
        conn.execute(insert, chunk)
    return n + len(chunk)


def job_spec(kind: str, name: str) -> dict[str, Any]:
    """Return a valid stored spec of a job of `kind`."""
    from lepton_ai.jobs.spec import parse

    body: dict[str, Any] = {"data": "digits"}
    if kind == "train":
        body |= {"model": "cnn-small", "name": name, "epochs": 10}
    elif kind == "optimize":
        body |= {"model": "model-000:1"}
    spec: dict[str, Any] = parse({"kind": kind, "name": name, "spec": body}).to_dict()
    return spec


def attempt_rows(job: Row, store: Any) -> list[Row]:
    """Return a job's attempts: the earlier ones failed, the last one ended as the job did."""
    from lepton_ai.jobs.worker import log_key

    rows = []
    for a in range(1, job["attempts"] + 1):
        last = a == job["attempts"]
        rows.append(
            {
                "job_id": job["id"],
                "attempt": a,
                "state": job["state"] if last else "failed",
                "worker": "bench:4242",
                "exit_code": job["exit_code"] if last else 1,
                "error": job["error"] if last else "exit code 1",
                "logs_uri": store.location(log_key(job["id"], a)),
                "started_at": job["created_at"] + timedelta(minutes=a),
                "ended_at": job["ended_at"] if last else job["created_at"] + timedelta(minutes=a, seconds=30),
            }
        )
    return rows


def job_row(i: int, scale: Scale, rng: random.Random, target: int, store: Any) -> Row:
    """Return job `i`: mostly succeeded, some failed after retries; job `target` failed on attempt 3."""
    from lepton_ai.jobs.worker import log_key

    kind = RUN_KINDS[i % 3]
    state = "failed" if i == target else rng.choice(JOB_STATES)
    n = 3 if i == target else (0 if state == "queued" else rng.choice((1, 1, 1, 2, 3)))
    created = T0 + timedelta(minutes=7 * i)
    ended = (
        created + timedelta(minutes=rng.randint(1, 90))
        if state in ("succeeded", "failed", "cancelled")
        else None
    )
    return {
        "id": i,
        "name": f"{kind}-job-{i}",
        "kind": kind,
        "backend": "local",
        "address": None,
        "external_id": None,
        "spec": job_spec(kind, f"{kind}-job-{i}"),
        "priority": 0,
        "cwd": "/srv/lepton",
        "state": state,
        "attempts": n,
        "cancel_requested": state == "cancelled",
        "worker": "bench:4242" if n else None,
        "pgid": None,
        "exit_code": None if state in ("running", "queued") else int(state != "succeeded"),
        "error": "RuntimeError: CUDA out of memory (exit 1)" if state == "failed" else None,
        "logs_uri": store.location(log_key(i, n)) if n else None,
        "versions": [f"model-{i % scale.models:03d}:1"] if state == "succeeded" else [],
        "created_at": created,
        "started_at": created + timedelta(seconds=5) if n else None,
        "ended_at": ended,
        "updated_at": ended or created,
    }


def write_logs(store: Any, job_ids: list[int], attempts: int, lines: int = 1000) -> None:
    """Write a training log of `lines` lines for attempt 1..`attempts` of each job in `job_ids`."""
    from lepton_ai.jobs.worker import log_key

    for job_id in job_ids:
        for a in range(1, attempts + 1):
            path = Path(store.path(log_key(job_id, a)))
            path.parent.mkdir(parents=True, exist_ok=True)
            text = "".join(
                f"2026-11-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z epoch {i // 100 + 1}/10 step {i} "
                f"loss {2.3 / (1 + i / 50):.4f} accuracy {min(0.99, i / 1000):.4f} lr 3.0e-03 412.5 it/s\n"
                for i in range(lines)
            )
            path.write_text(text)


def real_artifacts(store: Any, tmp: Path, n: int = 5) -> list[Any]:
    """Store `n` small real files in the artifact store; return their entries."""
    out = []
    for i in range(n):
        f = tmp / f"weights-{i}.safetensors"
        f.write_bytes(os.urandom(4096))
        out.append(store.put(f))
    return out


def seed(scale: Scale, home: Path) -> tuple[dict[str, float], Targets]:
    """Fill a fresh registry under `home` (schema by the registry's own migrations, rows by Core executemany);
    return the seconds each part took and the rows the routes ask for."""
    from lepton_ai.store import db
    from lepton_ai.store.artifacts import ArtifactStore

    t0 = time.perf_counter()
    engine = db.engine_for(f"sqlite:///{home / 'registry.db'}")
    store = ArtifactStore(str(home / "artifacts"))
    rng, times = random.Random(0), {"schema_s": time.perf_counter() - t0}
    runs = run_rows(scale, rng)
    target_job = scale.jobs // 2
    with engine.begin() as conn:
        conn.execute(table("runs").insert(), runs)
        conn.execute(table("models").insert(), model_rows(scale))
        real = real_artifacts(store, home)
        conn.execute(table("model_versions").insert(), version_rows(scale, rng, real))
    times["models_runs_s"] = time.perf_counter() - t0 - sum(times.values())
    with engine.begin() as conn:
        seed_metrics(conn, runs, scale.points)
    times["run_metrics_s"] = time.perf_counter() - t0 - sum(times.values())
    jobs = [job_row(i, scale, rng, target_job, store) for i in range(1, scale.jobs + 1)]
    attempts = [a for job in jobs for a in attempt_rows(job, store)]
    with engine.begin() as conn:
        conn.execute(table("jobs").insert(), jobs)
        conn.execute(table("job_attempts").insert(), attempts)
    write_logs(store, [target_job, *range(1, 6)], 3)
    times["jobs_s"] = time.perf_counter() - t0 - sum(times.values())
    times["total_s"] = time.perf_counter() - t0
    db.dispose_all()
    middle = scale.runs // 2
    targets = Targets(
        model=f"model-{scale.models // 2:03d}",
        version=scale.versions // 2,
        run_id=middle,
        job_id=target_job,
        compare_ids=list(range(middle - COMPARE_RUNS // 2, middle + COMPARE_RUNS - COMPARE_RUNS // 2)),
    )
    return times, targets


# -- measuring ----------------------------------------------------------------------------------------------


def routes(t: Targets) -> list[Route]:
    """Return every route to time: the API's lists and items, then the dashboard's pages."""
    api, m, v, r, j = "/api/v1", t.model, t.version, t.run_id, t.job_id
    ids = ",".join(str(i) for i in t.compare_ids)
    return [
        Route("/api/v1/models", f"{api}/models", "api", paged=True),
        Route("/api/v1/models?contains=05", f"{api}/models?contains=05", "api"),
        Route("/api/v1/models/{name}/versions", f"{api}/models/{m}/versions", "api", paged=True),
        Route("/api/v1/models/{name}/versions/{v}", f"{api}/models/{m}/versions/{v}", "api"),
        Route("/api/v1/runs", f"{api}/runs", "api", paged=True),
        Route("/api/v1/runs?kind=train", f"{api}/runs?kind=train", "api"),
        Route("/api/v1/runs?status=failed", f"{api}/runs?status=failed", "api"),
        Route("/api/v1/runs/{id}", f"{api}/runs/{r}", "api"),
        Route("/api/v1/runs/{id}/metrics", f"{api}/runs/{r}/metrics", "api"),
        Route("/api/v1/jobs", f"{api}/jobs", "api", paged=True),
        Route("/api/v1/jobs?state=failed", f"{api}/jobs?state=failed", "api"),
        Route("/api/v1/jobs/{id}", f"{api}/jobs/{j}", "api"),
        Route("/api/v1/jobs/{id}/log", f"{api}/jobs/{j}/log", "api"),
        Route("/api/v1/services", f"{api}/services", "api"),
        Route("/", "/", "page"),
        Route("/models", "/models", "page"),
        Route("/models/{name}", f"/models/{m}", "page"),
        Route("/models/{name}/{version}", f"/models/{m}/{v}", "page"),
        Route("/runs", "/runs", "page"),
        Route("/runs?kind=train", "/runs?kind=train", "page"),
        Route("/runs/{id}", f"/runs/{r}", "page"),
        Route(
            f"/runs/compare?ids=<{len(t.compare_ids)} ids>",
            f"/runs/compare?ids={ids}",
            "page",
            COMPARE_BUDGET_MS,
        ),
        Route("/jobs", "/jobs", "page"),
        Route("/jobs?state=failed", "/jobs?state=failed", "page"),
        Route("/jobs/{id}", f"/jobs/{j}", "page"),
        Route("/services", "/services", "page"),
    ]


def server_timing(header: str | None) -> float | None:
    """Return the longest `dur` in a Server-Timing header (the total, when it names nested parts), ms."""
    if not header:
        return None
    durs = [float(d) for d in re.findall(r"dur=([0-9.]+)", header)]
    return max(durs) if durs else None


def wire_bytes(r: httpx.Response) -> int:
    """Return the body's size as sent (compressed, if it was), else as read."""
    return r.num_bytes_downloaded or len(r.content)


def time_once(client: httpx.Client, path: str) -> tuple[Sample, httpx.Response]:
    """Request `path` once; return how long it took and what came back."""
    t0 = time.perf_counter()
    r = client.get(path)
    ms = 1e3 * (time.perf_counter() - t0)
    timing = server_timing(r.headers.get("server-timing"))
    return Sample(ms, timing, r.status_code, len(r.content), wire_bytes(r)), r


def assets_of(client: httpx.Client, html: str, cache: dict[str, int]) -> dict[str, int]:
    """Return the wire size of each same-origin script, style sheet and image the page names."""
    sizes = {}
    for path in dict.fromkeys(ASSET.findall(html)):
        if path not in cache:
            r = client.get(path)
            cache[path] = wire_bytes(r) if r.status_code == 200 else 0
        sizes[path] = cache[path]
    return sizes


def probe(client: httpx.Client, route: Route, cache: dict[str, int]) -> dict[str, Any]:
    """Request a route once (the warm-up); return its status ("ok", "missing" on 404, else "HTTP n"), first
    time, assets and, for a paged list, the route of its page 2."""
    sample, r = time_once(client, route.path)
    out: dict[str, Any] = {"first_ms": sample.ms, "assets": {}, "page2": None}
    if r.status_code == 404:
        return out | {"status": "missing"}
    if r.status_code != 200:
        return out | {"status": f"HTTP {r.status_code}", "error": r.text[:300]}
    if "text/html" in r.headers.get("content-type", ""):
        out["assets"] = assets_of(client, r.text, cache)
    cursor = r.json().get("next_cursor") if route.paged else None
    if cursor:
        sep = "&" if "?" in route.path else "?"
        label = f"{route.label}?cursor=<page 2>"
        out["page2"] = Route(label, f"{route.path}{sep}cursor={cursor}", route.kind, route.budget_ms)
    return out | {"status": "ok"}


def measure(
    client: httpx.Client, todo: list[Route], rounds: int, rng: random.Random
) -> dict[str, list[Sample]]:
    """Time every route once a round, in a new shuffled order each round; return each route's samples."""
    samples: dict[str, list[Sample]] = {r.label: [] for r in todo}
    for _ in range(rounds):
        order = list(todo)
        rng.shuffle(order)
        for route in order:
            samples[route.label].append(time_once(client, route.path)[0])
    return samples


def p95(values: list[float]) -> float:
    """Return the 95th percentile (inclusive method: within the values measured)."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def summarise(route: Route, seen: dict[str, Any], samples: list[Sample]) -> dict[str, Any]:
    """Return one route's figures and verdict against its budgets."""
    base = {"label": route.label, "path": route.path, "kind": route.kind, "budget_ms": route.budget_ms}
    base |= {"status": seen["status"], "first_ms": seen["first_ms"]}
    if seen["status"] != "ok":
        return base | {
            "verdict": "missing" if seen["status"] == "missing" else "FAIL",
            "error": seen.get("error"),
        }
    ms = [s.ms for s in samples]
    server = [s.server_ms for s in samples if s.server_ms is not None]
    weight = max(s.wire_bytes for s in samples) + sum(seen["assets"].values())
    out: dict[str, Any] = base | {
        "rounds": len(ms),
        "median_ms": statistics.median(ms),
        "p95_ms": p95(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "server_timing_median_ms": statistics.median(server) if server else None,
        "server_timing_p95_ms": p95(server) if server else None,
        "body_bytes": max(s.body_bytes for s in samples),
        "wire_bytes": max(s.wire_bytes for s in samples),
        "assets": seen["assets"],
        "weight_bytes": weight,
        "errors": sum(s.status != 200 for s in samples),
    }
    fails = []
    if out["p95_ms"] >= route.budget_ms:
        fails.append(f"p95 {out['p95_ms']:.0f} ms ≥ {route.budget_ms:.0f} ms")
    if weight >= WEIGHT_BUDGET:
        fails.append(f"weight {weight / 1e3:.0f} kB ≥ {WEIGHT_BUDGET / 1e3:.0f} kB")
    if out["errors"]:
        fails.append(f"{out['errors']} answers not 200")
    return out | {"verdict": "FAIL" if fails else "pass", "why": "; ".join(fails)}


def memory(pid: int) -> dict[str, int]:
    """Return a process's VmRSS and VmHWM (its peak) in bytes, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def run_dashboard(home: Path, todo: list[Route], rounds: int) -> dict[str, Any]:
    """Start `lepton dashboard` over the registry under `home`, time every route, read its memory; return
    the figures."""
    from lepton_ai.serve.server import ServerProcess, free_port

    lepton = Path(sys.executable).with_name("lepton")
    command = [str(lepton)] if lepton.exists() else [sys.executable, "-m", "lepton_ai.cli.main"]
    env = {
        "LEPTON_HOME": str(home),
        "LEPTON_DB_URL": f"sqlite:///{home / 'registry.db'}",
        "LEPTON_ARTIFACTS": str(home / "artifacts"),
    }
    port = free_port()
    args = ["dashboard", "--host", "127.0.0.1", "--port", str(port)]
    t0 = time.perf_counter()
    with ServerProcess(args, port, command, "/api/v1/models?limit=1", 120.0, env) as server:
        assert server.proc is not None
        started_s, at_start = time.perf_counter() - t0, memory(server.proc.pid)
        with httpx.Client(base_url=server.url, timeout=60.0) as client:
            cache: dict[str, int] = {}
            seen = {r.label: probe(client, r, cache) for r in todo}
            # each page 2 right after its page 1
            todo = [x for r in todo for x in (r, seen[r.label]["page2"]) if x is not None]
            seen |= {r.label: probe(client, r, cache) for r in todo if r.label not in seen}
            live = [r for r in todo if seen[r.label]["status"] == "ok"]
            samples = measure(client, live, rounds, random.Random(2))
        at_end = memory(server.proc.pid)
    figures = [summarise(r, seen[r.label], samples.get(r.label, [])) for r in todo]
    return {"started_s": started_s, "memory_at_start": at_start, "memory": at_end, "routes": figures}


def verdicts(result: dict[str, Any]) -> list[str]:
    """Return one line per budget missed (routes, the compare page, memory)."""
    lines = [f"{r['label']}: {r['why'] or r['status']}" for r in result["routes"] if r["verdict"] == "FAIL"]
    peak = result["memory"].get("VmHWM", 0)
    if peak >= MEMORY_BUDGET:
        lines.append(f"dashboard memory: peak {peak / 1e6:.0f} MB ≥ {MEMORY_BUDGET / 1e6:.0f} MB")
    return lines


def print_table(result: dict[str, Any]) -> None:
    """Print every route's figures, the memory and the verdicts."""
    t = Table(title=f"dashboard at scale ({result['rounds']} rounds, loopback HTTP)")
    for col in (
        "route",
        "median ms",
        "p95 ms",
        "min–max ms",
        "Server-Timing p95",
        "bytes",
        "weight",
        "budget",
    ):
        t.add_column(col, justify="left" if col == "route" else "right")
    t.add_column("")
    for r in result["routes"]:
        if r["status"] != "ok":
            t.add_row(r["label"], *["—"] * 6, f"{r['budget_ms']:.0f} ms", r["status"])
            continue
        st = r["server_timing_p95_ms"]
        t.add_row(
            r["label"],
            f"{r['median_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['min_ms']:.1f}–{r['max_ms']:.1f}",
            "—" if st is None else f"{st:.1f}",
            f"{r['body_bytes']:,}",
            f"{r['weight_bytes'] / 1e3:.1f} kB",
            f"{r['budget_ms']:.0f} ms",
            "[green]pass[/]" if r["verdict"] == "pass" else f"[red]FAIL[/] {r['why']}",
        )
    console.print(t)
    mem = result["memory"]
    console.print(
        f"dashboard process memory after all requests: VmRSS {mem.get('VmRSS', 0) / 1e6:.0f} MB, "
        f"peak VmHWM {mem.get('VmHWM', 0) / 1e6:.0f} MB (budget {MEMORY_BUDGET / 1e6:.0f} MB; "
        f"{result['memory_at_start'].get('VmRSS', 0) / 1e6:.0f} MB once started)"
    )
    fails = verdicts(result)
    missing = [r["label"] for r in result["routes"] if r["status"] == "missing"]
    if missing:
        console.print(f"[yellow]missing (404, not written yet):[/] {', '.join(missing)}")
    console.print(
        "[red bold]FAIL[/]\n  " + "\n  ".join(fails) if fails else "[green bold]every measured budget met[/]"
    )


def main() -> int:
    """Seed, serve, measure, print, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="A tenth of everything, for a quick try.")
    parser.add_argument("--rounds", type=int, default=30, help="Times each route is requested.")
    parser.add_argument("--out", help="JSON path (default results/dashboard.json, -small with --small).")
    parser.add_argument("--keep", action="store_true", help="Keep the seeded registry and print where.")
    args = parser.parse_args()
    from lepton_ai.machine import describe, machine_info

    scale = SMALL if args.small else FULL
    out = Path(args.out or RESULTS / ("dashboard-small.json" if args.small else "dashboard.json"))
    info = machine_info()
    console.print(f"[bold]machine:[/] {describe(info)}")
    home = Path(tempfile.mkdtemp(prefix="lepton-dashboard-bench-"))
    seeded, targets = seed(scale, home)
    db_bytes = sum(f.stat().st_size for f in home.glob("registry.db*"))
    console.print(
        f"seeded {scale.models * scale.versions:,} versions, {scale.runs:,} runs × {scale.points:,} points, "
        f"{scale.jobs:,} jobs in [bold]{seeded['total_s']:.1f} s[/] "
        f"({', '.join(f'{k[:-2]} {v:.1f} s' for k, v in seeded.items() if k != 'total_s')}; "
        f"database {db_bytes / 1e6:.0f} MB)"
    )
    load_before = os.getloadavg()
    measured = run_dashboard(home, routes(targets), args.rounds)
    # a shared machine: what else ran meanwhile
    load: dict[str, Any] = {"before": load_before, "after": os.getloadavg(), "cores": os.cpu_count()}
    console.print(f"load average (1 min) before / after: {load['before'][0]:.1f} / {load['after'][0]:.1f}")
    result: dict[str, Any] = {
        "machine": info,
        "machine_line": describe(info),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.time(),
        "scale": asdict(scale),
        "targets": asdict(targets),
        "seed_seconds": seeded,
        "database_bytes": db_bytes,
        "rounds": args.rounds,
        "load_average": load,
        "budgets": {"p95_ms": BUDGET_MS, "compare_p95_ms": COMPARE_BUDGET_MS, "weight_bytes": WEIGHT_BUDGET}
        | {"memory_bytes": MEMORY_BUDGET},
        **measured,
    }
    result["fails"] = verdicts(result)
    print_table(result)
    write_json(out, result)
    console.print(f"wrote {out}")
    if args.keep:
        console.print(f"registry kept in {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
