import os

import pytest

from lepton_ai.errors import InvalidInputError
from lepton_ai.machine import cgroup_cpu_limit, cpu_info, describe, format_cpus, machine_info, parse_cpus


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


def test_a_cgroup_quota_limits_the_usable_cores(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lepton_ai.machine as machine

    def tree(own: str, files: dict[str, str]) -> float | None:
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        (root / "self").write_text(own)
        return cgroup_cpu_limit(root, root / "self")

    # v2: the tightest of the cgroup and its parents; "max" is no limit
    assert (
        tree("0::/kube/pod\n", {"kube/cpu.max": "150000 100000\n", "kube/pod/cpu.max": "max 100000\n"}) == 1.5
    )
    assert (
        tree("0::/kube/pod\n", {"kube/cpu.max": "max 100000\n", "kube/pod/cpu.max": "max 100000\n"}) is None
    )
    # v1 (cpu controller), also when the path is from outside the container's view (its root is the container)
    assert (
        tree(
            "4:cpu,cpuacct:/docker/abc\n2:memory:/docker/abc\n",
            {"cpu/docker/abc/cpu.cfs_quota_us": "200000", "cpu/docker/abc/cpu.cfs_period_us": "100000"},
        )
        == 2.0
    )
    assert (
        tree(
            "4:cpu,cpuacct:/host/path\n", {"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000"}
        )
        == 0.5
    )
    assert tree("4:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}) is None
    # a line it cannot read is passed over
    assert tree("garbage\n0::/\n", {"cpu.max": "100000 100000\n"}) == 1.0
    assert cgroup_cpu_limit(tmp_path / "none", tmp_path / "none" / "self") is None

    # half a CPU: one thread, not the host's count
    monkeypatch.setattr(machine, "cgroup_cpu_limit", lambda: 0.5)
    assert cpu_info()["cores"] == 1
