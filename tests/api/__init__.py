# pytest puts tests/ on sys.path, so this package is imported as `api` and shadows the project's
# `api` package; its modules stay importable through it (`import api.app`) with this path entry.
import pathlib as _pathlib

__path__.append(str(_pathlib.Path(__file__).resolve().parents[2] / "api"))
