"""Thread sizing (vase/runtime.py): CPUs from the affinity mask and cgroup quotas, divided by the
processes sharing them; the override setting. The cgroup files are written as the kernel lays them
out (v1 and v2, a container's view and a nested host cgroup)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vase.config import Settings
from vase.runtime import cgroup_cpu_quota, size_threads, threads_for, usable_cpus


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_of_the_process_and_its_parents(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/jobs/worker\n")
    root = tmp_path / "sys"
    _write(root / "cpu.max", "max 100000\n")
    _write(root / "jobs/cpu.max", "150000 100000\n")  # the parent's cap binds the child
    _write(root / "jobs/worker/cpu.max", "400000 100000\n")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(1.5)
    _write(root / "jobs/cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(4.0)


def test_cgroup_v1_inside_a_container(tmp_path):
    # A container on cgroup v1: /proc/self/cgroup names the host's path, /sys/fs/cgroup/cpu is the
    # container's own cgroup (docker's `cpus: 1.5` = quota 150000 per period 100000).
    proc = tmp_path / "cgroup"
    proc.write_text("5:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    root = tmp_path / "sys"
    _write(root / "cpu,cpuacct/cpu.cfs_quota_us", "150000\n")
    _write(root / "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(1.5)


def test_no_quota(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("1:cpu:/\n0::/\n")
    root = tmp_path / "sys"
    _write(root / "cpu/cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(root, proc) is None
    assert cgroup_cpu_quota(root, tmp_path / "missing") is None
    assert usable_cpus(root, proc) == len(os.sched_getaffinity(0))


def test_threads_divide_the_usable_cpus(monkeypatch):
    monkeypatch.setattr("vase.runtime.usable_cpus", lambda *a: 8.0)
    auto = Settings(torch_threads=None)
    assert [threads_for(n, auto) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert threads_for(2, Settings(torch_threads=6)) == 6  # the override wins
    with pytest.raises(ValueError, match="processes: must be at least 1"):
        threads_for(0, auto)


def test_override_setting_from_the_environment(monkeypatch):
    monkeypatch.delenv("VASE_TORCH_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert Settings().torch_threads == 3
    monkeypatch.setenv("VASE_TORCH_THREADS", "5")
    assert Settings().torch_threads == 5
    monkeypatch.setenv("VASE_TORCH_THREADS", "")  # compose's ${VASE_TORCH_THREADS:-}: not set
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert Settings().torch_threads is None
    monkeypatch.setenv("VASE_TORCH_THREADS", "0")
    with pytest.raises(ValueError, match="torch_threads|VASE_TORCH_THREADS"):
        Settings()


def test_size_threads_sets_torch_and_the_environment_children_inherit():
    # In a child interpreter: torch's thread count is process-wide, and this test must not change
    # the test process's. Pinned to one CPU, one process: one thread (torch's default would be one
    # per core of the machine); two processes on all CPUs: half of them each.
    code = (
        "import os, torch\n"
        "from vase.runtime import size_threads, usable_cpus\n"
        "cpus = sorted(os.sched_getaffinity(0))\n"
        "usable = usable_cpus()\n"
        "half = size_threads(2)\n"
        "os.sched_setaffinity(0, cpus[:1])\n"
        "one = size_threads(1)\n"
        "print(usable, half, one, torch.get_num_threads(), os.environ['OMP_NUM_THREADS'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "VASE_TORCH_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    usable, *counts = out.stdout.split()
    half, one, torch_threads, omp = map(int, counts)
    assert half == max(1, int(float(usable) // 2))
    assert one == torch_threads == omp == 1
