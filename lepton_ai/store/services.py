"""The services table: what `lepton serve` and `lepton deploy` started, where it answers, and whether it
is still alive (a served process beats every LEPTON_HEARTBEAT_S seconds; a stale one stopped beating
without saying it stopped, killed or its machine gone). Each change is one transaction."""

from __future__ import annotations

import builtins
import re
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, not_, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from lepton_ai import config
from lepton_ai.errors import InvalidInputError, LeptonError, NotFoundError
from lepton_ai.store import db
from lepton_ai.store.schema import ServiceRecord, iso, utcnow

T = TypeVar("T")

KINDS = ("serve", "deploy")
# heartbeats missed before a service counts as stale
STALE_BEATS = 3
# What a registry that cannot be opened or written raises: a service warns and goes on.
UNAVAILABLE: tuple[type[BaseException], ...] = (LeptonError, SQLAlchemyError, OSError)


@dataclass(frozen=True)
class ServiceInfo:
    """A service as recorded (times naive UTC), with whether it was stale when read."""

    id: int
    kind: str
    name: str
    url: str
    model_ref: str | None
    host: str
    pid: int | None
    deployment: str | None
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    # not stopped, yet no heartbeat for STALE_BEATS × LEPTON_HEARTBEAT_S (a served process only)
    stale: bool

    @property
    def live(self) -> bool:
        """Return whether the service neither stopped nor went stale."""
        return self.stopped_at is None and not self.stale

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: times as ISO 8601 UTC, and `live`."""
        d = asdict(self)
        for key in ("started_at", "heartbeat_at", "stopped_at"):
            d[key] = iso(d[key])
        return {**d, "live": self.live}


def service_name(target: str) -> str:
    """Return the name a service of `target` goes by: the model's name, or the Photon class's (lower case),
    as a URL path segment."""
    module, sep, last = target.rpartition(":")
    # a saved-model folder
    if not sep:
        base = Path(target).name
    elif last.isdigit() or last == "latest":
        # NAME:VERSION
        base = module
    else:
        # path.py:Class or package.module:Class
        base = last.lower()
    return re.sub(r"[^A-Za-z0-9._-]", "-", base).strip(".-") or "photon"


def stale_after() -> timedelta:
    """Return how long a served process may go without a heartbeat before it counts as stale."""
    return timedelta(seconds=STALE_BEATS * config.heartbeat_s())


def _info(row: ServiceRecord, cutoff: datetime) -> ServiceInfo:
    stale = row.kind == "serve" and row.stopped_at is None and row.heartbeat_at < cutoff
    return ServiceInfo(
        id=row.id,
        kind=row.kind,
        name=row.name,
        url=row.url,
        model_ref=row.model_ref,
        host=row.host,
        pid=row.pid,
        deployment=row.deployment,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        stopped_at=row.stopped_at,
        stale=stale,
    )


def _live(cutoff: datetime) -> ColumnElement[bool]:
    """Return the condition a live service meets: not stopped, and a deployment or a recent heartbeat."""
    recent = or_(ServiceRecord.kind == "deploy", ServiceRecord.heartbeat_at >= cutoff)
    return and_(ServiceRecord.stopped_at.is_(None), recent)


class Services(db.Database):
    """Services in the registry database (SQLite by default, PostgreSQL by URL)."""

    @staticmethod
    def _row(s: Session, service_id: int) -> ServiceRecord:
        row = s.get(ServiceRecord, service_id, with_for_update=True)
        if row is None:
            raise NotFoundError(f"no service {service_id}: the services page lists them")
        return row

    def record(
        self,
        kind: str,
        name: str,
        url: str,
        model_ref: str | None = None,
        pid: int | None = None,
        deployment: str | None = None,
        host: str | None = None,
    ) -> ServiceInfo:
        """Record a service started now on `host` (default this machine) and return it. An earlier live
        record of the same kind at the same URL, from the same host (serve) or deployment (deploy), is
        marked stopped: what answers there now is this one."""
        if kind not in KINDS:
            raise InvalidInputError(f"a service's kind is one of {', '.join(KINDS)}, not {kind!r}")
        host = host or socket.gethostname()
        same = ServiceRecord.host == host if kind == "serve" else ServiceRecord.deployment == deployment

        def insert(s: Session) -> ServiceInfo:
            now = utcnow()
            replaced = (ServiceRecord.kind == kind, ServiceRecord.url == url, same)
            s.execute(
                update(ServiceRecord)
                .where(*replaced, ServiceRecord.stopped_at.is_(None))
                .values(stopped_at=now)
            )
            row = ServiceRecord(
                kind=kind,
                name=name,
                url=url,
                model_ref=model_ref,
                host=host,
                pid=pid,
                deployment=deployment,
                started_at=now,
                heartbeat_at=now,
            )
            s.add(row)
            s.flush()
            return _info(row, now - stale_after())

        return self._tx(insert)

    def _change(self, service_id: int, change: Callable[[ServiceRecord, datetime], None]) -> ServiceInfo:
        """Apply `change(row, now)` to a service that has not stopped, in one transaction; return it."""

        def apply(s: Session) -> ServiceInfo:
            row, now = self._row(s, service_id), utcnow()
            if row.stopped_at is None:
                change(row, now)
            return _info(row, now - stale_after())

        return self._tx(apply)

    def heartbeat(self, service_id: int) -> ServiceInfo:
        """Record that the service is alive now and return it (a stopped service stays stopped)."""
        return self._change(service_id, lambda row, now: setattr(row, "heartbeat_at", now))

    def stopped(self, service_id: int) -> ServiceInfo:
        """Record that the service stopped now and return it (once: a second call changes nothing)."""
        return self._change(service_id, lambda row, now: setattr(row, "stopped_at", now))

    def get(self, service_id: int) -> ServiceInfo:
        """Return service `service_id`."""
        return self._read(lambda s: _info(self._row(s, service_id), utcnow() - stale_after()))

    def list(
        self, limit: int = 50, before: int | None = None, live: bool | None = None
    ) -> builtins.list[ServiceInfo]:
        """Return services, newest first (numbered below `before`); `live` True keeps only those neither
        stopped nor stale, False only the others."""
        cutoff = utcnow() - stale_after()
        q = select(ServiceRecord).order_by(ServiceRecord.id.desc()).limit(limit)
        if before is not None:
            q = q.where(ServiceRecord.id < before)
        if live is not None:
            q = q.where(_live(cutoff) if live else not_(_live(cutoff)))
        return self._read(lambda s: [_info(row, cutoff) for row in s.scalars(q)])
