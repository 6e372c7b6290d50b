"""The one query layer of the control plane: what the REST API answers and the pages show, read from the
registry, the job queue and the artifact store — each question asked once, here."""

from __future__ import annotations

import functools
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lepton_ai.control.health import Health, Prober
from lepton_ai.control.listing import Page, page, thin
from lepton_ai.errors import InvalidInputError, NotFoundError
from lepton_ai.jobs import api as jobs_api
from lepton_ai.jobs.queue import AttemptInfo, JobInfo, JobQueue
from lepton_ai.store import Registry, cost, db
from lepton_ai.store.cost import CostCard, Price
from lepton_ai.store.datasets import DatasetInfo, Datasets, DatasetVersionInfo
from lepton_ai.store.refs import check_name
from lepton_ai.store.registry import RunInfo, VersionInfo
from lepton_ai.store.reports import VersionReports
from lepton_ai.store.schema import Job, Model, ModelVersion, Run, iso, utcnow
from lepton_ai.store.services import ServiceInfo, Services

# the files of a version's report the dashboard reads or serves (nothing else leaves the artifact store)
REPORT_FILES = ("report.json", "report.md", "report.png")
MAX_COMPARE = 100


@dataclass(frozen=True)
class Report:
    """A version's compression (or federated) report as stored beside its weights; `problem` says why not."""

    files: list[str]
    data: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


@dataclass(frozen=True)
class VersionView:
    """One version, where it came from (ancestors, parent first), what was made from it, its report, and its
    last privacy audit (None: never audited)."""

    info: VersionInfo
    ancestors: list[VersionInfo]
    children: list[VersionInfo]
    report: Report
    audit: dict[str, Any] | None = None


@dataclass(frozen=True)
class DatasetView:
    """One dataset version and the model versions trained on it (oldest first)."""

    info: DatasetVersionInfo
    models: list[VersionInfo]


@dataclass(frozen=True)
class JobView:
    """One job with its attempts."""

    info: JobInfo
    attempts: list[AttemptInfo]


@dataclass(frozen=True)
class LogChunk:
    """A job's log from an offset: the new text, where to ask from next, and whether the job had ended."""

    text: str
    offset: int
    done: bool


@dataclass(frozen=True)
class Counts:
    """How much the registry holds: models, versions, runs and jobs by state."""

    models: int
    versions: int
    runs: dict[str, int]
    jobs: dict[str, int]


class Control:
    """The control plane's questions over one registry (with the job queue and the services in its database),
    costs at one hourly price."""

    def __init__(self, registry: Registry, price: Price | None = None) -> None:
        self.registry = registry
        self.queue = JobQueue(registry.db_url)
        self.services_table = Services(registry.db_url)
        self.datasets_table = Datasets(registry.db_url, registry.artifacts.url)
        self.price = price or cost.price()
        # one per dashboard: live throughput is measured between this process's probes of a service
        self.prober = Prober()

    def _read(self, fn: Any) -> Any:
        return db.transact(db.reader(self.registry.engine), fn)

    # -- models -------------------------------------------------------------------------

    def models(self, limit: int = 50, cursor: str | None = None, contains: str | None = None) -> Page[Any]:
        """Models by name, each with its number of versions and its latest."""
        fetch = functools.partial(self.registry.list_models, contains=contains)
        return page(fetch, lambda m: m.name, limit, cursor, str)

    def versions(self, name: str, limit: int = 50, cursor: str | None = None) -> Page[VersionInfo]:
        """A model's versions, newest first."""
        fetch = functools.partial(self.registry.list_versions, check_name(name))
        return page(fetch, lambda v: v.version, limit, cursor)

    def version(self, name: str, version: int) -> VersionView:
        """One version with its lineage and its report."""
        info = self.registry.get(f"{check_name(name)}:{version}")
        ancestors: list[VersionInfo] = []
        parent = info.parent
        # a chain of optimisations is short; the bound only guards against a cycle made by hand
        while parent and len(ancestors) < 50:
            ancestors.append(self.registry.get(parent))
            parent = ancestors[-1].parent
        audit = VersionReports(self.registry.db_url).latest(info.ref, "privacy_audit")
        children = self.registry.children(info.ref)
        return VersionView(info, ancestors, children, self.report(info), audit.to_dict() if audit else None)

    def report(self, info: VersionInfo) -> Report:
        """Return the report stored with a version (compression or federated), or why there is none."""
        folder = self._report_folder(info)
        fs = self.registry.artifacts.fs
        if folder is None or not fs.exists(folder):
            return Report([], problem="no report was stored with this version")
        files = [n for n in REPORT_FILES if fs.exists(posixpath.join(folder, n))]
        if "report.json" not in files:
            return Report(files, problem="report.json is missing from the version's artifact")
        try:
            with fs.open(posixpath.join(folder, "report.json"), "r") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            return Report(files, problem=f"report.json cannot be read: {e}")
        return Report(files, data if isinstance(data, dict) else {}, None)

    def report_file(self, name: str, version: int, file: str) -> bytes:
        """Return one report file of a version (only the names in REPORT_FILES: nothing else is served)."""
        if file not in REPORT_FILES:
            raise NotFoundError(f"no report file {file!r}: a report has {', '.join(REPORT_FILES)}")
        info = self.registry.get(f"{check_name(name)}:{version}")
        folder = self._report_folder(info)
        path = posixpath.join(folder, file) if folder else None
        if path is None or not self.registry.artifacts.fs.exists(path):
            raise NotFoundError(f"{info.ref} has no {file} in its artifact")
        with self.registry.artifacts.fs.open(path, "rb") as f:
            data: bytes = f.read()
        return data

    def _report_folder(self, info: VersionInfo) -> str | None:
        """Return where a directory artifact keeps its report (`report/`), None for a single file."""
        try:
            root = self.registry.artifacts.path(info.key)
        except InvalidInputError:
            return None
        return posixpath.join(root, "report") if self.registry.artifacts.fs.isdir(root) else None

    def cost(self, info: VersionInfo) -> CostCard:
        """The version's $ per million inferences beside its parent's, at the dashboard's price."""
        return cost.cost_card(self.registry, info.ref, self.price)

    def verify(self, name: str, version: int) -> str:
        """Re-hash a version's artifact against its sha256; return the digest (raise if it differs)."""
        return self.registry.verify(f"{check_name(name)}:{version}").sha256

    # -- datasets -----------------------------------------------------------------------

    def datasets(self, limit: int = 50, cursor: str | None = None) -> Page[DatasetInfo]:
        """Datasets by name, each with its format, latest version and that version's records."""

        def fetch(after: str | None, n: int) -> list[DatasetInfo]:
            return [d for d in self.datasets_table.list_datasets() if after is None or d.name > after][:n]

        return page(fetch, lambda d: d.name, limit, cursor, str)

    def dataset_versions(
        self, name: str, limit: int = 50, cursor: str | None = None
    ) -> Page[DatasetVersionInfo]:
        """A dataset's versions, newest first."""

        def fetch(before: int | None, n: int) -> list[DatasetVersionInfo]:
            newest = reversed(self.datasets_table.list_versions(check_name(name, "dataset")))
            return [v for v in newest if before is None or v.version < before][:n]

        return page(fetch, lambda v: v.version, limit, cursor)

    def dataset_version(self, name: str, version: int) -> DatasetView:
        """One dataset version with the model versions trained on it."""
        info = self.datasets_table.get(f"{check_name(name, 'dataset')}:{version}")
        return DatasetView(info, self.registry.trained_on(info.ref))

    # -- runs ---------------------------------------------------------------------------

    def runs(
        self, limit: int = 50, cursor: str | None = None, kind: str | None = None, status: str | None = None
    ) -> Page[RunInfo]:
        """Runs, newest first, each metric summarised (points, min, max, last), without its series."""

        def fetch(before: int | None, n: int) -> list[RunInfo]:
            return self.registry.list_runs(kind, n, before=before, status=status, history=False)

        return page(fetch, lambda r: r.id, limit, cursor)

    def run(self, run_id: int) -> RunInfo:
        """One run with its full metric series."""
        return self.registry.get_run(run_id)

    def series(
        self, run: RunInfo, points: int = 500, keys: list[str] | None = None
    ) -> dict[str, list[tuple[int, float]]]:
        """A run's metric series thinned to `points` each (each bucket's min and max survive)."""
        unknown = sorted(set(keys or ()) - set(run.history))
        if unknown:
            known = ", ".join(run.history) or "none"
            raise NotFoundError(f"run {run.id} has no metric {unknown[0]!r} (it has: {known})")
        return {k: thin(v, points) for k, v in run.history.items() if not keys or k in keys}

    def compare(self, ids: list[int]) -> list[RunInfo]:
        """The runs `ids`, in the order given, each with its series."""
        if not 1 <= len(ids) <= MAX_COMPARE:
            raise InvalidInputError(f"compare 1 to {MAX_COMPARE} runs, not {len(ids)}")
        return [self.registry.get_run(i) for i in dict.fromkeys(ids)]

    # -- jobs ---------------------------------------------------------------------------

    def jobs(
        self, limit: int = 50, cursor: str | None = None, state: str | None = None, backend: str | None = None
    ) -> Page[JobInfo]:
        """Jobs, newest first, as `lepton job list --json` prints them."""

        def fetch(before: int | None, n: int) -> list[JobInfo]:
            return self.queue.list(state, backend, n, before=before)

        return page(fetch, lambda j: j.id, limit, cursor)

    def job(self, job_id: int) -> JobView:
        """One job with each of its attempts."""
        return JobView(self.queue.get(job_id), self.queue.attempts(job_id))

    def log(self, job_id: int, offset: int = 0) -> LogChunk:
        """The latest attempt's log from `offset`; ask again from the returned offset until `done`."""
        # asked before reading: a job done by then has written all its log, so `done` ends a follow safely
        done = self.queue.get(job_id).done
        text = "".join(jobs_api.logs(job_id))
        return LogChunk(text[offset:], max(offset, len(text)), done)

    def cancel(self, job_id: int) -> JobInfo:
        """Cancel a job (a queued one at once, a running one through its worker or engine)."""
        return jobs_api.cancel(job_id, wait_s=5.0)

    def retry(self, job_id: int) -> JobInfo:
        """Submit a finished job's spec again, as a new job on the same backend."""
        job = self.queue.get(job_id)
        if not job.done:
            raise InvalidInputError(f"job {job_id} is {job.state}: only a finished job can be retried")
        return jobs_api.submit(job.job_spec, job.backend, job.address)

    # -- services -----------------------------------------------------------------------

    def services(
        self, limit: int = 50, cursor: str | None = None, live: bool | None = None
    ) -> Page[ServiceInfo]:
        """Services that `lepton serve` and `lepton deploy` recorded, newest first."""

        def fetch(before: int | None, n: int) -> list[ServiceInfo]:
            return self.services_table.list(n, before=before, live=live)

        return page(fetch, lambda s: s.id, limit, cursor)

    def service(self, service_id: int) -> ServiceInfo:
        """One recorded service."""
        return self.services_table.get(service_id)

    def health(self, services: list[ServiceInfo]) -> dict[int, Health]:
        """Probe the services at once: readiness, requests/s, p50/p99 and error rate since the last probe. A
        stale one is not asked (a page of dead services would wait out each one's timeout)."""
        now = utcnow()
        stale = {
            s.id: Health(
                ready=None, answering=False, error=f"no heartbeat since {iso(s.heartbeat_at)}", checked_at=now
            )
            for s in services
            if s.stale
        }
        return {**self.prober.probe_all([s for s in services if not s.stale], timeout_s=1.0), **stale}

    # -- overview -----------------------------------------------------------------------

    def counts(self) -> Counts:
        """Count models, versions, runs by status and jobs by state, in grouped queries."""

        def query(s: Session) -> Counts:
            models = s.scalar(select(func.count()).select_from(Model)) or 0
            versions = s.scalar(select(func.count()).select_from(ModelVersion)) or 0
            # a Result has keys(): dict() would read it as a mapping, so the pairs are unpacked by hand
            runs = {k: n for k, n in s.execute(select(Run.status, func.count()).group_by(Run.status))}
            jobs = {k: n for k, n in s.execute(select(Job.state, func.count()).group_by(Job.state))}
            return Counts(models, versions, runs, jobs)

        result: Counts = self._read(query)
        return result

    def recent_versions(self, limit: int = 8) -> list[VersionInfo]:
        """The versions registered last, newest first."""

        def query(s: Session) -> list[tuple[str, int]]:
            q = select(Model.name, ModelVersion.version).join(Model).order_by(ModelVersion.id.desc())
            return [(n, v) for n, v in s.execute(q.limit(limit))]

        rows: list[tuple[str, int]] = self._read(query)
        return [self.registry.get(f"{n}:{v}") for n, v in rows]
