"""Run untrusted Python (model-written solutions) in a constrained subprocess.

Layers, strongest available first (probed once per process, see :func:`sandbox_info`):

``namespaces-root`` (running as root, ``unshare`` + ``setpriv`` present)
    new network namespace (loopback only, down: no network at all), mount namespace in which
    ``/tmp``, ``/var/tmp``, ``/dev/shm`` and ``/run/lock`` are fresh throw-away tmpfs and every
    other mount is remounted read-only except the work dir, PID namespace (killing the
    namespace's init kills every process the program started), and the program itself runs
    as an unprivileged uid (``nobody`` by default) with ``no_new_privs``.
``namespaces-user`` (not root, unprivileged user namespaces allowed)
    the same namespaces through ``unshare --user --map-root-user`` (no uid change).
``setuid`` (root without ``unshare``)
    the program runs as the unprivileged uid; no namespaces.
``rlimits``
    resource limits and the audit hook only.

In every mode the program runs in its own temporary directory (cwd, ``HOME`` and ``TMPDIR``
point there), under ``RLIMIT_CPU``/``RLIMIT_AS``/``RLIMIT_NPROC``/``RLIMIT_FSIZE``/
``RLIMIT_NOFILE`` limits set by the harness, with a Python audit hook refusing sockets,
process creation, ctypes and file modification outside the work dir (disable with
``audit=False``), and in a new session; a wall-clock deadline kills the whole process group
(and with it the PID namespace). No signals, alarms or multiprocessing are used in the calling
process, so this works from threads and from Celery prefork worker children.

Environment overrides: ``VASE_SANDBOX_MECHANISM`` (force one of the names above),
``VASE_SANDBOX_PYTHON`` (interpreter for the sandbox), ``VASE_SANDBOX_UID``/``VASE_SANDBOX_GID``
(default 65534), ``VASE_SANDBOX_TMP`` (parent dir of the work dirs).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

HARNESS_PATH = Path(__file__).with_name("_sandbox_harness.py")
RESULT_SENTINEL = "\x00__VASE_RESULT__\x00"
SETUP_FAILED_MARK = "__VASE_SANDBOX_SETUP_FAILED__"
MECHANISMS = ("namespaces-root", "namespaces-user", "setuid", "rlimits")

_NS_SCRIPT = r"""
w="$1"; uid="$2"; shift 2
fail() { echo "__VASE_SANDBOX_SETUP_FAILED__ $1" >&2; exit 125; }
mount --make-rprivate / || fail make-rprivate
for d in /tmp /var/tmp /dev/shm /run/lock; do
  if [ -d "$d" ]; then mount -t tmpfs -o size=64m,mode=1777,nosuid,nodev tmpfs "$d" || fail "tmpfs $d"; fi
done
mkdir -p "$w" && mount --bind --no-canonicalize /proc/self/cwd "$w" || fail bind-workdir
cd "$w" || fail cd
while read -r _ m _; do
  case "$m" in
    /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|/tmp|/var/tmp|/run/lock|"$w") ;;
    *) mount -o remount,bind,ro "$m" 2>/dev/null ;;
  esac
done < /proc/self/mounts
if [ -n "$uid" ]; then
  setpriv --reuid="$uid" --regid="$uid" --clear-groups --no-new-privs -- "$@"
  exit $?
fi
"$@"
exit $?
"""


class SandboxError(RuntimeError):
    """The sandbox itself could not run (not the program's fault)."""


@dataclass(frozen=True)
class SandboxLimits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30
    max_processes: int = 32
    max_file_bytes: int = 16 << 20
    max_open_files: int = 64
    max_output_bytes: int = 16 << 20


@dataclass
class SandboxResult:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    wall_seconds: float
    output_truncated: bool = False
    mechanism: str = ""
    run_id: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.output_truncated


@dataclass(frozen=True)
class Mechanism:
    name: str
    python: str
    uid: int | None = None
    gid: int | None = None
    unshare: str | None = None
    setpriv: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


_PROBE_LOCK = threading.Lock()
_PROBED: Mechanism | None = None
_PROBE_LOG: list[str] = []
_FORCED: dict[str, Mechanism] = {}


def _sandbox_ids() -> tuple[int, int]:
    uid = int(os.environ.get("VASE_SANDBOX_UID", "65534"))
    gid = int(os.environ.get("VASE_SANDBOX_GID", str(uid)))
    return uid, gid


def _python_candidates() -> list[str]:
    cands = [os.environ.get("VASE_SANDBOX_PYTHON", ""), sys.executable,
             os.path.realpath(sys.executable), getattr(sys, "_base_executable", ""),
             shutil.which("python3") or "", "/usr/local/bin/python3", "/usr/bin/python3"]
    out: list[str] = []
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK) and c not in out:
            out.append(c)
    return out


def _mechanism_candidates(name: str) -> list[Mechanism]:
    unshare = shutil.which("unshare")
    setpriv = shutil.which("setpriv")
    uid, gid = _sandbox_ids()
    root = os.geteuid() == 0
    pys = _python_candidates()
    if name == "namespaces-root":
        if not (root and unshare and setpriv):
            return []
        return [Mechanism(name, p, uid, gid, unshare, setpriv) for p in pys]
    if name == "namespaces-user":
        if not unshare:
            return []
        return [Mechanism(name, p, None, None, unshare, None) for p in pys]
    if name == "setuid":
        if not root:
            return []
        return [Mechanism(name, p, uid, gid) for p in pys]
    if name == "rlimits":
        return [Mechanism(name, p) for p in pys]
    raise ValueError(f"unknown sandbox mechanism {name!r}; known: {MECHANISMS}")


def _probe_one(mech: Mechanism) -> bool:
    try:
        res = _run(mech, "print(6 * 7)", stdin="", mode="script", func_name=None,
                   limits=SandboxLimits(wall_seconds=30, cpu_seconds=10), audit=True, preamble=False)
    except Exception as exc:  # noqa: BLE001
        _PROBE_LOG.append(f"{mech.name} with {mech.python}: {type(exc).__name__}: {exc}")
        return False
    ok = res.returncode == 0 and res.stdout.strip() == "42"
    if not ok:
        _PROBE_LOG.append(
            f"{mech.name} with {mech.python}: rc={res.returncode} stderr={res.stderr.strip()[-300:]!r}"
        )
    return ok


def available_mechanisms() -> list[Mechanism]:
    """Every mechanism that works here (probes each; slow-ish, for tests and diagnostics)."""
    found = []
    for name in MECHANISMS:
        for mech in _mechanism_candidates(name):
            if _probe_one(mech):
                found.append(mech)
                break
    return found


def get_mechanism(name: str | None = None) -> Mechanism:
    """The strongest working mechanism, or the named one (``VASE_SANDBOX_MECHANISM`` names one
    too); probed once per process and cached."""
    global _PROBED
    forced = name or os.environ.get("VASE_SANDBOX_MECHANISM") or None
    if forced:
        with _PROBE_LOCK:
            if forced not in _FORCED:
                for mech in _mechanism_candidates(forced):
                    if _probe_one(mech):
                        _FORCED[forced] = mech
                        break
            if forced not in _FORCED:
                raise SandboxError(f"sandbox mechanism {forced!r} does not work here: {_PROBE_LOG[-3:]}")
            return _FORCED[forced]
    with _PROBE_LOCK:
        if _PROBED is None:
            for mname in MECHANISMS:
                for mech in _mechanism_candidates(mname):
                    if _probe_one(mech):
                        _PROBED = mech
                        break
                if _PROBED is not None:
                    break
            if _PROBED is None:
                raise SandboxError(f"no sandbox mechanism works here: {_PROBE_LOG[-5:]}")
        return _PROBED


def reset_sandbox_cache() -> None:
    global _PROBED
    with _PROBE_LOCK:
        _PROBED = None
        _FORCED.clear()
        _PROBE_LOG.clear()


def sandbox_info() -> dict[str, Any]:
    """What the sandbox does on this host: the mechanism and its layers."""
    mech = get_mechanism()
    ns = mech.name.startswith("namespaces")
    return {
        "mechanism": mech.name,
        "python": mech.python,
        "uid": mech.uid,
        "network_namespace": ns,
        "mount_namespace": ns,
        "pid_namespace": ns,
        "privilege_drop": mech.uid is not None,
        "rlimits": ["RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE"],
        "audit_hook": True,
        "probe_log": list(_PROBE_LOG),
    }


# -- running --------------------------------------------------------------------------------------

def _sandbox_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
    }


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass
    try:
        proc.kill()
    except (ProcessLookupError, OSError):
        pass


def kill_and_reap(proc: subprocess.Popen) -> None:
    """Kill the process and its group, close its pipes and reap it (waiting at most 5 s)."""
    _kill_group(proc)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _communicate(proc: subprocess.Popen, data: bytes, deadline: float,
                 max_output: int) -> tuple[bytes, bytes, bool, bool]:
    """Feed stdin and collect stdout/stderr until EOF, the deadline or the output cap.

    Returns (stdout, stderr, timed_out, truncated). Uses a selector only (no threads, no
    signals)."""
    sel = selectors.DefaultSelector()
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    total = 0
    timed_out = truncated = False
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    view = memoryview(data)
    pos = 0
    if data:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    sel.register(proc.stdout, selectors.EVENT_READ, out_chunks)
    sel.register(proc.stderr, selectors.EVENT_READ, err_chunks)
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=min(remaining, 0.5)):
                if key.fileobj is proc.stdin:
                    try:
                        n = os.write(key.fd, view[pos:pos + 65536])
                        pos += n
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, OSError):
                        pos = len(data)
                    if pos >= len(data):
                        sel.unregister(proc.stdin)
                        try:
                            proc.stdin.close()
                        except OSError:
                            pass
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                key.data.append(chunk)
                total += len(chunk)
                if total > max_output:
                    truncated = True
                    break
            if truncated:
                break
    finally:
        sel.close()
    return b"".join(out_chunks), b"".join(err_chunks), timed_out, truncated


def _build_command(mech: Mechanism, workdir: str, run_id: str) -> list[str]:
    py = [mech.python, "-I", "-B", "harness.py", "config.json", run_id]
    if mech.name == "namespaces-root":
        assert mech.unshare and mech.uid is not None
        return [mech.unshare, "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
                "/bin/sh", "-c", _NS_SCRIPT, "sh", workdir, str(mech.uid), *py]
    if mech.name == "namespaces-user":
        assert mech.unshare
        return [mech.unshare, "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork",
                "--kill-child", "--mount-proc", "/bin/sh", "-c", _NS_SCRIPT, "sh", workdir, "", *py]
    return py


def _run(mech: Mechanism, code: str, *, stdin: str, mode: str, func_name: str | None,
         limits: SandboxLimits, audit: bool, preamble: bool) -> SandboxResult:
    base = os.environ.get("VASE_SANDBOX_TMP") or None
    workdir = tempfile.mkdtemp(prefix="vase-sbx-", dir=base)
    run_id = f"vase-run-{uuid.uuid4().hex}"
    proc: subprocess.Popen | None = None
    start = time.monotonic()
    try:
        shutil.copyfile(HARNESS_PATH, os.path.join(workdir, "harness.py"))
        with open(os.path.join(workdir, "solution.py"), "w", encoding="utf-8") as fh:
            fh.write(code)
        cfg = {
            "mode": mode, "func_name": func_name, "audit": bool(audit), "preamble": bool(preamble),
            "cpu_seconds": int(limits.cpu_seconds), "memory_bytes": int(limits.memory_bytes),
            "max_processes": int(limits.max_processes), "max_file_bytes": int(limits.max_file_bytes),
            "max_open_files": int(limits.max_open_files),
        }
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as fh:
            json.dump(cfg, fh)
        extra: dict[str, Any] = {}
        if mech.uid is not None:
            for p in (workdir, *(os.path.join(workdir, f) for f in ("harness.py", "solution.py", "config.json"))):
                os.chown(p, mech.uid, mech.gid if mech.gid is not None else mech.uid)
            if mech.name == "setuid":
                extra = {"user": mech.uid, "group": mech.gid, "extra_groups": []}
        cmd = _build_command(mech, workdir, run_id)
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=_sandbox_env(workdir), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            close_fds=True, **extra,
        )
        deadline = start + float(limits.wall_seconds)
        out, err, timed_out, truncated = _communicate(
            proc, stdin.encode("utf-8", errors="surrogateescape"), deadline, limits.max_output_bytes
        )
        if timed_out or truncated:
            _kill_group(proc)
        try:
            rc = proc.wait(timeout=max(0.5, deadline - time.monotonic()) if not timed_out else 5)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            rc = proc.wait(timeout=5)
        stderr = err.decode("utf-8", errors="replace")
        if SETUP_FAILED_MARK in stderr and mech.name.startswith("namespaces"):
            raise SandboxError(f"sandbox setup failed: {stderr.strip()[-300:]}")
        return SandboxResult(
            returncode=None if timed_out else rc,
            stdout=out.decode("utf-8", errors="replace"),
            stderr=stderr,
            timed_out=timed_out,
            wall_seconds=time.monotonic() - start,
            output_truncated=truncated,
            mechanism=mech.name,
            run_id=run_id,
        )
    finally:
        if proc is not None:
            kill_and_reap(proc)  # stragglers of the group (the namespace dies with its init)
        shutil.rmtree(workdir, ignore_errors=True)


def run_python(
    code: str,
    *,
    stdin: str = "",
    mode: str = "script",
    func_name: str | None = None,
    limits: SandboxLimits | None = None,
    audit: bool = True,
    mechanism: str | Mechanism | None = None,
    preamble: bool = True,
) -> SandboxResult:
    """Run ``code`` in the sandbox and return its outcome (never raises for the program's own
    failures; raises :class:`SandboxError` when the sandbox itself cannot run).

    ``mode="script"`` runs the code as ``__main__`` with ``stdin``; ``mode="functional"``
    calls ``Solution().<func_name>(*args)`` (or a top-level ``func_name``) with one JSON value
    per stdin line; the JSON result follows :data:`RESULT_SENTINEL` in stdout (see
    :func:`functional_result`). ``preamble`` prepends LiveCodeBench's usual imports.
    """
    if mode not in ("script", "functional"):
        raise ValueError("mode must be 'script' or 'functional'")
    if mode == "functional" and not func_name:
        raise ValueError("functional mode needs func_name")
    mech = mechanism if isinstance(mechanism, Mechanism) else get_mechanism(mechanism)
    return _run(mech, code, stdin=stdin, mode=mode, func_name=func_name,
                limits=limits or SandboxLimits(), audit=audit, preamble=preamble)


def functional_result(stdout: str) -> tuple[bool, Any]:
    """(found, value) of the JSON result a functional-mode run printed."""
    marker = "\n" + RESULT_SENTINEL + "\n"
    idx = stdout.rfind(marker)
    if idx == -1:
        return False, None
    try:
        return True, json.loads(stdout[idx + len(marker):].strip())
    except json.JSONDecodeError:
        return False, None


def limits_with(**kwargs: Any) -> SandboxLimits:
    return replace(SandboxLimits(), **kwargs)


__all__ = [
    "MECHANISMS",
    "Mechanism",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "available_mechanisms",
    "functional_result",
    "get_mechanism",
    "limits_with",
    "reset_sandbox_cache",
    "run_python",
    "sandbox_info",
]
