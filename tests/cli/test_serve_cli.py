"""`lepton bench serve` against a real server, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lepton_ai.serve import Photon, handler


class Echo(Photon):
    @handler(max_batch_size=32)
    def predict(self, inputs: list[list[float]]) -> list[float]:
        return [sum(x) for x in inputs]


def lepton(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lepton")), *args], capture_output=True, text=True, timeout=120
    )


def test_bench_serve_reports_throughput_latency_and_errors(serve, tmp_path: Path) -> None:
    payload = tmp_path / "body.json"
    payload.write_text(json.dumps({"inputs": [[1.0, 2.0], [3.0, 4.0]]}))
    with serve(Echo()) as url:
        bench = ("bench", "serve", url, "--payload", str(payload))
        r = lepton(*bench, *"--concurrency 8 --duration 1 --warmup 0.2 --json".split())
        assert r.returncode == 0, r.stderr
        closed = json.loads(r.stdout)
        r = lepton(*bench, *"--rate 40 --duration 1 --warmup 0 --json".split())
        opened = json.loads(r.stdout)
        # the load generator on one CPU
        one_cpu = ("--cpus", str(max(os.sched_getaffinity(0))))
        table = lepton(*bench, *"--duration 0.5 --warmup 0".split(), *one_cpu).stdout
        wrong = json.loads(lepton(*bench, *"--handler nope --duration 0.5 --warmup 0 --json".split()).stdout)
    assert closed["requests_per_s"] > 20 and closed["ok"] == closed["requests"] and closed["errors"] == {}
    assert (
        closed["examples_per_request"] == 2
        and abs(closed["examples_per_s"] - closed["requests_per_s"] * 2) < 1
    )
    lat = closed["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    # about 40 scheduled in 1 s
    assert 30 <= opened["requests"] <= 45 and opened["rate"] == 40
    assert "requests/s" in table and "p50 / p90 / p99" in table
    assert wrong["ok"] == 0 and wrong["errors"]["404"] > 0


def test_bench_serve_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    bad, good = tmp_path / "bad.json", tmp_path / "good.json"
    bad.write_text("{nope")
    good.write_text('{"inputs": [[1.0]]}')
    for args, says in [
        (["http://127.0.0.1:1", "--payload", str(tmp_path / "none.json")], "no payload file"),
        (["http://127.0.0.1:1", "--payload", str(bad)], "not valid JSON"),
        (["localhost:1", "--payload", str(good)], "not an http(s) URL"),
        (["http://127.0.0.1:1", "--payload", str(good), "--cpus", "2-1"], "not a CPU list"),
    ]:
        r = lepton("bench", "serve", *args)
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_bench_serve_counts_a_server_that_is_not_there(tmp_path: Path) -> None:
    from lepton_ai.serve.server import free_port

    payload = tmp_path / "body.json"
    payload.write_text(json.dumps({"inputs": [[1.0]]}))
    r = lepton(
        "bench",
        "serve",
        f"http://127.0.0.1:{free_port()}",
        "--payload",
        str(payload),
        *"--duration 0.5 --warmup 0 --concurrency 2 --json".split(),
    )
    assert r.returncode == 0 and json.loads(r.stdout)["errors"]["connection"] > 0
