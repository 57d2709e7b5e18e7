"""Math answer equivalence through Math-Verify, with a wall-clock limit that needs no signals.

Math-Verify's built-in timeouts use ``signal.alarm`` (main thread only, and clash with Celery's
prefork children), so it is always called with ``parsing_timeout=None`` and
``timeout_seconds=None``. The limit is enforced instead by one of two backends:

``subprocess`` (default)
    a long-lived worker process (``_math_worker.py``) per grading process, spoken to over
    pipes; a request that exceeds the limit gets the worker killed (its whole process group)
    and a fresh one started on the next call. Robust even against computations that hold the
    GIL (huge integer powers). Fork-aware: a child process never reuses its parent's worker.
``thread``
    Math-Verify in a daemon thread of this process, joined with a timeout; on timeout the
    result is discarded (the thread cannot be stopped and runs on in the background).

Select with ``VASE_MATH_GRADER=thread|subprocess`` or the ``backend`` argument.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sandbox import kill_and_reap

WORKER_PATH = Path(__file__).with_name("_math_worker.py")
DEFAULT_TIMEOUT = 10.0
STARTUP_TIMEOUT = 60.0


class GraderTimeout(RuntimeError):
    """Math-Verify did not finish within the wall-clock limit."""


class GraderFailure(RuntimeError):
    """Math-Verify (or its worker) failed."""


@dataclass
class MathCheck:
    correct: bool
    gold_parsed: list[str]
    pred_parsed: list[str]
    method: str  # "string" | "math_verify"
    pred_expr: bool = True  # the prediction parsed into a math expression (not only a string)


# -- cheap normalisation before Math-Verify -----------------------------------------------------

_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def normalize_simple(s: str) -> str:
    """A conservative textual normal form: equal normal forms mean equal answers."""
    s = s.strip()
    s = s.strip("$").strip()
    s = _TEXT_WRAP_RE.sub(r"\1", s)
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    return s


# -- the subprocess backend -------------------------------------------------------------------

class _Worker:
    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.owner_pid = -1
        self.buf = b""
        self.next_id = 0

    def alive(self) -> bool:
        return self.proc is not None and self.owner_pid == os.getpid() and self.proc.poll() is None

    def start(self) -> None:
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-u", str(WORKER_PATH)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            self.proc = None
            raise GraderFailure(f"cannot start the math worker: {exc}") from exc
        self.owner_pid = os.getpid()
        self.buf = b""
        try:
            msg = self._read_line(time.monotonic() + STARTUP_TIMEOUT)
        except (GraderTimeout, GraderFailure, ValueError) as exc:
            self.kill()
            raise GraderFailure(f"math worker did not start: {exc}") from exc
        if not msg.get("ready"):
            self.kill()
            raise GraderFailure(f"math worker did not start: {msg}")

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or self.owner_pid != os.getpid():
            return  # never touch a worker inherited through fork
        kill_and_reap(proc)

    def _read_line(self, deadline: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self.buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise GraderTimeout("math-verify timed out")
                if not sel.select(timeout=remaining):
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise GraderFailure("math worker exited unexpectedly")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def request(self, gold: str, pred: str, timeout: float) -> dict[str, Any]:
        if not self.alive():
            self.proc = None
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        self.next_id += 1
        rid = self.next_id
        try:
            self.proc.stdin.write((json.dumps({"id": rid, "gold": gold, "pred": pred}) + "\n").encode())
            self.proc.stdin.flush()
            deadline = time.monotonic() + timeout
            while True:
                msg = self._read_line(deadline)
                if msg.get("id") == rid:
                    return msg
        except (GraderTimeout, GraderFailure, OSError, ValueError):
            self.kill()
            raise


_WORKER = _Worker()
_WORKER_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _WORKER, _WORKER_LOCK
    _WORKER = _Worker()  # the parent's worker stays the parent's
    _WORKER_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def shutdown_worker() -> None:
    """Stop this process's math worker (it is restarted on demand)."""
    with _WORKER_LOCK:
        _WORKER.kill()


def _check_subprocess(gold: str, pred: str, timeout: float) -> MathCheck:
    with _WORKER_LOCK:
        msg = _WORKER.request(gold, pred, timeout)
    if not msg.get("ok"):
        raise GraderFailure(str(msg.get("error")))
    return MathCheck(bool(msg["correct"]), list(msg.get("gold_parsed", [])),
                     list(msg.get("pred_parsed", [])), "math_verify", bool(msg.get("pred_expr", True)))


# -- the thread backend -------------------------------------------------------------------------

def _verify_inline(gold: str, pred: str) -> MathCheck:
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from math_verify import parse, verify

    g = parse("\\boxed{" + gold + "}", parsing_timeout=None) or parse(gold, parsing_timeout=None)
    p = parse("\\boxed{" + pred + "}", parsing_timeout=None) or parse(pred, parsing_timeout=None)
    ok = bool(g) and bool(p) and bool(verify(g, p, timeout_seconds=None))
    return MathCheck(ok, [str(x) for x in g], [str(x) for x in p], "math_verify",
                     any(not isinstance(x, str) for x in p))


def _check_thread(gold: str, pred: str, timeout: float) -> MathCheck:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = _verify_inline(gold, pred)
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=target, name="vase-math-verify", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise GraderTimeout("math-verify timed out (thread left running)")
    if "error" in box:
        raise GraderFailure(f"{type(box['error']).__name__}: {box['error']}")
    return box["result"]


def check_math(gold: str, pred: str, *, timeout: float | None = None, backend: str | None = None,
               shortcut: bool = True) -> MathCheck:
    """Is ``pred`` (a boxed answer's content) equivalent to ``gold``?

    Identical normal forms short-circuit (unless ``shortcut=False``); otherwise Math-Verify
    decides. Raises :class:`GraderTimeout` / :class:`GraderFailure`."""
    if shortcut and normalize_simple(gold) == normalize_simple(pred) and normalize_simple(gold) != "":
        return MathCheck(True, [gold], [pred], "string")
    timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    backend = backend or os.environ.get("VASE_MATH_GRADER", "subprocess")
    if backend == "thread":
        return _check_thread(gold, pred, timeout)
    if backend == "subprocess":
        return _check_subprocess(gold, pred, timeout)
    raise ValueError(f"unknown math grader backend {backend!r} (use 'subprocess' or 'thread')")
