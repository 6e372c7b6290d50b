import os

import pytest

from lepton_ai.errors import InvalidInputError
from lepton_ai.machine import cpu_info, describe, format_cpus, machine_info, parse_cpus


def test_cpu_info_names_the_cpu_and_its_flags() -> None:
    cpu = cpu_info()
    assert cpu["model"] and cpu["cores"] >= 1
    with open("/proc/cpuinfo") as f:
        text = f.read()
    if " avx2 " in text:
        assert "avx2" in cpu["flags"]


def test_describe_is_one_line() -> None:
    line = describe(machine_info())
    assert "\n" not in line and machine_info()["cpu"]["model"] in line


def test_cpu_lists_read_and_write_as_taskset_takes_them() -> None:
    usable = os.sched_getaffinity(0)
    first, last = min(usable), max(usable)
    assert parse_cpus(str(last)) == {last} and parse_cpus(f"{first}-{last}") == set(range(first, last + 1))
    assert format_cpus({0, 1, 2, 3, 8, 10, 11}) == "0-3,8,10-11" and format_cpus({5}) == "5"
    for bad in ("x", "1-", "-1", "3-1", "", "0,,1"):
        with pytest.raises(InvalidInputError, match="is not a CPU list"):
            parse_cpus(bad)
    with pytest.raises(InvalidInputError, match=f"this process may run on {format_cpus(usable)} only"):
        parse_cpus(str(last + 1))

