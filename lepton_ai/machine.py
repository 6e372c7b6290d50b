"""What this machine is: CPU model and features, cores, memory, GPUs. Used by
`lepton doctor` and by every benchmark and report, so figures say where they came from."""

from __future__ import annotations

import contextlib
import importlib.metadata
import ipaddress
import os
import platform
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from lepton_ai.errors import InvalidInputError

# Instruction-set features that decide which kernels (int8, bf16) are fast.
_INTERESTING_FLAGS = (
    "sse4_2",
    "fma",
    "f16c",
    "avx",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    # x86
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    # arm
    "asimd",
    "asimddp",
    "sve",
    "bf16",
    "i8mm",
)


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in info:
                    info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _quota_v2(d: Path) -> float | None:
    quota, period = (d / "cpu.max").read_text().split()
    return None if quota == "max" else int(quota) / int(period)


def _quota_v1(d: Path) -> float | None:
    quota, period = int((d / "cpu.cfs_quota_us").read_text()), int((d / "cpu.cfs_period_us").read_text())
    return None if quota <= 0 else quota / period


def cgroup_cpu_limit(
    root: Path = Path("/sys/fs/cgroup"), own: Path = Path("/proc/self/cgroup")
) -> float | None:
    """Return the CPUs a cgroup quota lets this process use (the tightest over its cgroup and their
    parents; v2 `cpu.max`, v1 `cpu.cfs_quota_us`), or None without one: containers limit CPU this way,
    not by affinity."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if not path or (controllers and "cpu" not in controllers.split(",")):
            continue
        base, read = (root, _quota_v2) if not controllers else (root / "cpu", _quota_v1)
        d = base / path.lstrip("/")
        # a path from outside this container's view of the hierarchy
        d = d if d.is_dir() else base
        while True:
            with contextlib.suppress(OSError, ValueError):
                limits.append(read(d))
            if d == base or base not in d.parents:
                break
            d = d.parent
    found = [x for x in limits if x]
    return min(found) if found else None


def cpu_info() -> dict[str, Any]:
    """Return the CPU model, its notable instruction-set flags and the usable core count (the CPUs this
    process may run on, fewer when a cgroup quota allows less: the quota rounded down, at least 1)."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit:
        usable = min(usable, max(1, int(limit)))
    return {
        "model": info.get("model name") or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "flags": [f for f in _INTERESTING_FLAGS if f in flags],
        "cores": usable,
        "memory_bytes": _memory_bytes(),
    }


def parse_cpus(spec: str) -> set[int]:
    """Return the CPUs a list such as '12-15' or '0,2-3' names (as `taskset -c` reads it), each one this
    process may run on."""
    if not hasattr(os, "sched_getaffinity"):
        raise InvalidInputError("choosing CPUs needs Linux")
    cpus: set[int] = set()
    for part in spec.split(","):
        first, sep, last = part.strip().partition("-")
        if not first.isdigit() or (sep and not (last.isdigit() and int(first) <= int(last))):
            raise InvalidInputError(f"{spec!r} is not a CPU list such as 12-15 or 0,2-3")
        cpus.update(range(int(first), int(last if sep else first) + 1))
    usable = os.sched_getaffinity(0)
    if not cpus <= usable:
        raise InvalidInputError(f"CPUs {spec!r}: this process may run on {format_cpus(usable)} only")
    return cpus


def format_cpus(cpus: set[int]) -> str:
    """Return CPUs written as `taskset -c` takes them: '0-3,8'."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def gpu_info() -> list[dict[str, Any]]:
    """Return one entry per visible CUDA GPU (name, memory, compute capability); [] without."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append(
            {"index": i, "name": p.name, "memory_bytes": p.total_memory, "capability": f"{p.major}.{p.minor}"}
        )
    return gpus


def smi_gpus() -> list[dict[str, Any]]:
    """Return the GPUs nvidia-smi lists (name, memory), without starting CUDA or importing PyTorch."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    query = [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [[part.strip() for part in line.split(",")] for line in out.splitlines() if line.count(",") == 2]
    return [{"index": int(i), "name": name, "memory_bytes": int(mib) * 2**20} for i, name, mib in rows]


def light_machine_info() -> dict[str, Any]:
    """Return what `machine_info` does but PyTorch's thread count, without importing PyTorch (a long-lived
    process such as the dashboard would carry its 200 MB for one line of text)."""
    try:
        torch_version: str | None = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = None
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch_version,
        "cpu": cpu_info(),
        "gpus": smi_gpus(),
    }


@lru_cache(maxsize=1)
def machine_info() -> dict[str, Any]:
    """Return a JSON-ready description of this machine for reports and benchmarks."""
    try:
        import torch

        torch_version, threads = torch.__version__, torch.get_num_threads()
    except ImportError:
        torch_version, threads = None, None
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch_version,
        "torch_threads": threads,
        "cpu": cpu_info(),
        "gpus": gpu_info(),
    }


def describe(info: dict[str, Any] | None = None) -> str:
    """Return a one-line summary such as 'AMD EPYC (x86_64, 2 cores, avx2) · no GPU'."""
    info = info or machine_info()
    cpu = info["cpu"]
    gpus = ", ".join(g["name"] for g in info["gpus"]) or "no GPU"
    flags = " ".join(cpu["flags"]) or "no notable SIMD flags"
    return f"{cpu['model']} ({cpu['arch']}, {cpu['cores']} cores, {flags}) · {gpus}"


def is_loopback_host(host: str) -> bool:
    """Return whether `host` is this machine alone (localhost, 127.0.0.0/8, ::1): a name may resolve to any
    interface, so it is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
