# Runs inside the code sandbox (stdlib only; copied into the sandbox's work dir and started as
# `python -I -B harness.py config.json` with the work dir as cwd).
#
# 1. applies resource limits (CPU, address space, processes, file size, open files, no core);
# 2. optionally installs an audit hook that refuses sockets, process creation, ctypes and any
#    file modification outside the work dir (defence in depth beside the OS-level layers);
# 3. runs the candidate program: "script" mode executes solution.py as __main__ (stdin/stdout
#    are the test's); "functional" mode calls Solution().<func_name>(*args) with one JSON
#    argument per stdin line and prints the JSON result after a sentinel line.
import json
import os
import resource
import sys

RESULT_SENTINEL = "\x00__VASE_RESULT__\x00"

PREAMBLE = (
    "from typing import *\n"
    "from functools import *\n"
    "from collections import *\n"
    "from itertools import *\n"
    "from heapq import *\n"
    "from bisect import *\n"
    "from string import *\n"
    "from operator import *\n"
    "from math import *\n"
    "import math, re, sys, string, heapq, bisect, itertools, functools, collections, random\n"
)


def _limit(which, value):
    if value is None:
        return
    try:
        soft, hard = resource.getrlimit(which)
        new_hard = value if hard == resource.RLIM_INFINITY or hard > value else hard
        resource.setrlimit(which, (min(value, new_hard), new_hard))
    except (ValueError, OSError):
        pass


def apply_limits(cfg):
    cpu = cfg.get("cpu_seconds")
    if cpu is not None:
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu) + 1))
        except (ValueError, OSError):
            _limit(resource.RLIMIT_CPU, int(cpu))
    _limit(resource.RLIMIT_AS, cfg.get("memory_bytes"))
    _limit(resource.RLIMIT_FSIZE, cfg.get("max_file_bytes"))
    _limit(resource.RLIMIT_NOFILE, cfg.get("max_open_files"))
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_NPROC, cfg.get("max_processes"))


def install_audit_hook(root):
    root = os.path.realpath(root)
    blocked_prefixes = (
        "socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
        "os.fork", "os.forkpty", "pty.", "ctypes.", "os.kill", "os.killpg", "signal.pthread_kill",
        "os.setuid", "os.setgid", "os.chroot", "winreg.", "webbrowser.",
        "urllib.Request", "http.client.", "ftplib.", "smtplib.", "poplib.", "imaplib.", "telnetlib.",
        "sys.remote_exec",
    )
    blocked_modules = {"ctypes", "_ctypes", "_posixsubprocess", "_socket", "socket", "ssl", "_ssl"}
    path_events = {
        "os.remove": (0,), "os.rename": (0, 1), "os.rmdir": (0,), "os.mkdir": (0,),
        "os.chmod": (0,), "os.chown": (0,), "os.link": (0, 1), "os.symlink": (0, 1),
        "os.truncate": (0,), "os.utime": (0,), "os.chflags": (0,), "os.lchflags": (0,),
        "os.mkfifo": (0,), "os.mknod": (0,), "shutil.rmtree": (0,), "shutil.move": (0, 1),
        "shutil.copyfile": (1,), "shutil.copymode": (1,), "shutil.copystat": (1,),
        "os.setxattr": (0,), "os.removexattr": (0,),
    }
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    allowed_devices = {"/dev/null", "/dev/stdout", "/dev/stderr"}

    def inside(path):
        if isinstance(path, int):
            return True
        try:
            p = os.fsdecode(path)
        except TypeError:
            return False
        if p in allowed_devices:
            return True
        real = os.path.realpath(p)
        return real == root or real.startswith(root + os.sep)

    def hook(event, args):
        if event == "import":
            if args and str(args[0]).split(".")[0] in blocked_modules:
                raise PermissionError(f"sandbox: import of {args[0]!r} is not allowed")
            return
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = False
            if isinstance(mode, str) and any(c in mode for c in "wax+"):
                writing = True
            if isinstance(flags, int) and flags & write_flags:
                writing = True
            if writing and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the work dir is not allowed")
            return
        if event in path_events:
            for i in path_events[event]:
                if i < len(args) and args[i] is not None and not inside(args[i]):
                    raise PermissionError(f"sandbox: {event} on {args[i]!r} is not allowed")
            return
        if event.startswith(blocked_prefixes):
            raise PermissionError(f"sandbox: {event} is not allowed")

    sys.addaudithook(hook)


def _to_jsonable(x):
    if isinstance(x, tuple):
        return [_to_jsonable(v) for v in x]
    if isinstance(x, list):
        return [_to_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (set, frozenset)):
        return sorted((_to_jsonable(v) for v in x), key=repr)
    return x


def main():
    with open(sys.argv[1], encoding="utf-8") as fh:
        cfg = json.load(fh)
    with open(cfg.get("solution", "solution.py"), encoding="utf-8") as fh:
        source = fh.read()
    mode = cfg.get("mode", "script")
    preamble = PREAMBLE if cfg.get("preamble", True) else ""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), int(cfg.get("recursion_limit", 10000))))
    # Compile before the limits so a syntax error is reported plainly.
    try:
        code = compile(preamble + source, "solution.py", "exec")
    except SyntaxError as exc:
        sys.stderr.write(f"SyntaxError: {exc}\n")
        sys.stderr.flush()
        os._exit(1)
    apply_limits(cfg)
    if cfg.get("audit", True):
        install_audit_hook(os.getcwd())
    ns = {"__name__": "__main__" if mode == "script" else "__solution__", "__builtins__": __builtins__}
    if mode == "script":
        exec(code, ns)
        return
    # functional
    func_name = cfg["func_name"]
    data = sys.stdin.read()
    args = [json.loads(line) for line in data.split("\n") if line.strip()]
    exec(code, ns)
    target = None
    cls = ns.get("Solution")
    if cls is not None:
        target = getattr(cls(), func_name, None)
    if target is None:
        target = ns.get(func_name)
    if target is None:
        sys.stderr.write(f"function {func_name!r} not found\n")
        sys.stderr.flush()
        os._exit(3)
    result = target(*args)
    out = json.dumps(_to_jsonable(result))
    sys.stdout.write("\n" + RESULT_SENTINEL + "\n" + out + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
