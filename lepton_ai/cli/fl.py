"""`lepton fl`: federated learning — `run` simulates clients on this machine; `server` and `client`
are a real federation over the network (Flower). See docs/federated.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lepton_ai.cli.output import console, err_console, print_json, run_app
from lepton_ai.privacy.defaults import FEDERATED_DEFAULTS

app = typer.Typer(
    help="Federated learning: simulate clients here, or run a server and clients over the network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Model = Annotated[
    str | None,
    typer.Option(
        help="mlp, cnn-small, resnet18 or a registered NAME[:VERSION] to start "
        "from. Default: cnn-small for images, mlp otherwise and with DP."
    ),
]
Strategy = Annotated[
    str,
    typer.Option(
        help="fedavg, fedprox[:MU], fedavgm[:BETA] (server momentum), "
        "fedadam[:LR] or trimmed[:BETA] (robust)."
    ),
]
LocalEpochs = Annotated[int, typer.Option(min=1, help="Epochs each client trains per round.")]
Lr = Annotated[float, typer.Option(min=0.0, help="Clients' learning rate (SGD with momentum 0.9).")]
BatchSize = Annotated[int, typer.Option(min=1, help="Clients' batch size.")]
Schedule = Annotated[
    str | None,
    typer.Option(
        help="Clients' learning rate over the rounds: cosine (decays to 0) "
        "or none. Default: cosine, none with --dp-epsilon."
    ),
]
DpEpsilon = Annotated[
    float | None,
    typer.Option(
        help="Client-level DP: the ε to spend over the run (clipping + Gaussian noise at the server)."
    ),
]
DpDelta = Annotated[float, typer.Option(help="Client-level DP: δ.")]
DpClip = Annotated[float, typer.Option(help="Client-level DP: the norm each client update is clipped to.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def _dp(epsilon: float | None, delta: float, clip: float) -> dict[str, float] | None:
    return None if epsilon is None else {"epsilon": epsilon, "delta": delta, "clip": clip}


def _report(result: Any, json: bool) -> None:
    if json:
        print_json(result.to_json())
        return
    m, p = result.metrics, result.privacy
    console.print(
        f"[green]✓[/] {result.ref}: test accuracy {m['accuracy']:.4f}, loss {m['loss']:.4f} · "
        f"{len(result.history)} rounds, {result.clients} clients · {result.seconds:.1f} s · "
        f"report {result.report_dir}",
        highlight=False,
        soft_wrap=True,
    )
    if p:
        console.print(
            f"privacy: (ε = {p['epsilon']:.3g}, δ = {p['delta']:.3g}) by {p['mechanism']}, noise "
            f"multiplier {p['noise_multiplier']:.3g}, clip {p['clip']:g}",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def run(
    model: Model = None,
    data: Annotated[
        str, typer.Option(help="digits, breast_cancer, wine, iris, a CSV/JSONL file or an image folder.")
    ] = "digits",
    clients: Annotated[int, typer.Option(min=1, help="Simulated clients.")] = 10,
    rounds: Annotated[int, typer.Option(min=1)] = 30,
    partition: Annotated[
        str,
        typer.Option(
            help="iid, dirichlet:ALPHA (label skew; smaller is more skewed) or "
            "shards:K (K label-sorted shards per client)."
        ),
    ] = "iid",
    strategy: Strategy = FEDERATED_DEFAULTS["strategy"],
    fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of the clients sampled each round.")
    ] = 1.0,
    local_epochs: LocalEpochs = FEDERATED_DEFAULTS["local_epochs"],
    lr: Lr = FEDERATED_DEFAULTS["lr"],
    batch_size: BatchSize = FEDERATED_DEFAULTS["batch_size"],
    schedule: Schedule = None,
    dp_epsilon: DpEpsilon = None,
    dp_delta: DpDelta = 1e-5,
    dp_clip: DpClip = 1.0,
    name: Annotated[str | None, typer.Option(help="Registry name. Default: fl-MODEL-DATA.")] = None,
    seed: int = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    json: Json = False,
) -> None:
    """Simulate federated training on this machine, test after every round, register the final model."""
    from lepton_ai.privacy.federated import federated_train

    result = federated_train(
        model,
        data,
        clients=clients,
        rounds=rounds,
        partition=partition,
        strategy=strategy,
        fraction=fraction,
        local_epochs=local_epochs,
        lr=lr,
        batch_size=batch_size,
        schedule=schedule,
        dp=_dp(dp_epsilon, dp_delta, dp_clip),
        seed=seed,
        name=name,
        device=device,
        progress=not json,
    )
    _report(result, json)


@app.command()
def server(
    address: Annotated[
        str,
        typer.Option(help="HOST:PORT to listen on: this machine only by default; 0.0.0.0:PORT for others."),
    ] = "127.0.0.1:8080",
    rounds: Annotated[int, typer.Option(min=1)] = 3,
    min_clients: Annotated[
        int,
        typer.Option(
            min=1, help="Clients a round waits for; a round whose clients fail goes on with the others."
        ),
    ] = 2,
    model: Model = None,
    data: Annotated[
        str,
        typer.Option(
            help="The data set whose test split the server scores each round on "
            "(and whose classes and input size the model has)."
        ),
    ] = "digits",
    strategy: Strategy = FEDERATED_DEFAULTS["strategy"],
    fraction: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of the connected clients each round (at least --min-clients)."
        ),
    ] = 1.0,
    local_epochs: LocalEpochs = FEDERATED_DEFAULTS["local_epochs"],
    lr: Lr = FEDERATED_DEFAULTS["lr"],
    batch_size: BatchSize = FEDERATED_DEFAULTS["batch_size"],
    schedule: Schedule = None,
    dp_epsilon: DpEpsilon = None,
    dp_delta: DpDelta = 1e-5,
    dp_clip: DpClip = 1.0,
    name: Annotated[str | None, typer.Option(help="Registry name. Default: fl-MODEL-DATA.")] = None,
    seed: int = 0,
    round_timeout: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="Seconds a round waits for --min-clients clients to "
            "connect, then for their results (the late ones count "
            "as failed).",
        ),
    ] = 600.0,
    max_client_examples: Annotated[
        int,
        typer.Option(
            min=1, help="The most examples one client's update weighs (clients report their own count)."
        ),
    ] = FEDERATED_DEFAULTS["max_client_examples"],
    certificates: Annotated[
        Path | None,
        typer.Option(
            help="Serve over TLS: a folder with ca.crt, server.pem and server.key (docs/federated.md)."
        ),
    ] = None,
    secure_aggregation: Annotated[
        bool,
        typer.Option(
            "--secure-aggregation",
            help="Flower's SecAgg+: the server only sees masked updates (clients join with "
            "--secure-aggregation too).",
        ),
    ] = False,
    shares: Annotated[
        int | None,
        typer.Option(help="SecAgg+: clients each update's mask is shared with. Default: --min-clients."),
    ] = None,
    threshold: Annotated[
        int | None,
        typer.Option(
            help="SecAgg+: clients that must remain to unmask a round (it survives shares − threshold "
            "dropouts). Default: a majority of --shares."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Flower's own log.")] = False,
    json: Json = False,
) -> None:
    """Run a Flower server: ROUNDS rounds with the clients that connect, then register the global model."""
    from lepton_ai.privacy.flower import flower_log, is_loopback
    from lepton_ai.privacy.flower_server import run_server

    flower_log(verbose)
    if certificates is None and not is_loopback(address):
        err_console.print(
            f"note: the federation at {address} is reachable beyond this machine in the clear: "
            "give --certificates DIR for TLS (docs/federated.md)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def on_round(row: dict[str, Any]) -> None:
        failed = f" ({row['failures']} failed)" if row["failures"] else ""
        if row.get("capped"):
            failed += f" ({row['capped']} example counts capped)"
        err_console.print(
            f"round {row['round']}/{rounds}: test accuracy {row['accuracy']:.4f}, loss {row['loss']:.4f}"
            f" · {row['clients']} clients{failed} · {row['seconds']:.1f} s",
            highlight=False,
        )

    if not json:
        err_console.print(
            f"serving the federation at {address}{' with secure aggregation' if secure_aggregation else ''}: "
            f"{rounds} rounds, waiting for {min_clients} clients",
            highlight=False,
        )
    result = run_server(
        address,
        model=model,
        data=data,
        rounds=rounds,
        min_clients=min_clients,
        strategy=strategy,
        fraction=fraction,
        local_epochs=local_epochs,
        lr=lr,
        batch_size=batch_size,
        schedule=schedule,
        dp=_dp(dp_epsilon, dp_delta, dp_clip),
        seed=seed,
        name=name,
        round_timeout=round_timeout,
        max_client_examples=max_client_examples,
        certificates=certificates,
        secure_aggregation=secure_aggregation,
        shares=shares,
        threshold=threshold,
        on_round=on_round,
    )
    _report(result, json)


@app.command()
def client(
    server: Annotated[str, typer.Option(help="The server's HOST:PORT.")],
    data: Annotated[
        str,
        typer.Option(
            help="This client's data: a CSV/JSONL file or image folder of its own, or "
            "NAME:I/N — part I (0-based) of an N-way partition of NAME's training "
            "split, e.g. digits:3/10."
        ),
    ],
    partition: Annotated[
        str,
        typer.Option(
            help="With NAME:I/N: iid, dirichlet:ALPHA or shards:K (the same on "
            "every client, with the same --seed)."
        ),
    ] = "iid",
    seed: int = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    connect_timeout: Annotated[
        float, typer.Option(min=0.0, help="Seconds to keep trying to reach the server.")
    ] = 60.0,
    root_certificates: Annotated[
        Path | None,
        typer.Option(help="Connect over TLS, trusting this CA certificate (the server's ca.crt)."),
    ] = None,
    secure_aggregation: Annotated[
        bool,
        typer.Option(
            "--secure-aggregation", help="Join a server run with --secure-aggregation (Flower's SecAgg+)."
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", help="Show Flower's own log (and each message answered, with --secure-aggregation)."
        ),
    ] = False,
) -> None:
    """Join a Flower server's federation and train on this client's data until the server ends the run."""
    from lepton_ai.privacy.flower import flower_log, run_client
    from lepton_ai.privacy.secure import run_secure_client

    flower_log(verbose)
    err_console.print(f"joining {server} with {data}", highlight=False, markup=False)
    options: dict[str, Any] = {
        "partition": partition,
        "seed": seed,
        "device": device,
        "connect_timeout": connect_timeout,
        "root_certificates": root_certificates,
    }
    if secure_aggregation:
        examples = run_secure_client(server, data, **options)
    else:
        examples = run_client(server, data, **options)
    err_console.print(f"[green]✓[/] the server ended the run ({examples} examples here)", highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Run `lepton fl ARGS` (so `python -m lepton_ai.cli.fl` behaves exactly like it)."""
    run_app(app, argv, "lepton fl")


if __name__ == "__main__":
    main()
