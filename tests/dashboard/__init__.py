"""Tests of the dashboard (``dashboard/``) and of the paper's reference figures (``vase.reference``).

pytest imports this folder as the package ``dashboard`` (``tests/`` itself is no package), which
would hide the real ``dashboard`` package in the test process. The real package's folder is
therefore appended to this package's path: ``dashboard.data``, ``dashboard.ui`` and the pages'
``from dashboard import data, ui`` find the real modules, in tests as in production.
"""

from pathlib import Path

__path__.append(str(Path(__file__).resolve().parents[2] / "dashboard"))  # noqa: F821
