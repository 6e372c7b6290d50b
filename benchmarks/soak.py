"""Soak and abuse benchmark (issue 24): `lepton serve` of the digits `cnn-small` for minutes under steady
load while its model process is killed, then under abuse.

- Saturation: closed loop at 32 clients (`lepton bench serve`'s load generator); the soak runs at 70 % of it.
- Soak (`--minutes`, one-minute windows): open-loop load at that rate, one request in 20 a bad one (malformed
  JSON, wrong sizes, wrong types, no examples: each must get a 4xx), the model process killed (SIGKILL) once a
  minute, `--kill-at` seconds into it. Per minute: answers by status class, p50/p99 of the good requests,
  the RSS of the server and its children at the end of the minute. Checks: every request answered (transport
  errors counted apart), bad requests answered 4xx, 5xx only within `--kill-window` s after a kill, memory
  growth from the end of minute 2 to the end < 5 %, each minute's p99 ≤ 2 × the first minute's.
- Abuse (`--abuse-seconds`, in two halves): inline 4096 × 4096 PNGs (base64, one example a request) a few a
  second, good requests at a modest rate and `/healthz` probed every 50 ms on a fresh connection each (as an
  orchestrator does); in the second half also 600 connections that send a POST's headers (with a
  Content-Length) and stall, each opened again when the server ends it (apart, so that what the stalled
  connections do cannot hide what the PNGs do).
  Checks, for each half: /healthz p99 < 100 ms, the good requests answered 2xx.

Every check is printed PASS/FAIL with its figure; the exit code is 0 either way (the figures are recorded).

    python benchmarks/soak.py [--minutes 10] [--abuse-seconds 60] [--kill-at 30] [--kill-window 15]

Writes benchmarks/results/soak.json and soak.png; the tables go to the terminal."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import itertools
import json
import os
import resource
import signal
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from common import write_json
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
# wide enough for the tables when the output is not a terminal
console = Console(width=max(Console().width, 130))
# request kinds, and the status recorded for an answer that never came
GOOD, BAD, PNG, HEALTH = 0, 1, 2, 3
KINDS = {GOOD: "good", BAD: "bad", PNG: "png", HEALTH: "healthz"}
TIMEOUT, CONNECTION = -1, -2
# what must be answered 4xx: malformed JSON, wrong sizes, wrong types, no examples, no field at all
BAD_BODIES = [
    b'{"inputs": [[1, 2, 3',
    b'{"inputs": [[1, 2, 3]]}',
    b'{"inputs": "not a list"}',
    json.dumps({"inputs": [["x"] * 64]}).encode(),
    b'{"inputs": []}',
    b"{}",
]


@dataclass
class Log:
    """Every request of a phase: when it was due (perf_counter s), its latency (s), status and kind."""

    at: array = field(default_factory=lambda: array("d"))
    latency: array = field(default_factory=lambda: array("d"))
    status: array = field(default_factory=lambda: array("h"))
    kind: array = field(default_factory=lambda: array("b"))

    def add(self, at: float, latency: float, status: int, kind: int) -> None:
        self.at.append(at)
        self.latency.append(latency)
        self.status.append(status)
        self.kind.append(kind)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.frombuffer(getattr(self, k), dtype=getattr(self, k).typecode) for k in KEYS}


KEYS = ("at", "latency", "status", "kind")


def post(url: str, path: str, body: bytes) -> bytes:
    """Return the bytes of a keep-alive POST of `body` to `url` + `path`."""
    host = urlsplit(url).netloc
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def png_body(size: int = 4096) -> bytes:
    """Return a /predict body of one inline all-black `size`² PNG (base64)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (size, size)).save(buf, "PNG")
    return json.dumps({"inputs": [base64.b64encode(buf.getvalue()).decode()]}).encode()


Slot = tuple[float, bytes, int]


async def client(url: str, next_slot: Callable[[], Slot | None], log: Log, timeout: float) -> None:
    """One keep-alive connection sending the requests of the slots it takes (open loop: timed from when a
    request was due if its client was still busy then, else from its send); reconnect after an error."""
    from lepton_ai.serve.loadtest import _Connection

    parts, loop, conn = urlsplit(url), asyncio.get_running_loop(), None
    while (slot := next_slot()) is not None:
        at, request, kind = slot
        if (delay := at - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
            at = time.perf_counter()
        try:
            if conn is None or not conn.reusable:
                if conn is not None and conn.transport is not None:
                    conn.transport.close()
                made = loop.create_connection(_Connection, parts.hostname or "127.0.0.1", parts.port or 80)
                conn = (await asyncio.wait_for(made, timeout))[1]
            status = await conn.ask(request, timeout)
        except asyncio.TimeoutError:
            status, conn = TIMEOUT, None
        except OSError:
            status, conn = CONNECTION, None
            await asyncio.sleep(0.01)
        log.add(at, time.perf_counter() - at, status, kind)
    if conn is not None and conn.transport is not None:
        conn.transport.close()


async def open_loop(
    url: str, pick: Callable[[int], tuple[bytes, int]], rate: float, seconds: float, log: Log, clients: int
) -> None:
    """Send `rate` requests a second for `seconds` from `clients` connections: request i is `pick(i)`."""
    begin, count = time.perf_counter(), itertools.count()

    def next_slot() -> Slot | None:
        i = next(count)
        at = begin + i / rate
        return (at, *pick(i)) if at < begin + seconds else None

    await asyncio.gather(*(client(url, next_slot, log, 30.0) for _ in range(clients)))


def session_pids(sid: int) -> list[int]:
    """Return the live processes of session `sid` (a server and every process it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getsid(int(entry.name)) == sid:
                pids.append(int(entry.name))
        except OSError:
            # gone meanwhile
            pass
    return pids


def rss_mb(pids: list[int]) -> float:
    """Return the resident memory of `pids` together, MB."""
    total = 0
    for pid in pids:
        # gone meanwhile
        with contextlib.suppress(OSError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return total * os.sysconf("SC_PAGE_SIZE") / 1e6


def model_pid(server_pid: int) -> int | None:
    """Return the pid of the server's model process (`python -c "...serve.process import main..."`)."""
    for pid in session_pids(server_pid):
        try:
            if b"serve.process import main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            pass
    return None


async def until(at: float) -> None:
    """Sleep until perf_counter() reaches `at`."""
    await asyncio.sleep(max(0.0, at - time.perf_counter()))


async def soak(url: str, server_pid: int, good_body: bytes, rate: float, args: Any) -> dict[str, Any]:
    """Load the server at `rate` for `args.minutes` minutes, one request in 20 a bad one, killing its model
    process `args.kill_at` s into each minute and sampling its memory at the end of each."""
    log, kills, memory = Log(), [], []
    good, bad = post(url, "/predict", good_body), [post(url, "/predict", b) for b in BAD_BODIES]
    begin = time.perf_counter()

    def pick(i: int) -> tuple[bytes, int]:
        return (bad[(i // 20) % len(bad)], BAD) if i % 20 == 19 else (good, GOOD)

    async def chores() -> None:
        for m in range(args.minutes):
            await until(begin + 60 * m + args.kill_at)
            pid = model_pid(server_pid)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                kills.append(time.perf_counter() - begin)
            console.print(f"  minute {m + 1}: killed the model process {pid or '(none found)'}")
            await until(begin + 60 * (m + 1) - 0.5)
            memory.append({"server_mb": rss_mb([server_pid]), "total_mb": rss_mb(session_pids(server_pid))})

    await asyncio.gather(open_loop(url, pick, rate, 60 * args.minutes, log, clients=128), chores())
    return {"log": log.arrays(), "begin": begin, "kills": kills, "memory": memory}


def in_windows(t: np.ndarray, kills: list[float], window: float) -> np.ndarray:
    """Return which of the times `t` (s) fall within `window` s after one of the `kills`."""
    hit = np.zeros(len(t), dtype=bool)
    for k in kills:
        hit |= (t >= k) & (t <= k + window)
    return hit


def classes(status: np.ndarray) -> dict[str, int]:
    """Count answers by status class; transport errors (no answer) apart."""
    return {
        "2xx": int(((status >= 200) & (status < 300)).sum()),
        "4xx": int(((status >= 400) & (status < 500)).sum()),
        "5xx": int((status >= 500).sum()),
        "other": int(((status > 0) & (status < 200) | (status >= 300) & (status < 400)).sum()),
        "no answer": int((status < 0).sum()),
    }


def percentiles(seconds: np.ndarray) -> dict[str, float | None]:
    """Return p50, p99 and max of latencies, ms."""
    if not len(seconds):
        return {"p50": None, "p99": None, "max": None}
    ms = seconds * 1000
    return {q: round(float(np.percentile(ms, v)), 2) for q, v in (("p50", 50), ("p99", 99), ("max", 100))}


def minutes(run: dict[str, Any], n: int, window: float) -> list[dict[str, Any]]:
    """Per minute: answers by class and by status code, good requests' latency, memory, and how long after
    the minute's kill the last 5xx was answered."""
    a, rows = run["log"], []
    t = a["at"] - run["begin"]
    done = t + a["latency"]
    near = in_windows(done, run["kills"], window)
    for m in range(n):
        sel = (t >= 60 * m) & (t < 60 * (m + 1))
        st = a["status"][sel]
        good = sel & (a["kind"] == GOOD) & (a["status"] >= 200) & (a["status"] < 300)
        kill = next((k for k in run["kills"] if 60 * m <= k < 60 * (m + 1)), None)
        after = (a["status"] >= 500) & in_windows(done, [kill] if kill is not None else [], window)
        rows.append(
            {
                "minute": m + 1,
                "requests": int(sel.sum()),
                **classes(st),
                "statuses": {str(k): int(v) for k, v in sorted(Counter(st.tolist()).items())},
                "good_ms": percentiles(a["latency"][good]),
                # the same, without those answered within the window after a kill
                "good_ms_away_from_kill": percentiles(a["latency"][good & ~near]),
                "kill_s": kill,
                "last_5xx_after_kill_s": round(float(done[after].max() - kill), 2) if after.any() else None,
                **(run["memory"][m] if m < len(run["memory"]) else {}),
            }
        )
    return rows


def soak_checks(run: dict[str, Any], rows: list[dict[str, Any]], window: float) -> list[dict[str, Any]]:
    """The soak's checks, each with its figure."""
    a = run["log"]
    st, done = a["status"], a["at"] - run["begin"] + a["latency"]
    five = st >= 500
    near = in_windows(done, run["kills"], window)
    bad = a["kind"] == BAD
    wrong_bad = bad & ~((st >= 400) & (st < 500)) & ~(five & near)
    checks = [
        check("every request answered", int((st < 0).sum()) == 0, f"{int((st < 0).sum())} without an answer"),
        check(
            "bad requests answered 4xx",
            not wrong_bad.any(),
            f"{int(wrong_bad.sum())} of {int(bad.sum())} not (statuses "
            f"{dict(Counter(st[wrong_bad].tolist()))})",
        ),
        check(
            f"5xx only within {window:g} s after a kill",
            not (five & ~near).any(),
            f"{int((five & ~near).sum())} outside, {int((five & near).sum())} within",
        ),
    ]
    mem: list[float] = [r["total_mb"] for r in rows if "total_mb" in r]
    # from minute 2 to a later one: three minutes at least
    if len(mem) >= 3:
        growth = (mem[-1] - mem[1]) / mem[1]
        figure = f"{growth:+.1%} ({mem[1]:.0f} → {mem[-1]:.0f} MB)"
        checks.append(check("memory growth minute 2 → end < 5 %", growth < 0.05, figure))
    p99 = [r["good_ms"]["p99"] for r in rows]
    if p99 and p99[0] and None not in p99:
        worst = max(p99) / p99[0]
        figure = f"worst {worst:.2f} × minute 1's {p99[0]} ms"
        checks.append(check("p99 per minute ≤ 2 × minute 1's", worst <= 2, figure))
    return checks


def check(name: str, ok: bool, figure: str) -> dict[str, Any]:
    return {"check": name, "pass": bool(ok), "figure": figure}


async def stall(url: str, body_bytes: int = 4096) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection that sends a POST's headers, announcing `body_bytes`, and never its body."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(post(url, "/predict", b"").replace(b"Length: 0", f"Length: {body_bytes}".encode()))
    await writer.drain()
    return reader, writer


async def hold(url: str, begin: float, seconds: float) -> list[tuple[str, float]]:
    """Keep one stalled connection open for `seconds`, opening another each time the server ends one; return
    what the server did with each (its status line, or closed) and when (s)."""
    ended: list[tuple[str, float]] = []
    deadline = begin + seconds
    while (left := deadline - time.perf_counter()) > 0:
        try:
            reader, writer = await stall(url)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        try:
            line = await asyncio.wait_for(reader.readline(), left)
            ended.append(
                (line.decode(errors="replace").strip() or "closed", round(time.perf_counter() - begin, 2))
            )
        except asyncio.TimeoutError:
            pass
        finally:
            writer.close()
    return ended


async def abuse(url: str, good_body: bytes, args: Any, stalled: int, seconds: float) -> dict[str, Any]:
    """`stalled` stalled connections, a stream of 4096² PNGs, good requests and /healthz probes together."""
    begin, log = time.perf_counter(), Log()
    # as many stalled connections all along: one the server ends is opened again
    holders = [asyncio.create_task(hold(url, begin, seconds)) for _ in range(stalled)]
    good, png = post(url, "/predict", good_body), post(url, "/predict", png_body())
    health = f"GET /healthz HTTP/1.1\r\nHost: {urlsplit(url).netloc}\r\nConnection: close\r\n\r\n".encode()
    await asyncio.gather(
        open_loop(url, lambda i: (health, HEALTH), 20, seconds, log, clients=8),
        open_loop(url, lambda i: (good, GOOD), args.good_rate, seconds, log, clients=16),
        open_loop(url, lambda i: (png, PNG), args.png_rate, seconds, log, clients=16),
    )
    ended = [e for each in await asyncio.gather(*holders) for e in each]
    return {
        "seconds": seconds,
        "stalled_held": stalled,
        # what the server did with the stalled connections meanwhile: its answers on them, or closed
        "stalled_answered": dict(Counter(what for what, _ in ended)),
        "stalled_first_answer_s": min((s for _, s in ended), default=None),
        **abuse_figures(log.arrays(), begin),
    }


def abuse_figures(a: dict[str, np.ndarray], begin: float) -> dict[str, Any]:
    """Statuses and latency of each kind of request of an abuse part; /healthz's latency over time."""
    figures: dict[str, Any] = {}
    for kind in (HEALTH, GOOD, PNG):
        sel = a["kind"] == kind
        st = a["status"][sel]
        figures[KINDS[kind]] = {
            "requests": int(sel.sum()),
            **classes(st),
            "statuses": {str(k): int(v) for k, v in sorted(Counter(st.tolist()).items())},
            # of every request, those without an answer counted at their timeout
            "ms": percentiles(a["latency"][sel]),
        }
    health = a["kind"] == HEALTH
    figures["healthz_timeline"] = [
        [round(float(t), 3), round(float(v) * 1000, 2)]
        for t, v in zip(a["at"][health] - begin, a["latency"][health])
    ]
    return figures


def abuse_checks(name: str, part: dict[str, Any]) -> list[dict[str, Any]]:
    h, g = part["healthz"], part["good"]
    return [
        check(
            f"{name}: /healthz p99 < 100 ms",
            (h["ms"]["p99"] or 1e9) < 100,
            f"p99 {h['ms']['p99']} ms (p50 {h['ms']['p50']}, max {h['ms']['max']}), statuses {h['statuses']}",
        ),
        check(
            f"{name}: good requests answered 2xx",
            g["2xx"] == g["requests"] > 0,
            f"{g['2xx']} of {g['requests']} (statuses {g['statuses']}), p99 {g['ms']['p99']} ms",
        ),
    ]


def tables(result: dict[str, Any]) -> None:
    """Print the soak's minutes, the abuse parts' figures and every check."""
    t = Table(
        title=f"soak at {result['rate']:,.0f} requests/s (70 % of saturation, {result['saturation']:,.0f})",
        title_justify="left",
    )
    heads = (
        "min sent 2xx 4xx 5xx lost p50_ms p99_ms p99_ms_away_from_kills 5xx_until_s server_MB +children_MB"
    )
    for c in heads.split():
        t.add_column(c.replace("_", " "))
    for r in result["minutes"]:
        ms = r["good_ms"]
        cells = [r["minute"], r["requests"], r["2xx"], r["4xx"], r["5xx"], r["no answer"], ms["p50"]]
        cells += [ms["p99"], r["good_ms_away_from_kill"]["p99"], r["last_5xx_after_kill_s"]]
        cells += [f"{r.get('server_mb', 0):.0f}", f"{r.get('total_mb', 0):.0f}"]
        t.add_row(*(str(x) for x in cells))
    console.print(t)
    console.print(
        "  lost: no answer (timeout, connection); 5xx until: the last 5xx answered after the minute's kill, s"
    )
    if result.get("abuse"):
        t = Table(title=f"abuse ({result['abuse_seconds']:g} s in all)", title_justify="left")
        for c in ("part", "kind", "sent", "statuses", "p50 ms", "p99 ms", "max ms"):
            t.add_column(c)
        for name, part in result["abuse"].items():
            for kind in ("healthz", "good", "png"):
                f = part[kind]
                t.add_row(
                    name, kind, str(f["requests"]), str(f["statuses"]), *(str(v) for v in f["ms"].values())
                )
            console.print(
                f"  {name}: {part['stalled_held']} stalled connections held; the server's answers on them: "
                f"{part['stalled_answered'] or 'none'}"
            )
        console.print(t)
    for c in result["checks"]:
        mark = "[green]PASS[/]" if c["pass"] else "[bold red]FAIL[/]"
        console.print(f"  {mark}  {c['check']}: {c['figure']}")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["minutes"]
    x = [r["minute"] for r in rows]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4))
    a.plot(x, [r["good_ms"]["p99"] for r in rows], "s-", label="p99")
    a.plot(x, [r["good_ms"]["p50"] for r in rows], "o-", label="p50")
    if rows and rows[0]["good_ms"]["p99"]:
        a.axhline(2 * rows[0]["good_ms"]["p99"], color="#c33", lw=1, label="2 × minute 1's p99")
    a.set_xticks(x)
    a.set_title("good requests' latency per minute, ms")
    a.set_xlabel("minute")
    a.legend()
    b.plot(x, [r.get("total_mb") for r in rows], "s-", label="server + children")
    b.plot(x, [r.get("server_mb") for r in rows], "o-", label="server")
    b.set_xticks(x)
    b.set_title("resident memory at the end of each minute, MB")
    b.set_xlabel("minute")
    b.legend()
    offset = 0.0
    for name, part in (result.get("abuse") or {}).items():
        line = np.asarray(part["healthz_timeline"]).reshape(-1, 2)
        c.plot(line[:, 0] + offset, line[:, 1], ".", ms=3, label=name)
        offset += part["seconds"]
    c.axhline(100, color="#c33", lw=1, label="100 ms")
    c.set_yscale("log")
    c.set_title("abuse: /healthz latency, ms")
    c.set_xlabel("s")
    c.legend()
    fig.suptitle(result["machine_line"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_async(coro: Any) -> Any:
    """Run `coro` on uvloop if there is one, this thread as SCHED_BATCH (as `lepton bench serve` does)."""
    from lepton_ai.serve.loadtest import _yielding

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    with _yielding():
        return runner(coro)


def serve_and_measure(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Train and register the digits model, serve it, find its saturation, then soak and abuse it."""
    from lepton_ai.data import load
    from lepton_ai.serve.loadtest import load_test
    from lepton_ai.serve.server import ServerProcess
    from lepton_ai.train.job import train_and_register

    ref = str(
        train_and_register(
            "cnn-small", "digits", "digits-cnn", epochs=10, lr=3e-3, batch_size=64, progress=False
        ).ref
    )
    features = load("digits", "test").features
    assert features is not None
    # one 8×8 image (1, 8, 8) per request
    payload = {"inputs": [features[0].tolist()]}
    body = json.dumps(payload).encode()
    with ServerProcess([ref]) as server:
        assert server.proc is not None
        sat = load_test(server.url, payload, concurrency=32, duration=args.saturation_seconds, warmup=2.0)
        result.update(ref=ref, saturation=sat["requests_per_s"], rate=0.7 * sat["requests_per_s"])
        console.print(
            f"  saturation {sat['requests_per_s']:,.0f} requests/s (p99 {sat['latency_ms']['p99']} "
            f"ms, errors {sat['errors'] or 'none'}); soak at {result['rate']:,.0f}/s"
        )
        console.rule(f"[bold]soak: {args.minutes} min, model process killed at {args.kill_at:g} s of each")
        run = run_async(soak(server.url, server.proc.pid, body, result["rate"], args))
        result["kills_s"] = [round(k, 2) for k in run["kills"]]
        result["minutes"] = minutes(run, args.minutes, args.kill_window)
        result["checks"] = soak_checks(run, result["minutes"], args.kill_window)
        result["abuse"] = {}
        if args.abuse_seconds > 0:
            console.rule(f"[bold]abuse: {args.abuse_seconds:g} s (PNGs, then PNGs and stalled connections)")
            for name, stalled in (("PNGs", 0), (f"PNGs + {args.stalled} stalled", args.stalled)):
                part = run_async(abuse(server.url, body, args, stalled, args.abuse_seconds / 2))
                part["memory_mb_after"] = rss_mb(session_pids(server.proc.pid))
                result["abuse"][name] = part
                result["checks"] += abuse_checks(name, part)
        log = server.output()
    result["server_log_tail"] = log[-4000:]
    result["server_log_tracebacks"] = log.count("Traceback")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=10, help="Minutes of soak.")
    parser.add_argument(
        "--abuse-seconds",
        type=float,
        default=60.0,
        help="Seconds of abuse, in two halves: PNGs, then PNGs and stalled connections (0: none).",
    )
    parser.add_argument("--kill-at", type=float, default=30.0, help="Seconds into each minute of the kill.")
    parser.add_argument("--kill-window", type=float, default=15.0, help="Seconds after a kill 5xx may come.")
    parser.add_argument("--saturation-seconds", type=float, default=10.0)
    parser.add_argument("--stalled", type=int, default=600, help="Stalled connections in the abuse phase.")
    parser.add_argument("--png-rate", type=float, default=4.0, help="4096² PNGs a second (abuse).")
    parser.add_argument("--good-rate", type=float, default=50.0, help="Good requests a second (abuse).")
    parser.add_argument("--out", default=str(RESULTS / "soak.json"))
    args = parser.parse_args()
    # 600 stalled sockets and more: the server inherits the limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # a registry of its own
    os.environ["LEPTON_HOME"] = tempfile.mkdtemp(prefix="lepton-soak-bench-")
    from lepton_ai.machine import describe, machine_info

    info = machine_info()
    console.print(f"[bold]machine:[/] {describe(info)}")
    result: dict[str, Any] = {
        "machine": info,
        "machine_line": describe(info),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.time(),
        "abuse_seconds": args.abuse_seconds,
        "options": vars(args),
        "nofile_limit": hard,
    }
    serve_and_measure(args, result)
    tables(result)
    failed = [c["check"] for c in result["checks"] if not c["pass"]]
    console.print(
        f"[bold red]{len(failed)} check(s) failed:[/] {', '.join(failed)}" if failed else "all passed"
    )
    write_json(args.out, result)
    plot(result, Path(args.out).with_suffix(".png"))
    console.print(f"wrote {args.out} and {Path(args.out).with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
