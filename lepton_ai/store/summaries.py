"""Each metric of a run in a few numbers (points, min, max, last value and step), computed from its series
or summarised in the database for many runs at once."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from lepton_ai.store.schema import RunMetric


@dataclass(frozen=True)
class MetricSummary:
    """One metric of a run in a few numbers: how many points, its min, max and last value, the last step."""

    points: int
    min: float
    max: float
    last: float
    last_step: int

    @classmethod
    def of(cls, series: list[tuple[int, float]]) -> MetricSummary:
        """Return the summary of a (step, value) series in the order it was logged."""
        values = [v for _, v in series]
        return cls(len(values), min(values), max(values), values[-1], series[-1][0])


def metric_summaries(s: Session, run_ids: list[int]) -> dict[int, dict[str, MetricSummary]]:
    """Return each run's metrics summarised in the database (grouped queries, not every point)."""
    if not run_ids:
        return {}
    # the value at each metric's highest step (logged last, if twice)
    ends = (
        select(RunMetric.run_id, RunMetric.key, func.max(RunMetric.step).label("step"))
        .where(RunMetric.run_id.in_(run_ids))
        .group_by(RunMetric.run_id, RunMetric.key)
        .subquery()
    )
    at_end = and_(
        RunMetric.run_id == ends.c.run_id, RunMetric.key == ends.c.key, RunMetric.step == ends.c.step
    )
    last_ids = select(func.max(RunMetric.id)).join(ends, at_end).group_by(RunMetric.run_id, RunMetric.key)
    last = {(m.run_id, m.key): m for m in s.scalars(select(RunMetric).where(RunMetric.id.in_(last_ids)))}
    q = (
        select(
            RunMetric.run_id,
            RunMetric.key,
            func.count(),
            func.min(RunMetric.value),
            func.max(RunMetric.value),
        )
        .where(RunMetric.run_id.in_(run_ids))
        .group_by(RunMetric.run_id, RunMetric.key)
    )
    out: dict[int, dict[str, MetricSummary]] = {}
    for run_id, key, n, low, high in s.execute(q):
        end = last[(run_id, key)]
        out.setdefault(run_id, {})[key] = MetricSummary(n, low, high, end.value, end.step)
    return out
