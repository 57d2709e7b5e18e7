# The math-verify worker: a long-lived subprocess owned by one grading process.
#
# Protocol: one JSON object per line on stdin: {"id": n, "gold": str, "pred": str};
# one JSON object per line on stdout: {"id": n, "ok": true, "correct": bool,
# "gold_parsed": [..], "pred_parsed": [..]} or {"id": n, "ok": false, "error": str}.
# It prints {"ready": true} once math_verify is imported. Math-Verify's own signal-based
# timeouts are disabled (parsing_timeout=None, timeout_seconds=None): the parent enforces a
# wall-clock limit by killing this process. It exits on EOF or when its parent changes.
import json
import os
import resource
import select
import sys


def _limit_memory() -> None:
    limit = int(os.environ.get("VASE_MATH_WORKER_MEMORY", str(4 << 30)))
    if limit > 0:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ValueError, OSError):
            pass


def main() -> None:
    parent = os.getppid()
    _limit_memory()
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from math_verify import parse, verify  # noqa: E402

    def parse_boxed(s: str):
        return parse("\\boxed{" + s + "}", parsing_timeout=None)

    def handle(req: dict) -> dict:
        gold = parse_boxed(req["gold"])
        if not gold:
            gold = parse(req["gold"], parsing_timeout=None)
        pred = parse_boxed(req["pred"])
        if not pred:
            pred = parse(req["pred"], parsing_timeout=None)
        correct = bool(gold) and bool(pred) and bool(verify(gold, pred, timeout_seconds=None))
        return {"ok": True, "correct": correct, "gold_parsed": [str(g) for g in gold],
                "pred_parsed": [str(p) for p in pred],
                "pred_expr": any(not isinstance(p, str) for p in pred)}

    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    stdin = sys.stdin
    while True:
        ready, _, _ = select.select([stdin], [], [], 5.0)
        if not ready:
            if os.getppid() != parent:
                return
            continue
        line = stdin.readline()
        if not line:
            return
        try:
            req = json.loads(line)
        except json.JSONDecodeError as exc:
            out.write(json.dumps({"id": None, "ok": False, "error": f"bad request: {exc}"}) + "\n")
            out.flush()
            continue
        try:
            resp = handle(req)
        except BaseException as exc:  # noqa: BLE001 - report everything, keep serving
            if isinstance(exc, KeyboardInterrupt):
                raise
            resp = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        resp["id"] = req.get("id")
        out.write(json.dumps(resp) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
