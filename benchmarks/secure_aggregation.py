"""Secure aggregation benchmark (issue 28): a federated round's time with Flower's SecAgg+ against without,
10 client processes training `cnn-small` on digits (a tenth each), in one run.

Three servers, each in this process with 10 `lepton fl client` processes on this machine:
- `plain`: `lepton fl server` as it runs without the flag (Flower's `start_server`, one message a client
  a round);
- `relay`: the same federation on the transport SecAgg+ needs (Flower's Message API over
  `lepton_ai.privacy.relay`), without SecAgg+: what the transport itself costs;
- `secagg`: `lepton fl server --secure-aggregation` (SecAgg+, four messages a client a round).
The modes run in turn, `--repeats` times; a round's time is the server's (clients asked → update applied),
the first round (clients still joining) left out. Ratios are medians of each round's time over the median
of the baseline mode's, with the range over rounds and repeats, and the worst case (the slowest secure
round over the baseline's fastest).

    python benchmarks/secure_aggregation.py [--clients 10] [--rounds 4] [--repeats 2]

Writes benchmarks/results/secure_aggregation.json; the table goes to the terminal."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import write_json
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
console = Console(width=None if sys.stdout.isatty() else 160)
MODES = ("plain", "relay", "secagg")


def clients(address: str, count: int, secure: bool) -> list[subprocess.Popen]:
    """Start `count` client processes, each with its tenth of digits."""
    flag = ["--secure-aggregation"] if secure else []
    return [
        subprocess.Popen(
            [sys.executable, "-m", "lepton_ai.cli.fl", "client", "--server", address]
            + ["--data", f"digits:{i}/{count}", *flag],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for i in range(count)
    ]


def federation(mode: str, count: int, rounds: int) -> list[float]:
    """Run one federation in `mode`; return its rounds' times (seconds)."""
    from lepton_ai.machine import free_port
    from lepton_ai.privacy.federated import prepare
    from lepton_ai.privacy.flower_server import run_server
    from lepton_ai.privacy.record import RunRecord
    from lepton_ai.privacy.secure import plan_of, serve_secure

    address = f"127.0.0.1:{free_port()}"
    started = clients(address, count, secure=mode != "plain")
    options = {"rounds": rounds, "local_epochs": 1, "seed": 0}
    try:
        if mode != "relay":
            result = run_server(
                address, model="cnn-small", min_clients=count, secure_aggregation=mode == "secagg", **options
            )
            return [row["seconds"] for row in result.history]
        run = prepare(
            "cnn-small",
            "digits",
            clients=count,
            fraction=1.0,
            lr=0.05,
            batch_size=32,
            strategy="fedavg",
            schedule=None,
            dp=None,
            **options,
        )
        plan = plan_of(
            run,
            min_clients=count,
            round_timeout=600,
            max_examples=10_000,
            secure=False,
            shares=3,
            threshold=2,
        )
        with RunRecord(f"bench-relay-{count}", run.params(partition="iid", address=address)) as record:
            serve_secure(run, record, address, plan=plan)
            return [row["seconds"] for row in record.history]
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            process.wait(30)


def summary(times: dict[str, list[float]]) -> dict[str, Any]:
    """Each mode's median round time with its range, and secagg's ratios to the others."""
    out: dict[str, Any] = {
        mode: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "rounds": len(t)}
        for mode, t in times.items()
    }
    for base in ("plain", "relay"):
        b = statistics.median(times[base])
        ratios = [t / b for t in times["secagg"]]
        out[f"secagg_over_{base}"] = {
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
            # the slowest secure round against the fastest of the other mode: no noise can make it worse
            "worst": max(times["secagg"]) / min(times[base]),
        }
    return out


def table(result: dict[str, Any]) -> Table:
    s = result["summary"]
    t = Table(title=f"secure aggregation · {result['machine']}", title_justify="left")
    for column in ("mode", "round (median)", "range", "secagg ÷ this"):
        t.add_column(column, justify="right" if column != "mode" else "left")
    for mode in MODES:
        row = s[mode]
        ratio = s.get(f"secagg_over_{mode}")
        t.add_row(
            mode,
            f"{row['median_s']:.2f} s",
            f"{row['min_s']:.2f}–{row['max_s']:.2f} s",
            f"×{ratio['median']:.2f} ({ratio['min']:.2f}–{ratio['max']:.2f}; worst {ratio['worst']:.2f})"
            if ratio
            else "",
        )
    return t


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from lepton_ai.machine import describe, machine_info

    info = machine_info()
    result: dict[str, Any] = {"machine": describe(info), "machine_info": info, "args": vars(args)}
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as home:
        os.environ["LEPTON_HOME"] = home
        for repeat in range(args.repeats):
            for mode in MODES:
                rounds = federation(mode, args.clients, args.rounds)
                console.print(f"repeat {repeat + 1} {mode}: " + ", ".join(f"{t:.2f}" for t in rounds) + " s")
                # the first round waits for the clients to join
                times[mode] += rounds[1:]
    result["times"] = times
    result["summary"] = summary(times)
    console.print(table(result))
    console.print(f"wrote {write_json(RESULTS / 'secure_aggregation.json', result)}")


if __name__ == "__main__":
    main()
