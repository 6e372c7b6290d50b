"""The `lepton` command."""

from __future__ import annotations

import typer

from lepton_ai.cli import data, fl, jobs, models, privacy, runs
from lepton_ai.cli.dashboard import dashboard
from lepton_ai.cli.deploy import deploy
from lepton_ai.cli.doctor import doctor
from lepton_ai.cli.evaluate import evaluate
from lepton_ai.cli.explain import explain
from lepton_ai.cli.optimize import optimize
from lepton_ai.cli.output import run_app
from lepton_ai.cli.pretrain import pretrain
from lepton_ai.cli.quickstart import quickstart
from lepton_ai.cli.serve import bench, serve
from lepton_ai.cli.train import train
from lepton_ai.version import __version__

app = typer.Typer(
    name="lepton",
    help="Lepton AI: train, compress, serve and scale models — cheaply.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models.app, name="models")
app.add_typer(runs.app, name="runs")
app.add_typer(bench, name="bench")
app.add_typer(jobs.app, name="job")
app.add_typer(fl.app, name="fl")
app.add_typer(data.app, name="data")
app.add_typer(privacy.app, name="privacy")
app.command()(doctor)
app.command()(quickstart)
app.command()(train)
app.command()(pretrain)
app.command()(explain)
app.command()(optimize)
app.command()(serve)
app.command()(deploy)
app.command()(dashboard)
app.command()(jobs.worker)
app.command()(evaluate)


@app.command()
def version() -> None:
    """Print the version of lepton-ai."""
    typer.echo(__version__)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; errors a user caused print one line and exit with code 2."""
    run_app(app, argv, "lepton")


if __name__ == "__main__":
    main()
