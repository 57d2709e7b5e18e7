# pytest puts tests/ on sys.path, so this package is imported as `worker` and shadows the project's
# `worker` package; its modules stay importable through it (`import worker.app`) with this path entry.
import pathlib as _pathlib

__path__.append(str(_pathlib.Path(__file__).resolve().parents[2] / "worker"))
