"""How many threads a model process runs: the CPUs it may use, divided by the processes sharing them.

torch's default is one thread per core of the machine. Several model processes on the same cores
(a worker's pool, a bench beside a worker, a container given two of the host's sixty-four cores)
then oversubscribe them, and a model runs several times slower. :func:`size_threads` sets torch's
and OpenMP's thread count from the CPUs this process may actually use: its affinity mask, capped by
a cgroup CPU quota (what a container's ``cpus:`` sets). ``VASE_TORCH_THREADS`` (or
``OMP_NUM_THREADS``) overrides it.

This module must stay light: the CLI calls it before torch is imported, so that OpenMP's own pool
starts at the right size.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .config import Settings, get_settings

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float:
    """The CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota."""
    cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    return min(cpus, quota) if quota is not None else cpus


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs' worth of time the process's cgroup may use per period (quota / period), or None.

    cgroup v2 (``cpu.max``: ``"200000 100000"``) and v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).
    The process's own cgroup and every ancestor are read (a parent's quota caps its children); in a
    container the hierarchy's root is the container's own cgroup.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: "0::/path"
            limits += [_quota_v2(folder / "cpu.max") for folder in _ancestors(cgroup_root, path)]
        elif "cpu" in controllers.split(","):  # v1: "4:cpu,cpuacct:/path", mounted at cpu,cpuacct or cpu
            for mount in dict.fromkeys([cgroup_root / controllers, cgroup_root / "cpu"]):
                limits += [_quota_v1(folder) for folder in _ancestors(mount, path)]
    found = [q for q in limits if q is not None]
    return min(found) if found else None


def _ancestors(mount: Path, path: str) -> list[Path]:
    """``mount/path`` and each folder above it, up to ``mount`` (those that exist)."""
    parts = [p for p in path.strip("/").split("/") if p]
    folders = [mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    return [f for f in folders if f.is_dir()]


def _quota_v2(file: Path) -> float | None:
    try:
        quota, period = file.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _quota_v1(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def threads_for(processes: int = 1, settings: Settings | None = None) -> int:
    """Threads for each of ``processes`` model processes sharing this process's CPUs (at least 1);
    the ``torch_threads`` setting when it is set."""
    if processes < 1:
        raise ValueError(f"processes: must be at least 1, got {processes}")
    settings = settings or get_settings()
    if settings.torch_threads:
        return settings.torch_threads
    return max(1, int(usable_cpus() // processes))


def size_threads(processes: int = 1, settings: Settings | None = None) -> int:
    """Size torch's and OpenMP's threads for a process that is one of ``processes`` sharing these
    CPUs; returns the count. Call it before torch is imported where possible: OpenMP reads
    ``OMP_NUM_THREADS`` when it starts, and child processes (a worker's pool) inherit it."""
    threads = threads_for(processes, settings)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return threads


__all__ = ["cgroup_cpu_quota", "size_threads", "threads_for", "usable_cpus"]
