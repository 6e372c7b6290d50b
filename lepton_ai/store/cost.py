"""The cost card: US dollars per million inferences for a version and its parent, from each one's measured
throughput and an hourly price (given, or read from a small table of cloud instances)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from lepton_ai.errors import InvalidInputError
from lepton_ai.store.registry import Registry, VersionInfo

# What a version's metrics may hold, best first: `lepton bench serve --record` measures the service end to end
# (HTTP, batching, serialisation), the compression report only the model's forward pass.
THROUGHPUT_METRICS = (("serve_throughput_per_s", "bench serve"), ("throughput_per_s", "compression report"))
SECONDS_PER_HOUR = 3600


class Price(NamedTuple):
    """An hourly price in US dollars and where it comes from."""

    per_hour: float
    source: str


@dataclass(frozen=True)
class Instance:
    """A cloud instance with its on-demand price: the page it was read from, and that page's date."""

    name: str
    kind: str
    hardware: str
    per_hour: float
    region: str
    read: str
    url: str

    @property
    def price(self) -> Price:
        """Return this instance's hourly price, its source naming the instance, region and date."""
        where = f" {self.region}" if self.region else ""
        return Price(self.per_hour, f"aws {self.name} on-demand{where}, read {self.read}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


# Linux on-demand prices, each as a public page stated it on the date given (`read`); region "" where the page
# names none. Prices change: `--price-per-hour` takes what you actually pay.
_TABLE = (
    # factualminds.com/blog/amazon-ec2-on-demand-pricing-instance-families-2026 (2026-06-17): "In us-east-1
    # (June 2026), a m7g.large Linux instance runs $0.0816/hr while a GPU g5.xlarge is $1.006/hr"
    Instance(
        "m7g.large", "cpu", "2 vCPU Graviton3 (Arm), 8 GiB", 0.0816, "us-east-1", "2026-06-17",
        "https://www.factualminds.com/blog/amazon-ec2-on-demand-pricing-instance-families-2026/",
    ),
    # hacecuentas.com/en/costo-servidor-cloud-aws-ec2-mensual, "Last reviewed: April 17, 2026" (source: the
    # AWS pricing page): t3.large $0.0832/hr; go-cloud.io/?p=10607 gives the same for us-east-1. Burstable:
    # sustained load above its baseline also pays for CPU credits.
    Instance(
        "t3.large", "cpu", "2 vCPU Intel, burstable, 8 GiB", 0.0832, "us-east-1", "2026-04-17",
        "https://hacecuentas.com/en/costo-servidor-cloud-aws-ec2-mensual",
    ),
    # the same page, same date: c6i.2xlarge $0.34/hr (no region named)
    Instance(
        "c6i.2xlarge", "cpu", "8 vCPU Intel Ice Lake, 16 GiB", 0.34, "", "2026-04-17",
        "https://hacecuentas.com/en/costo-servidor-cloud-aws-ec2-mensual",
    ),
    # gist.github.com/archae0pteryx/b3c1580dab2059083e862a9a679936ad, "as of nov 2023", GPU instance types
    # (on demand): g4dn.xlarge $0.526/hr (no region named)
    Instance(
        "g4dn.xlarge", "gpu", "1 NVIDIA T4 (16 GB), 4 vCPU, 16 GiB", 0.526, "", "2023-11",
        "https://gist.github.com/archae0pteryx/b3c1580dab2059083e862a9a679936ad",
    ),
    # factualminds.com, as for m7g.large above
    Instance(
        "g5.xlarge", "gpu", "1 NVIDIA A10G (24 GB), 4 vCPU, 16 GiB", 1.006, "us-east-1", "2026-06-17",
        "https://www.factualminds.com/blog/amazon-ec2-on-demand-pricing-instance-families-2026/",
    ),
)  # fmt: skip
INSTANCES: dict[str, Instance] = {i.name: i for i in _TABLE}
# a fixed-performance CPU instance whose region and date the page states
DEFAULT_INSTANCE = "m7g.large"


def price(per_hour: float | None = None, instance: str | None = None) -> Price:
    """Return the hourly price given, or the named instance's (the default instance's when neither is)."""
    if per_hour is not None and instance is not None:
        raise InvalidInputError("give a price per hour or an instance, not both")
    if per_hour is not None:
        if isinstance(per_hour, bool) or not math.isfinite(per_hour) or per_hour <= 0:
            raise InvalidInputError(
                f"a price per hour must be a positive number of US dollars, not {per_hour}"
            )
        return Price(float(per_hour), "--price-per-hour")
    name = (instance or DEFAULT_INSTANCE).strip().lower()
    if name not in INSTANCES:
        raise InvalidInputError(
            f"unknown instance {instance!r}: the known ones are {', '.join(INSTANCES)} "
            "(`lepton models instances` lists their prices), or give --price-per-hour"
        )
    return INSTANCES[name].price


def usd_per_million(per_hour: float, throughput_per_s: float) -> float:
    """Return the US dollars one million inferences cost at `throughput_per_s` on a machine at `per_hour`."""
    return per_hour / (throughput_per_s * SECONDS_PER_HOUR) * 1e6


@dataclass(frozen=True)
class CostLine:
    """One version's cost: its throughput and where it was measured, and $ per million inferences or why
    there is none."""

    ref: str
    throughput_per_s: float | None
    source: str | None
    usd_per_million: float | None
    why: str | None = None

    @classmethod
    def of(cls, version: VersionInfo, hourly: Price) -> CostLine:
        """Return the cost line of `version` at `hourly`, from its best measured throughput."""
        for key, source in THROUGHPUT_METRICS:
            value = version.metrics.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                return cls(version.ref, float(value), source, usd_per_million(hourly.per_hour, value))
        return cls(
            version.ref,
            None,
            None,
            None,
            f"no measured throughput: serve it, then run "
            f"lepton bench serve URL --payload BODY.json --record {version.ref}",
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class CostCard:
    """The cost of a version and of its parent, side by side, at one hourly price."""

    price: Price
    # the version first, then its parent if it has one
    lines: list[CostLine]

    @property
    def times_cheaper(self) -> float | None:
        """Return how many times cheaper the version is than its parent, when both costs are known."""
        costs = [line.usd_per_million for line in self.lines]
        if len(costs) < 2 or costs[0] is None or costs[1] is None:
            return None
        return costs[1] / costs[0]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the "cost" of `lepton models show --json`)."""
        return {
            "price": self.price._asdict(),
            "lines": [line.to_dict() for line in self.lines],
            "times_cheaper": self.times_cheaper,
        }


def cost_card(registry: Registry, ref: str, price: Price) -> CostCard:
    """Return the cost card of the version `ref` names and of its parent, at `price`."""
    version = registry.get(ref)
    versions = [version, registry.get(version.parent)] if version.parent else [version]
    return CostCard(price, [CostLine.of(v, price) for v in versions])
