"""The shape of the code (docs/architecture.md): the import rules hold (import-linter contracts in
pyproject.toml), no module grows past 600 lines, and the facts with one home are not written
again elsewhere."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vase", "api", "worker", "dashboard")
MAX_LINES = 600


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_import_contracts():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_module_is_too_long():
    long = {str(p.relative_to(ROOT)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by concern (at most {MAX_LINES} lines each): {long}"


#: A fact's words and its one home: a literal list of two or more of them anywhere else is a copy.
FACTS = {
    "job statuses": ({"queued", "running", "succeeded", "failed", "cancelled"}, "vase/store/models.py"),
    "trace levels": ({"off", "summary", "full"}, "vase/traces/format.py"),
}


def _string_collections(tree: ast.AST):
    for node in ast.walk(tree):
        items = None
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Tuple):  # Literal["a", "b"]
            items = node.slice.elts
        if items and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in items):
            yield node.lineno, {e.value for e in items}


@pytest.mark.parametrize("fact", sorted(FACTS))
def test_facts_have_one_home(fact):
    words, home = FACTS[fact]
    copies = []
    for path in _sources():
        if path == ROOT / home:
            continue
        for line, values in _string_collections(ast.parse(path.read_text())):
            if len(values) >= 2 and values <= words:
                copies.append(f"{path.relative_to(ROOT)}:{line} {sorted(values)}")
    assert not copies, f"the {fact} are defined in {home}; import them instead of writing them again: {copies}"


def _library_modules() -> list[str]:
    """vase's modules and packages, as the docs name them (``config.py``, ``store/``)."""
    vase = ROOT / "vase"
    files = [p.name for p in vase.glob("*.py") if p.name != "__init__.py"]
    packages = [f"{p.name}/" for p in vase.iterdir() if (p / "__init__.py").exists()]
    return sorted(files + packages)


def test_docs_match_the_tree():
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") : readme.index("\n## ", readme.index("## Layout") + 1)]
    for name in _library_modules():
        assert f"`vase/{name}`" in architecture, f"docs/architecture.md does not place vase/{name}"
        assert f"`{name}`" in layout, f"the README's Layout section does not mention vase/{name}"
    for folder in ("api/", "worker/", "dashboard/", "tests/", "benchmarks/"):
        assert f"`{folder}`" in layout
    for name in ("data/", "charts/", "views/"):
        assert (ROOT / "dashboard" / name).is_dir() and f"`{name}`" in layout
