"""`lepton job` and `lepton worker`: submit work to the local queue, Ray or Kubernetes, and follow it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lepton_ai.cli.output import console, print_fields, print_json, print_table

app = typer.Typer(
    help="Submit, list, follow and cancel jobs (local queue, Ray or Kubernetes).", no_args_is_help=True
)

Json = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
JobId = Annotated[int, typer.Argument(min=1, max=2**31 - 1, help="The job's id.")]


@app.command()
def submit(
    spec: Annotated[
        Path, typer.Argument(help="Job spec: a YAML or JSON file, or a .py file defining `job`.")
    ],
    backend: Annotated[str, typer.Option(help="local, ray or kubernetes.")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray dashboard URL (http://HEAD:8265) or kube context.")
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="Kubernetes: the container image (default $LEPTON_IMAGE).")
    ] = None,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "default",
    store_pvc: Annotated[str | None, typer.Option(help="Kubernetes: PVC holding LEPTON_HOME.")] = None,
    store_secret: Annotated[
        str | None, typer.Option(help="Kubernetes: Secret with LEPTON_DB_URL/ARTIFACTS.")
    ] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Local: only queue it; start no worker.")
    ] = False,
    json: Json = False,
) -> None:
    """Submit the job in SPEC and print its id."""
    from lepton_ai.jobs import api
    from lepton_ai.jobs.spec import load_spec

    job_spec = load_spec(spec)
    options = {"image": image, "namespace": namespace, "store_pvc": store_pvc, "store_secret": store_secret}
    job = api.submit(
        job_spec,
        backend,
        address,
        start=not no_worker,
        **({k: v for k, v in options.items() if v is not None} if backend == "kubernetes" else {}),
    )
    if json:
        print_json(job.to_dict())
    else:
        typer.echo(job.id)


@app.command("list")
def list_(
    state: Annotated[
        str | None, typer.Option(help="Only jobs in this state (queued, running, succeeded…).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    json: Json = False,
) -> None:
    """List jobs, newest first."""
    from lepton_ai.jobs.queue import JobQueue

    jobs = JobQueue().list(state=state, limit=limit)
    if json:
        print_json([j.to_dict() for j in jobs])
        return
    print_table(
        "jobs",
        ("id", "name", "kind", "backend", "state", "attempts", "exit", "versions", "created", "ended"),
        (
            (
                j.id,
                j.name,
                j.kind,
                j.backend,
                j.state,
                j.attempts,
                j.exit_code,
                ", ".join(j.versions),
                j.created_at,
                j.ended_at,
            )
            for j in jobs
        ),
    )


@app.command()
def status(job_id: JobId, json: Json = False) -> None:
    """Show one job: state, attempts, exit code, logs and the versions it registered."""
    from lepton_ai.jobs import api
    from lepton_ai.jobs.queue import JobQueue
    from lepton_ai.jobs.worker import describe

    job = api.status(job_id)
    doc = {**describe(job), "attempt_history": [a.__dict__ for a in JobQueue().attempts(job_id)]}
    if json:
        print_json(doc)
    else:
        print_fields(f"job {job.id}", {k: v for k, v in doc.items() if k != "attempt_history"})


@app.command()
def logs(
    job_id: JobId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow until the job ends.")] = False,
    json: Json = False,
) -> None:
    """Print the job's log (its latest attempt)."""
    from lepton_ai.jobs import api

    if json:
        print_json({"id": job_id, "log": "".join(api.logs(job_id))})
        return
    for chunk in api.logs(job_id, follow=follow):
        sys.stdout.write(chunk)
        sys.stdout.flush()


@app.command()
def cancel(job_id: JobId, json: Json = False) -> None:
    """Cancel a queued or running job (its whole process group); a finished job is refused."""
    from lepton_ai.jobs import api

    job = api.cancel(job_id)
    if json:
        print_json(job.to_dict())
    else:
        console.print(f"job {job.id}: {job.state}" + ("" if job.done else " (cancel requested)"))


def worker(
    cpus: Annotated[
        float | None, typer.Option(min=0.01, help="CPU slots to hand out (default: the usable cores).")
    ] = None,
    gpus: Annotated[int | None, typer.Option(min=0, help="GPUs to hand out (default: all visible).")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory to hand out, e.g. 16Gi (default: all).")] = None,
    idle_exit: Annotated[float | None, typer.Option(help="Exit after this many idle seconds.")] = None,
    poll: Annotated[float, typer.Option(min=0.01, help="Seconds between scheduling rounds.")] = 0.2,
) -> None:
    """Run queued local jobs on this machine until stopped (SIGTERM puts running jobs back in the queue)."""
    from lepton_ai.errors import InvalidInputError
    from lepton_ai.jobs.spec import memory_bytes
    from lepton_ai.jobs.worker import Capacity, Worker

    try:
        mem = memory_bytes(memory) if memory else None
    except ValueError as e:
        raise InvalidInputError(f"--memory: {e}") from None
    w = Worker(capacity=Capacity.of_machine(cpus, gpus, mem), poll_s=poll, idle_exit_s=idle_exit)
    raise typer.Exit(w.run())
