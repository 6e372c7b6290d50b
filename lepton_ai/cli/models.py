"""`lepton models`: register, list, show and remove model versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from lepton_ai.cli.output import human_bytes, print_fields, print_json, print_table
from lepton_ai.errors import IntegrityError, InvalidInputError, NotFoundError
from lepton_ai.store import Registry
from lepton_ai.store.cost import DEFAULT_INSTANCE, INSTANCES, CostCard, cost_card, price
from lepton_ai.store.registry import VersionInfo, check_json
from lepton_ai.store.reports import VersionReports

app = typer.Typer(help="Register, list, show and remove models and their versions.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]


@app.command()
def register(
    name: Annotated[str, typer.Argument(help="Model name; the version number is assigned.")],
    path: Annotated[Path, typer.Argument(help="File or directory holding the model.")],
    metrics: Annotated[str | None, typer.Option(help="JSON object, e.g. '{\"accuracy\": 0.98}'.")] = None,
    format: Annotated[
        str | None, typer.Option(help="safetensors, onnx, huggingface… (default: inferred).")
    ] = None,
    description: Annotated[str | None, typer.Option(help="What the model is for.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag; repeat for several.")] = None,
    parent: Annotated[str | None, typer.Option(help="NAME[:VERSION] this version was derived from.")] = None,
    json: Json = False,
) -> None:
    """Store PATH as the next version of NAME."""
    info = Registry().register(
        name,
        path,
        metrics=parse_metrics(metrics),
        format=format,
        description=description,
        tags=tag,
        parent=parent,
    )
    if json:
        print_json(info.to_dict())
    else:
        typer.echo(
            f"registered {info.ref} ({info.format}, {human_bytes(info.size_bytes)}, "
            f"sha256 {info.sha256[:12]}…)"
        )


@app.command("list")
def list_(
    name: Annotated[str | None, typer.Argument(help="List this model's versions instead.")] = None,
    json: Json = False,
) -> None:
    """List models, or the versions of one model."""
    registry = Registry()
    if name:
        versions = registry.list_versions(name)
        if json:
            print_json([v.to_dict() for v in versions])
            return
        print_table(
            f"versions of {name}",
            ("version", "format", "size", "metrics", "parent", "created"),
            (
                (v.version, v.format, human_bytes(v.size_bytes), _short(v.metrics), v.parent, v.created_at)
                for v in versions
            ),
        )
        return
    models = registry.list_models()
    if json:
        print_json([m.to_dict() for m in models])
        return
    print_table(
        "models",
        ("name", "latest", "versions", "description", "updated"),
        ((m.name, m.latest_version, m.num_versions, m.description, m.updated_at) for m in models),
    )


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAME (latest) or NAME:VERSION.")],
    price_per_hour: Annotated[
        float | None,
        typer.Option(help="What the serving machine costs, in US dollars an hour, for the cost card."),
    ] = None,
    instance: Annotated[
        str | None,
        typer.Option(
            help=f"Price the cost card at this instance's (default {DEFAULT_INSTANCE}).", show_default=False
        ),
    ] = None,
    json: Json = False,
) -> None:
    """Show one model version: where it is stored, its hash, metrics, lineage, privacy (ε, δ, mechanism, the
    last `lepton privacy audit`), and its cost per million inferences beside its parent's."""
    hourly = price(price_per_hour, instance)
    registry = Registry()
    info = registry.get(ref)
    card = cost_card(registry, info.ref, hourly)
    # recorded by training with DP-SGD
    privacy = (info.recipe or {}).get("privacy")
    stored = VersionReports(registry.db_url).latest(info.ref, "privacy_audit")
    audit = stored.to_dict() if stored else None
    if json:
        print_json({**info.to_dict(), "privacy": privacy, "privacy_audit": audit, "cost": card.to_dict()})
        return
    print_fields(info.ref, info.to_dict())
    if privacy:
        from lepton_ai.privacy.dp import describe

        typer.echo(f"privacy: {describe(privacy)}")
    if audit:
        from lepton_ai.privacy.membership import describe as describe_audit

        typer.echo(f"privacy audit ({audit['recorded_at']}): {describe_audit(audit)}")
    print_cost(card)


@app.command()
def instances(json: Json = False) -> None:
    """List the cloud instances the cost card can be priced at, with their hourly price and its date."""
    if json:
        print_json([i.to_dict() for i in INSTANCES.values()])
        return
    # the few pages the prices come from, numbered once
    pages = list(dict.fromkeys(i.url for i in INSTANCES.values()))
    print_table(
        "on-demand prices (Linux); --price-per-hour takes what you pay",
        ("instance", "$/hour", "hardware", "region", "read", "page"),
        (
            (
                i.name + " (default)" * (i.name == DEFAULT_INSTANCE),
                f"{i.per_hour:g}",
                i.hardware,
                i.region or "not stated",
                i.read,
                pages.index(i.url) + 1,
            )
            for i in INSTANCES.values()
        ),
    )
    for n, url in enumerate(pages, 1):
        typer.echo(f"[{n}] {url}")


def print_cost(card: CostCard) -> None:
    """Print a cost card: each version's throughput, where it was measured, and its $ per million
    inferences."""
    print_table(
        f"cost at ${card.price.per_hour:g}/hour ({card.price.source})",
        ("", "version", "inferences/s", "measured by", "$ per million inferences"),
        (
            (
                role,
                line.ref,
                f"{line.throughput_per_s:,.1f}" if line.throughput_per_s else "",
                line.source,
                _usd(line.usd_per_million) if line.usd_per_million is not None else "not measured",
            )
            for role, line in zip(("this", "parent"), card.lines)
        ),
    )
    # below the table, unwrapped: a command to copy
    for line in card.lines:
        if line.why:
            typer.echo(f"{line.ref}: {line.why}")
    ratio = card.times_cheaper
    if ratio is not None:
        parent = card.lines[1].ref
        typer.echo(
            f"{ratio:.2f}× cheaper than {parent}" if ratio >= 1 else f"{1 / ratio:.2f}× dearer than {parent}"
        )


def _usd(amount: float) -> str:
    # a cheap model costs fractions of a cent a million: keep its first figures
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.3g}"


@app.command()
def rm(
    ref: Annotated[str, typer.Argument(help="NAME (every version) or NAME:VERSION.")], json: Json = False
) -> None:
    """Remove a model version, or a whole model with all its versions."""
    gone = Registry().remove(ref)
    if json:
        print_json({"removed": [v.ref for v in gone]})
    else:
        typer.echo(f"removed {', '.join(v.ref for v in gone) or 'nothing'}")


@app.command()
def verify(
    ref: Annotated[
        str | None, typer.Argument(help="NAME (latest) or NAME:VERSION.", show_default=False)
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every version of every model.")] = False,
    json: Json = False,
) -> None:
    """Re-hash the store's copy of an artifact (never a cached one) against the sha256 recorded at
    registration; with --all, every version, exiting 1 if any is missing or corrupted."""
    if (ref is None) == (not all_):
        raise InvalidInputError("give a version (NAME or NAME:VERSION) or --all, not both")
    registry = Registry()
    if ref is not None:
        # raises, naming both hashes, on any mismatch
        info = registry.verify(ref)
        if json:
            print_json({"ref": info.ref, "sha256": info.sha256, "ok": True})
        else:
            typer.echo(f"{info.ref}: sha256 {info.sha256} verified in {registry.artifacts.url}")
        return
    results = [_checked(registry, v) for m in registry.list_models() for v in registry.list_versions(m.name)]
    bad = [r for r in results if not r["ok"]]
    if json:
        print_json({"checked": len(results), "failed": bad})
    else:
        for r in bad:
            typer.echo(f"{r['ref']}: {r['error']}", err=True)
        typer.echo(
            f"{len(results) - len(bad)} of {len(results)} versions verified in {registry.artifacts.url}"
        )
    if bad:
        raise typer.Exit(1)


def _checked(registry: Registry, version: VersionInfo) -> dict[str, Any]:
    """Return whether one version's stored artifact has its sha256, with the reason when it has not."""
    try:
        registry.artifacts.verify(version.key, version.sha256)
    except (IntegrityError, NotFoundError) as e:
        return {"ref": version.ref, "ok": False, "error": str(e)}
    return {"ref": version.ref, "ok": True, "error": None}


def _short(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def parse_metrics(text: str | None) -> dict[str, Any]:
    """Parse a `--metrics` JSON object (e.g. '{"accuracy": 0.98}'); raise on anything else."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"--metrics is not valid JSON ({e.msg} at column {e.colno}): {text!r}") from e
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"--metrics must be a JSON object such as '{{\"accuracy\": 0.98}}', got {text!r}"
        )
    return check_json(value, "--metrics")
