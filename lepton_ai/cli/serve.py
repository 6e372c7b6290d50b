"""`lepton serve` (a model or a Photon over HTTP) and `lepton bench serve` (load-test a service)."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated

import typer

from lepton_ai.cli.output import console, print_json, print_table
from lepton_ai.errors import InvalidInputError, NotFoundError


def serve(
    target: Annotated[
        str, typer.Argument(help="NAME[:VERSION] in the registry, a saved-model dir, or path.py:Class.")
    ],
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (one model copy each).")] = 1,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    max_batch_size: Annotated[int | None, typer.Option(min=1, help="Examples per model call.")] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option(min=0, help="Longest wait for a batch to fill.")
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option(min=1, help="Requests handled at once; more get 503.")
    ] = 512,
    max_queue: Annotated[int, typer.Option(min=1, help="Requests waiting per handler; more get 503.")] = 256,
    timeout_s: Annotated[float, typer.Option(min=0.001, help="A request waiting longer gets 504.")] = 30.0,
    max_body_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest request body; larger get 413.")
    ] = 8.0,
    max_examples: Annotated[
        int, typer.Option(min=1, help="Most examples in one request; more get 413.")
    ] = 4096,
    read_timeout_s: Annotated[
        float, typer.Option(min=0.001, help="Time a client has to send a request's body; slower get 408.")
    ] = 10.0,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="LEPTON_TOKEN",
            show_default=False,
            help="Require 'Authorization: Bearer TOKEN' on handlers "
            "(prefer LEPTON_TOKEN: command lines are visible).",
        ),
    ] = None,
    model_process: Annotated[
        bool | None,
        typer.Option(
            "--model-process/--no-model-process",
            show_default=False,
            help="Run init and the handlers in a process of their own "
            "(default: eager PyTorch models on CPU do).",
        ),
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve a registered model (POST /predict) or a Photon class over HTTP until SIGTERM / Ctrl-C."""
    import logging

    from lepton_ai.serve import ServeSettings
    from lepton_ai.serve.server import serve as run

    handler = logging.StreamHandler()
    # aligned with uvicorn's lines
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    logging.getLogger("lepton").addHandler(handler)
    logging.getLogger("lepton").setLevel(logging.INFO)
    settings = ServeSettings(
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        timeout_s=timeout_s,
        token=token or None,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_examples=max_examples,
        read_timeout_s=read_timeout_s,
        model_process=model_process,
    )
    run(
        target, host=host, port=port, workers=workers, device=device, settings=settings, access_log=access_log
    )


bench = typer.Typer(help="Measure: load-test a running service.", no_args_is_help=True)


@bench.command("serve")
def bench_serve(
    url: Annotated[str, typer.Argument(help="Base URL of the service, e.g. http://127.0.0.1:8080.")],
    payload: Annotated[Path, typer.Option(help="JSON file: the body of every request.")],
    handler: Annotated[str, typer.Option(help="Handler to call (POST /HANDLER).")] = "predict",
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once.")] = 32,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds measured (after the warm-up).")] = 20.0,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of load before measuring.")] = 1.0,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Open loop: requests per second on a fixed schedule (a request due while its client still "
            "waits is timed from its slot).",
        ),
    ] = None,
    token: Annotated[str | None, typer.Option(envvar="LEPTON_TOKEN", show_default=False)] = None,
    cpus: Annotated[
        str | None,
        typer.Option(
            help="Run the load generator on these CPUs only (e.g. 12-15, as taskset -c takes them), to keep "
            "it off the cores of a server on the same machine."
        ),
    ] = None,
    record: Annotated[
        str | None,
        typer.Option(
            metavar="NAME:VERSION",
            show_default=False,
            help="Store the figures in this version's metrics (serve_throughput_per_s…), which its cost card "
            "(lepton models show) then uses.",
        ),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Load-test URL: throughput, p50/p90/p99 latency and errors by status code."""
    from lepton_ai.machine import parse_cpus
    from lepton_ai.serve.loadtest import load_test

    if not payload.is_file():
        raise NotFoundError(f"no payload file {payload}")
    try:
        body = jsonlib.loads(payload.read_text())
    except ValueError as e:
        raise InvalidInputError(f"{payload} is not valid JSON: {e}") from e
    if not url.startswith(("http://", "https://")):
        raise InvalidInputError(f"{url} is not an http(s) URL")
    recorded = _to_record(record, rate)
    result = load_test(
        url,
        body,
        handler=handler,
        concurrency=concurrency,
        duration=duration,
        warmup=warmup,
        rate=rate,
        token=token,
        cpus=parse_cpus(cpus) if cpus else None,
    )
    if json:
        print_json(result)
    else:
        show_load(result)
    if recorded:
        metrics = _record(recorded, result)
        # on stderr with --json: stdout stays one JSON document
        typer.echo(f"recorded in {recorded}'s metrics: {', '.join(metrics)}", err=json)


def _to_record(ref: str | None, rate: float | None) -> str | None:
    """Return the exact version `--record` names (resolved before the test: one registered meanwhile is not
    the one measured), or None."""
    from lepton_ai.store import Registry

    if ref is None:
        return None
    if rate is not None:
        # an open loop's throughput is the rate asked for, not what the service can do: a wrong cost
        raise InvalidInputError("--record stores the throughput the service reaches: measure without --rate")
    return Registry().get(ref).ref


def _serve_metrics(result: dict) -> dict[str, object]:
    """Return a load test's figures as version metrics, named serve_… (what the cost card reads)."""
    from datetime import datetime, timezone

    return {
        # an inference is one example: a request may carry several
        "serve_throughput_per_s": result["examples_per_s"],
        "serve_latency_ms_p50": result["latency_ms"]["p50"],
        "serve_latency_ms_p99": result["latency_ms"]["p99"],
        "serve_error_rate": round((result["requests"] - result["ok"]) / max(result["requests"], 1), 6),
        "serve_concurrency": result["concurrency"],
        "serve_measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _record(ref: str, result: dict) -> dict[str, object]:
    """Store a load test's figures in the metrics of version `ref` and return them; refuse a test where
    nothing succeeded."""
    from lepton_ai.store import Registry

    if result["ok"] == 0:
        raise InvalidInputError(f"not recorded in {ref}: no request succeeded (errors: {result['errors']})")
    metrics = _serve_metrics(result)
    Registry().update_metrics(ref, metrics)
    return metrics


def show_load(result: dict) -> None:
    """Print a load test's figures as a table."""
    lat = result["latency_ms"]
    errors = ", ".join(f"{code}: {n}" for code, n in result["errors"].items()) or "none"
    pace = f"rate {result['rate']}/s" if result["rate"] else f"concurrency {result['concurrency']}"
    print_table(
        f"{result['url']} — {pace}",
        ("figure", "value"),
        [
            ("requests/s", f"{result['requests_per_s']:,.0f}"),
            ("examples/s", f"{result['examples_per_s']:,.0f} ({result['examples_per_request']} per request)"),
            ("latency p50 / p90 / p99", f"{lat['p50']} / {lat['p90']} / {lat['p99']} ms"),
            (
                "requests answered",
                f"{result['ok']:,} ok of {result['requests']:,} in {result['duration_s']} s",
            ),
            ("errors", errors),
        ],
    )
    if result["ok"] == 0:
        console.print("[red]no request succeeded[/]")
